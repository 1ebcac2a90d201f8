"""ezyVet PIMS connector (built-in plugin): ``connector = "ezyvet"`` in ``[[practices.pims]]``."""

from __future__ import annotations

from connectors.ezyvet.connector import EzyVetConfig, EzyVetConnector
from hub.hookspecs import hookimpl

__all__ = ["EzyVetConfig", "EzyVetConnector"]


@hookimpl
def vethub_pims_connectors() -> list[type]:
    return [EzyVetConnector]
