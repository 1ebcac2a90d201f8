"""Account history rows: every change of an account's company, access or modalities."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.accounts.models import AccountHistory
from hub.db.models import Account
from hub.db.types import utcnow


def account_state(account: Account) -> dict[str, Any]:
    return {
        "company_id": account.company_id,
        "practice_id": account.practice_id,
        "approved_for_access": account.approved_for_access,
        "modalities": list(account.modalities or []),
        "auto_submit": account.auto_submit,
        "status": account.status,
    }


async def record(
    session: AsyncSession, account: Account, change: str, actor: str, *,
    before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
    switch_request_id: int | None = None, at=None,
) -> AccountHistory:
    row = AccountHistory(
        account_id=account.id, practice_id=account.practice_id, company_id=account.company_id,
        at=at or utcnow(), change=change, actor=actor, before=before, after=after,
        switch_request_id=switch_request_id,
    )
    session.add(row)
    await session.flush()
    return row


ACCOUNT_CHANGED_JOB = "accounts.account_changed"


async def announce(session: AsyncSession, hub, history_row: AccountHistory) -> None:
    """Fire ``vethub_account_changed`` after the change commits: it is written as a job in the
    same transaction (so listeners may open their own transactions, and a crash loses nothing)."""
    await hub.jobs.enqueue(session, ACCOUNT_CHANGED_JOB, {"history_id": history_row.id},
                           idempotency_key=f"{ACCOUNT_CHANGED_JOB}:{history_row.id}")


async def account_changed_job(hub, job) -> None:
    async with hub.sessionmaker() as session:
        row = await session.get(AccountHistory, int(job.payload["history_id"]))
        account = await session.get(Account, row.account_id) if row is not None else None
    if row is None or account is None:
        return
    await hub.fire("vethub_account_changed", hub=hub, account=account, before=row.before, after=row.after)
