"""Templates: per-practice overrides, plugin folders (vethub_template_dirs), core defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hub.hookspecs import hookimpl
from hub.messaging.outbound import MessagingError, queue_email


async def test_lookup_order_and_escaping(world_factory, tmp_path: Path) -> None:
    plugin_dir = tmp_path / "plugin-templates"
    plugin_dir.mkdir()
    (plugin_dir / "hello.subject.j2").write_text("Hello {{ name }}")
    (plugin_dir / "hello.txt.j2").write_text("Hi {{ name }}, from {{ practice.name }}.")
    (plugin_dir / "hello.html.j2").write_text("<p>Hi {{ name }}</p>")
    (plugin_dir / "message.subject.j2").write_text("plugin: {{ subject }}")

    class Templates:
        @hookimpl
        def vethub_template_dirs(self):
            return [plugin_dir]

    world = await world_factory()
    hub = world.hub
    hub.pm.register(Templates(), name="templates")
    override = Path(hub.data_dir) / "templates" / "parkside"
    override.mkdir(parents=True)
    (override / "hello.subject.j2").write_text("Parkside says hello to {{ name }}")

    async with hub.transaction() as s:
        at_parkside = await queue_email(s, hub, to="a@example.org", template="hello", practice_id=world.practice_id,
                                        context={"name": "<Ann & Bob>"})
        elsewhere = await queue_email(s, hub, to="b@example.org", template="hello",
                                      practice_id=world.other_practice_id, context={"name": "Cy"})
        core = await queue_email(s, hub, to="c@example.org", template="message",
                                 context={"subject": "S", "body": "B"})
    assert at_parkside.subject == "Parkside says hello to <Ann & Bob>"  # practice override first
    assert at_parkside.body_text == "Hi <Ann & Bob>, from Parkside Vets."  # text is not escaped
    assert at_parkside.body_html == "<p>Hi &lt;Ann &amp; Bob&gt;</p>"  # HTML is
    assert elsewhere.subject == "Hello Cy"  # the plugin's folder
    assert core.subject == "plugin: S"  # a plugin folder comes before the core's own
    assert core.body_text.startswith("B")


async def test_missing_template_or_variable_is_refused(world) -> None:
    hub = world.hub
    async with hub.transaction() as s:
        with pytest.raises(MessagingError, match="not found"):
            await queue_email(s, hub, to="a@example.org", template="nope", context={})
        with pytest.raises(MessagingError, match="undefined"):
            await queue_email(s, hub, to="a@example.org", template="message", context={"subject": "only"})


async def test_an_edited_template_is_used_and_globals_still_resolve(world) -> None:
    """Templates compile once and render from a flattened copy of their globals: an edit on
    disk still shows in the next message, and Jinja's globals (range...) still work."""
    hub = world.hub
    override = Path(hub.data_dir) / "templates" / "parkside"
    override.mkdir(parents=True)
    subject = override / "hi.subject.j2"
    subject.write_text("First {{ name }}")
    (override / "hi.txt.j2").write_text("{% for i in range(3) %}{{ i }}{% endfor %} {{ name }}")
    async with hub.transaction() as s:
        first = await queue_email(s, hub, to="a@example.org", template="hi",
                                  practice_id=world.practice_id, context={"name": "Ann"})
    subject.write_text("Second {{ name }}")
    stat = subject.stat()
    os.utime(subject, (stat.st_atime, stat.st_mtime + 5))  # a later mtime whatever the clock's grain
    async with hub.transaction() as s:
        second = await queue_email(s, hub, to="a@example.org", template="hi",
                                   practice_id=world.practice_id, context={"name": "Bo"})
    assert (first.subject, first.body_text) == ("First Ann", "012 Ann")
    assert (second.subject, second.body_text) == ("Second Bo", "012 Bo")
