"""File-export PIMS connector (built-in plugin): ``connector = "file_export"``."""

from __future__ import annotations

from connectors.file_export.connector import FileExportConfig, FileExportConnector
from hub.hookspecs import hookimpl

__all__ = ["FileExportConfig", "FileExportConnector"]


@hookimpl
def vethub_pims_connectors() -> list[type]:
    return [FileExportConnector]
