"""Every `vethub` command and option explains itself, with an example (`vethub CMD --help`)."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from hub import cli


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        yield path, command
        if isinstance(command, click.Group):
            yield from _commands(command, path)


def _all() -> list[tuple[tuple[str, ...], click.Command]]:
    cli._add_plugin_commands(cli.cli)
    return list(_commands(cli.cli))


@pytest.mark.parametrize(("path", "command"), _all(), ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_command_has_help_with_an_example(path: tuple[str, ...], command: click.Command) -> None:
    text = (command.help or "").strip()
    assert len(text) >= 20, f"vethub {' '.join(path)} has no help text"
    if not isinstance(command, click.Group):
        assert "Example" in text and "vethub " in text, f"vethub {' '.join(path)}: help has no example"
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert (param.help or "").strip(), f"vethub {' '.join(path)} {param.opts[0]} has no help"


def test_help_renders_for_every_command() -> None:
    runner = CliRunner()
    for path, _command in _all():
        result = runner.invoke(cli.cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage: " in result.output
