"""``vethub backup``, ``vethub restore``, ``vethub verify`` (see :mod:`hub.ops.backup`)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from hub.cli_support import config_option, load_or_exit, with_hub


@click.command("backup")
@config_option
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--no-images", is_flag=True, help="Only the manifest of the image store, not its files.")
def backup_cmd(config_path: str | None, dest: Path, no_images: bool) -> None:
    """Back up the database and the image store to DEST (a new or empty folder), online.

    Example: vethub backup /srv/backups/2026-12-07
    """
    from hub.ops.backup import BackupError, backup, image_root_of

    config = load_or_exit(config_path)
    try:
        result = asyncio.run(backup(config.database.url, image_root_of(config), dest, images=not no_images))
    except BackupError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(1)
    click.echo(f"backed up the {result.database} database ({result.rows} instance row(s)) and "
               f"{result.files} file(s), {result.bytes} bytes, to {dest}")
    if result.missing:
        click.echo(f"warning: {len(result.missing)} row(s) had no file (vethub dicom reconcile): "
                   f"{', '.join(result.missing[:10])}", err=True)


@click.command("restore")
@config_option
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
def restore_cmd(config_path: str | None, source: Path) -> None:
    """Restore a backup into the (empty) database and image store the config names.

    Example: vethub restore /srv/backups/2026-12-07 --config new-host.toml
    """
    from hub.ops.backup import BackupError, restore

    config = load_or_exit(config_path)
    try:
        meta = asyncio.run(restore(source, config))
    except BackupError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(1)
    click.echo(f"restored the backup of {meta['created_at']}: {meta['rows']} instance row(s), "
               f"{meta['files']} file(s); now run: vethub verify")


@click.command("verify")
@config_option
@click.option("--manifest", type=click.Path(path_type=Path), default=None,
              help="A backup's manifest.jsonl to compare checksums with (default: the one a restore left).")
def verify_cmd(config_path: str | None, manifest: Path | None) -> None:
    """Check every instance row against its file; exit 1 listing every problem.

    Example: vethub verify --config vethub.toml
    """
    from hub.ops.backup import verify

    async def _go(hub: Any) -> tuple[int, list[str]]:
        return await verify(hub, manifest or Path(hub.data_dir) / "restored-manifest.jsonl")

    rows, problems = with_hub(config_path, _go)
    for problem in problems:
        click.echo(problem)
    click.echo(f"{rows} row(s) checked, {len(problems)} problem(s)")
    if problems:
        sys.exit(1)


def commands() -> list[click.Command]:
    return [backup_cmd, restore_cmd, verify_cmd]
