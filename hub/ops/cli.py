"""Operator commands: ``vethub dicom reconcile``, ``vethub backup``, ``vethub restore``,
``vethub verify`` (registered by the operations plugin)."""

from __future__ import annotations

import sys
from typing import Any

import click

from hub.cli_support import config_option, with_hub


@click.group("dicom")
def dicom_group() -> None:
    """The DICOM image store: reconcile files and rows."""


@dicom_group.command("reconcile")
@config_option
@click.option("--dry-run", is_flag=True, help="List what is found; move nothing, record nothing.")
@click.option("--min-age", type=float, default=600.0, show_default=True,
              help="Seconds a file without a row must be old to be taken for an orphan.")
def reconcile_cmd(config_path: str | None, dry_run: bool, min_age: float) -> None:
    """Find files without rows (quarantined, never deleted) and rows without files (listed).

    Example: vethub dicom reconcile --dry-run
    """
    from hub.ops.reconcile import QUARANTINE, reconcile

    async def _go(hub: Any) -> Any:
        return await reconcile(hub, dry_run=dry_run, min_age=min_age)

    report = with_hub(config_path, _go)
    if report is None:
        click.echo("no image store configured ([dicom] section) or it does not exist yet")
        return
    click.echo(f"{report.root}: {report.files} file(s), {report.rows} row(s)")
    for rel in report.orphans:
        click.echo(f"no row:  {rel}")
    for iid, rel in report.missing:
        click.echo(f"no file: instance {iid} {rel}")
    if dry_run:
        click.echo(f"dry run: {len(report.orphans)} file(s) would be moved to {report.root / QUARANTINE}")
    else:
        click.echo(f"quarantined {len(report.quarantined)} file(s) under {report.root / QUARANTINE}; "
                   f"{len(report.missing)} row(s) without a file")
    if report.missing:
        sys.exit(1)


def commands() -> list[click.Command]:
    from hub.ops import backup_cli

    return [dicom_group, retention_cmd, *backup_cli.commands()]


@click.command("retention")
@config_option
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
def retention_cmd(config_path: str | None, dry_run: bool) -> None:
    """Delete the image files of delivered cases past each practice's retention (now).

    Example: vethub retention --dry-run
    """
    from hub.ops.retention import apply_retention

    async def _go(hub: Any) -> Any:
        return await apply_retention(hub, dry_run=dry_run)

    report = with_hub(config_path, _go)
    verb = "would delete" if dry_run else "deleted"
    for slug, count in sorted(report.by_practice.items()):
        click.echo(f"{slug}: {verb} {count} file(s)")
    click.echo(f"{verb} {report.files} file(s), {report.bytes} bytes")
