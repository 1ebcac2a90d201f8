"""``GET /api/practices/{id}/sync``: each PIMS connector's last run, counts, duration, rejects."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import func, select

from hub.pims.models import RunStatus, SyncCheckpoint, SyncReject, SyncRun
from hub.pims.sync import connector_entries
from hub.web.api_core import IdPath, scoped_practice
from hub.web.auth import get_principal
from hub.web.contract import ApiRoutes, ResponseModel
from hub.web.keys import HUB_KEY

routes = ApiRoutes(tag="pims")
REJECTS_SHOWN = 100


class SyncRunOut(ResponseModel):
    """One sync run of a practice's connector, as the sync status shows it."""
    id: int
    status: str
    full: bool
    trigger: str | None
    started_at: datetime
    finished_at: datetime | None
    duration_seconds: float | None
    batches: int | None
    counts: dict[str, Any] | None
    rejected: int | None
    error: str | None


class SyncRejectOut(ResponseModel):
    """One record the sync refused, with what the PIMS sent and why."""
    kind: str
    external_id: str | None
    reason: str
    source: str | None
    raw: Any
    at: datetime


class ConnectorSync(ResponseModel):
    """The sync state of one connector of a practice: last runs, checkpoint and recent refusals."""
    connector: str
    last_run: SyncRunOut | None
    last_success: SyncRunOut | None
    checkpoint_at: datetime | None
    rejects: list[SyncRejectOut]
    rejects_total: int


class PracticeSync(ResponseModel):
    """Response body of a practice's sync status, one item per connector."""
    practice_id: int
    items: list[ConnectorSync]


def run_json(run: SyncRun | None) -> dict[str, Any] | None:
    if run is None:
        return None
    seconds = (run.finished_at - run.started_at).total_seconds() if run.finished_at else None
    return {"id": run.id, "status": run.status, "full": run.full, "trigger": run.trigger,
            "started_at": run.started_at.isoformat(),
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            "duration_seconds": seconds, "batches": run.batches, "counts": run.counts,
            "rejected": run.rejected, "error": run.error}


@routes.get("/api/practices/{id}/sync", summary="Each PIMS connector's last run, counts and rejects",
            path_params=IdPath, response=PracticeSync, errors=(404,))
async def practice_sync(request: web.Request, path: IdPath) -> dict[str, Any]:
    hub, principal = request.app[HUB_KEY], get_principal(request)
    practice_id = path.id
    async with hub.read_session() as session:
        practice = await scoped_practice(session, principal, practice_id)
        items = await sync_status(session, hub, practice)
    return {"practice_id": practice_id, "items": items}


async def sync_status(session: Any, hub: Any, practice: Any) -> list[dict[str, Any]]:
    """Each connector's last run, last success, checkpoint and rejects (the API and the console)."""
    practice_id = practice.id
    names = [e.name for e in connector_entries(hub.config.practices, practice.slug)]
    names += [n for n in (await session.execute(
        select(SyncRun.connector).where(SyncRun.practice_id == practice_id).distinct())
    ).scalars() if n not in names]
    items = []
    for name in names:
        run = (await session.execute(
            select(SyncRun).where(SyncRun.practice_id == practice_id, SyncRun.connector == name)
            .order_by(SyncRun.id.desc()).limit(1))).scalar_one_or_none()
        last_ok = (await session.execute(
            select(SyncRun).where(SyncRun.practice_id == practice_id, SyncRun.connector == name,
                                  SyncRun.status == RunStatus.SUCCEEDED)
            .order_by(SyncRun.id.desc()).limit(1))).scalar_one_or_none()
        checkpoint = (await session.execute(
            select(SyncCheckpoint.updated_at).where(SyncCheckpoint.practice_id == practice_id,
                                                    SyncCheckpoint.connector == name))
        ).scalar_one_or_none()
        rejects = []
        if run is not None:
            rows = (await session.execute(
                select(SyncReject).where(SyncReject.run_id == run.id)
                .order_by(SyncReject.id).limit(REJECTS_SHOWN))).scalars()
            rejects = [{"kind": r.kind, "external_id": r.external_id, "reason": r.reason,
                        "source": r.source, "raw": r.raw, "at": r.created_at.isoformat()}
                       for r in rows]
        total = (await session.execute(
            select(func.count()).select_from(SyncReject)
            .where(SyncReject.practice_id == practice_id, SyncReject.connector == name))
        ).scalar_one()
        items.append({"connector": name, "last_run": run_json(run),
                      "last_success": run_json(last_ok),
                      "checkpoint_at": checkpoint.isoformat() if checkpoint else None,
                      "rejects": rejects, "rejects_total": total})
    return items
