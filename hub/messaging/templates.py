"""Message templates: Jinja2, looked up per practice, then in plugins' folders, then the core's.

A template named ``reminder`` is a set of files: ``reminder.subject.j2``, ``reminder.txt.j2``,
``reminder.html.j2`` (optional) for email; ``reminder.sms.j2`` for SMS;
``reminder.front.html.j2`` and ``reminder.back.html.j2`` for postcards. Search order:

1. ``<messaging.templates_dir>/<practice slug>/`` — the practice's own overrides;
2. every folder returned by the ``vethub_template_dirs`` hook (accounts, reminders...);
3. ``hub/messaging/templates/``.

HTML files are autoescaped; undefined variables are errors (a message with a hole in it is
worse than no message). Environments are cached per practice, so templates compile once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from hub.messaging.config import messaging_config

if TYPE_CHECKING:
    from hub.core import Hub

CORE_DIR = Path(__file__).parent / "templates"


class TemplateError(ValueError):
    """A template is missing a part the channel needs, or failed to render."""


@dataclass(frozen=True)
class Rendered:
    """A message rendered for its channel: the parts that channel uses are filled, the rest None."""
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    postcard_front_html: str | None = None
    postcard_back_html: str | None = None


def _autoescape(name: str | None) -> bool:
    return bool(name and name.endswith(".html.j2"))


def _flat(template: jinja2.Template) -> jinja2.Template:
    """The template with its globals as a plain dict.

    Jinja keeps them as a ChainMap over the environment's, which every render walks twice to
    build its context: for a short template (an SMS, a subject line) most of the render. The
    environments here never change their globals once built, so a copy is the same values; a
    template reloaded after an edit is a new object and is flattened again.
    """
    if type(template.globals) is not dict:
        template.globals = dict(template.globals)
    return template


class TemplateRenderer:
    """Renders message templates from the practice's folder, then plugins', then the hub's."""
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._envs: dict[str | None, jinja2.Environment] = {}
        self._plugin_dirs: list[Path] | None = None

    def plugin_dirs(self) -> list[Path]:
        if self._plugin_dirs is None:
            dirs: list[Path] = []
            # pluggy calls the latest-registered plugin first; search in registration order
            for result in reversed(self.hub.pm.hook.vethub_template_dirs()):
                dirs.extend(Path(d) for d in result or ())
            self._plugin_dirs = dirs
        return self._plugin_dirs

    def practice_dir(self, practice_slug: str) -> Path:
        base = Path(messaging_config(self.hub).templates_dir)
        if not base.is_absolute():
            base = Path(self.hub.data_dir) / base
        return base / practice_slug

    def env(self, practice_slug: str | None) -> jinja2.Environment:
        env = self._envs.get(practice_slug)
        if env is None:
            search = [str(d) for d in self.plugin_dirs()] + [str(CORE_DIR)]
            if practice_slug:
                search.insert(0, str(self.practice_dir(practice_slug)))
            env = jinja2.Environment(
                loader=jinja2.FileSystemLoader(search),
                autoescape=_autoescape,
                undefined=jinja2.StrictUndefined,
                keep_trailing_newline=False,
                auto_reload=True,
            )
            self._envs[practice_slug] = env
        return env

    def _render(self, env: jinja2.Environment, name: str, context: dict[str, Any], *,
                required: bool) -> str | None:
        try:
            template = _flat(env.get_template(name))
        except jinja2.TemplateNotFound:
            if required:
                raise TemplateError(f"template file {name!r} not found") from None
            return None
        try:
            return template.render(context)
        except jinja2.TemplateError as err:
            raise TemplateError(f"{name}: {err}") from err

    def exists(self, template: str, channel: str, practice_slug: str | None = None) -> bool:
        names = {"email": f"{template}.txt.j2", "sms": f"{template}.sms.j2",
                 "postcard": f"{template}.front.html.j2"}
        try:
            self.env(practice_slug).get_template(names[channel])
        except (jinja2.TemplateNotFound, KeyError):
            return False
        return True

    def render(self, template: str, channel: str, context: dict[str, Any],
               practice_slug: str | None = None) -> Rendered:
        env = self.env(practice_slug)
        if channel == "email":
            subject = self._render(env, f"{template}.subject.j2", context, required=True)
            return Rendered(
                subject=" ".join((subject or "").split()),
                text=self._render(env, f"{template}.txt.j2", context, required=True),
                html=self._render(env, f"{template}.html.j2", context, required=False),
            )
        if channel == "sms":
            body = self._render(env, f"{template}.sms.j2", context, required=True)
            return Rendered(text=(body or "").strip())
        if channel == "postcard":
            return Rendered(
                postcard_front_html=self._render(env, f"{template}.front.html.j2", context, required=True),
                postcard_back_html=self._render(env, f"{template}.back.html.j2", context, required=True),
            )
        raise TemplateError(f"unknown channel {channel!r}")
