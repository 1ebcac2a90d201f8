"""The loyalty program: enrolment, an append-only ledger of coins, adjustments with a reason and
reward fulfilment. Off unless the practice turns it on (``[clients.practices.<slug>]
loyalty = true``).

The balance is the sum of the ledger. ``loyalty_accounts.balance`` holds that sum, moved in the
same transaction as each ledger row by one conditional UPDATE (``balance = balance + :coins
WHERE balance + :coins >= 0``): concurrent redemptions queue on the row and each sees the
balance the previous one left, so the balance never goes negative on either database.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub import audit
from hub.clients.config import clients_config
from hub.clients.models import LoyaltyAccount, LoyaltyEntry
from hub.db.models import Practice
from hub.errors import Conflict, Forbidden, Invalid, NotFound
from hub.pims.models import Client
from hub.pims.records import ClientStatus


async def require_enabled(session: AsyncSession, hub: Any, client: Client) -> None:
    practice = await session.get(Practice, client.practice_id)
    if practice is None or not clients_config(hub).practice(practice.slug).loyalty:
        raise Forbidden("the loyalty program is not enabled for this practice",
                        code="loyalty_disabled")


async def account_of(session: AsyncSession, client: Client) -> LoyaltyAccount:
    account = (await session.execute(select(LoyaltyAccount).where(
        LoyaltyAccount.client_id == client.id))).scalar_one_or_none()
    if account is None:
        raise NotFound("the client is not enrolled in the loyalty program",
                       code="not_enrolled")
    return account


async def ledger_balance(session: AsyncSession, client_id: int) -> int:
    return int((await session.execute(select(func.coalesce(func.sum(LoyaltyEntry.coins), 0))
                                      .where(LoyaltyEntry.client_id == client_id))).scalar_one())


async def enroll(session: AsyncSession, hub: Any, client: Client, *, actor: str) -> LoyaltyAccount:
    await require_enabled(session, hub, client)
    if client.status != ClientStatus.ACTIVE:
        raise Conflict("an inactive client cannot be enrolled", code="client_inactive")
    existing = (await session.execute(select(LoyaltyAccount.id).where(
        LoyaltyAccount.client_id == client.id))).first()
    if existing is not None:
        raise Conflict("the client is already enrolled", code="already_enrolled")
    now = hub.clock.now()
    account = LoyaltyAccount(client_id=client.id, practice_id=client.practice_id, balance=0,
                             enrolled_by=actor, enrolled_at=now)
    session.add(account)
    await session.flush()
    session.add(LoyaltyEntry(account_id=account.id, client_id=client.id,
                             practice_id=client.practice_id, kind="enroll", coins=0,
                             reason="enrolled", actor=actor, at=now))
    await audit.record(session, actor, "loyalty.enroll", "client", client.id,
                       practice_id=client.practice_id)
    await session.flush()
    return account


async def _move(session: AsyncSession, hub: Any, client: Client, coins: int, *, kind: str,
                reason: str, actor: str, reward: str | None = None) -> LoyaltyEntry:
    await require_enabled(session, hub, client)
    account = await account_of(session, client)
    moved = (await session.execute(
        update(LoyaltyAccount).where(LoyaltyAccount.id == account.id,
                                     LoyaltyAccount.balance + coins >= 0)
        .values(balance=LoyaltyAccount.balance + coins).returning(LoyaltyAccount.balance)
    )).first()
    if moved is None:
        raise Conflict("not enough coins", code="insufficient_coins", field="coins")
    entry = LoyaltyEntry(account_id=account.id, client_id=client.id,
                         practice_id=client.practice_id, kind=kind, coins=coins, reason=reason,
                         reward=reward, actor=actor, at=hub.clock.now(),
                         detail={"balance_after": moved[0]})
    session.add(entry)
    await session.flush()
    await audit.record(session, actor, f"loyalty.{kind}", "client", client.id,
                       after={"coins": coins, "reason": reason, "reward": reward,
                              "balance": moved[0]}, practice_id=client.practice_id)
    return entry


async def adjust(session: AsyncSession, hub: Any, client: Client, coins: int, *, reason: str,
                 actor: str) -> LoyaltyEntry:
    """Add (or, negative, take) coins, with the reason staff gave."""
    if coins == 0:
        raise Invalid("an adjustment moves at least one coin", field="coins")
    if not reason.strip():
        raise Invalid("an adjustment needs a reason", field="reason")
    return await _move(session, hub, client, coins, kind="adjust", reason=reason.strip(),
                       actor=actor)


async def redeem(session: AsyncSession, hub: Any, client: Client, reward: str, *,
                 actor: str) -> LoyaltyEntry:
    """Fulfil a reward from the configured catalogue, only with enough coins."""
    price = clients_config(hub).rewards.get(reward)
    if price is None:
        raise Invalid(f"unknown reward {reward!r}; the practice offers "
                      f"{sorted(clients_config(hub).rewards)}", field="reward")
    return await _move(session, hub, client, -price, kind="redeem", reason=f"reward: {reward}",
                       actor=actor, reward=reward)


async def entries(session: AsyncSession, client_id: int, limit: int = 100) -> list[LoyaltyEntry]:
    return list((await session.execute(
        select(LoyaltyEntry).where(LoyaltyEntry.client_id == client_id)
        .order_by(LoyaltyEntry.at.desc(), LoyaltyEntry.id.desc()).limit(limit))).scalars())
