"""Managing accounts: tenant-scoped listing with a filter on every column, access changes
(suspension), and gathering the onboarding report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, bindparam, false, select, type_coerce
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from hub import audit
from hub.accounts import history
from hub.accounts.errors import AccountsError
from hub.accounts.models import AccountRequest, db_id
from hub.accounts.onboarding import refresh_stages
from hub.accounts.report import STAGES, OnboardingReport, OnboardingRow
from hub.db.models import Account, AccountStatus, Company, Practice
from hub.db.transactions import row_dicts
from hub.db.types import IsoformatTime, id_value

if TYPE_CHECKING:
    from hub.auth import Principal
    from hub.core import Hub


class ManageError(AccountsError):
    """An operator's account-management action was refused (bad filter, account or change)."""
    pass


# --- listing -----------------------------------------------------------------------------------------

#: Filterable columns: name -> (column, kind). Dates also take ``<name>_from`` / ``<name>_to``.
FILTERS: dict[str, tuple[Any, str]] = {
    "id": (Account.id, "int"),
    "practice_id": (Account.practice_id, "int"),
    "practice": (Practice.name, "text"),
    "practice_slug": (Practice.slug, "exact"),
    "company_id": (Account.company_id, "int"),
    "company": (Company.slug, "exact"),
    "company_name": (Company.name, "text"),
    "approved_for_access": (Account.approved_for_access, "bool"),
    "modalities": (Account.modalities, "modality"),
    "auto_submit": (Account.auto_submit, "bool"),
    "status": (Account.status, "exact"),
    "managed_by_config": (Account.managed_by_config, "bool"),
    "created_at": (Account.created_at, "date"),
    "updated_at": (Account.updated_at, "date"),
}
COLUMNS = (
    "id", "practice_id", "practice", "practice_slug", "company_id", "company", "company_name",
    "approved_for_access", "modalities", "auto_submit", "status", "managed_by_config",
    "created_at", "updated_at",
)
CONTROL_PARAMS = frozenset({"format", "limit", "offset", "order"})


# Only the caller's tenant: a company admin sees its company's accounts, practice staff their
# practice's, an operator all, anyone else none. Conditions with the caller's ids as parameters
# (Principal.tenant_params), so a statement built once serves every caller of a role.
_SCOPES: dict[str, Any] = {"company_admin": Account.company_id == bindparam("scope_company"),
                           "practice_staff": Account.practice_id == bindparam("scope_practice"),
                           "operator": None}


def _scope_condition(role: str) -> Any:
    return _SCOPES.get(role, false())


def scope(stmt: Select, principal: Principal) -> Select:
    """``stmt`` narrowed to the caller's tenant, the caller's ids bound in."""
    condition = _scope_condition(principal.role)
    return stmt if condition is None else stmt.where(condition).params(principal.tenant_params())


def _bool(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ManageError(400, "invalid_filter", f"{name} must be true or false", name)


def _date(value: str, name: str) -> datetime:
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ManageError(400, "invalid_filter", f"{name} must be an ISO date or datetime", name) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Filtered:
    """A request's filters, parsed: their shape (which columns, how compared), the values for
    the shape's parameters, and the modalities to match (checked in Python)."""

    shape: tuple[tuple[str, str], ...]
    values: dict[str, Any]
    modalities: list[str]

    def statement(self, stmt: Select) -> Select:
        """``stmt`` with the filters applied as parameters (values in :attr:`values`)."""
        for i, (base, how) in enumerate(self.shape):
            column, p = FILTERS[base][0], f"f{i}"
            if how == "eq":
                stmt = stmt.where(column == bindparam(p))
            elif how in ("true", "false"):
                stmt = stmt.where(column.is_(how == "true"))
            elif how == "like":
                stmt = stmt.where(column.ilike(bindparam(p)))
            elif how == "from":
                stmt = stmt.where(column >= bindparam(p))
            elif how == "before":
                stmt = stmt.where(column < bindparam(p))
            else:  # "day": from the start to the next day's
                stmt = stmt.where(column >= bindparam(p), column < bindparam(p + "_end"))
        return stmt


def parse_filters(params: Mapping[str, str]) -> Filtered:
    """Every filter in ``params``; an unknown parameter is refused (a typo must not silently
    return everything). Modalities match accounts covering every modality given."""
    shape: list[tuple[str, str]] = []
    values: dict[str, Any] = {}
    modalities: list[str] = []
    for name, value in params.items():
        if name in CONTROL_PARAMS:
            continue
        base, bound = name, None
        if name.endswith(("_from", "_to")):
            base, _, bound = name.rpartition("_")
        if base not in FILTERS or (bound and FILTERS[base][1] != "date"):
            raise ManageError(400, "unknown_filter", f"cannot filter on {name!r}; columns: {', '.join(COLUMNS)}", name)
        kind, p = FILTERS[base][1], f"f{len(shape)}"
        if kind == "modality":
            modalities += [m.strip().upper() for m in value.split(",") if m.strip()]
            continue
        if kind == "int":
            wanted = id_value(value)
            if wanted is None:
                raise ManageError(400, "invalid_filter", f"{name} must be an integer id", name)
            shape.append((base, "eq"))
            values[p] = wanted
        elif kind == "bool":
            shape.append((base, "true" if _bool(value, name) else "false"))
        elif kind == "text":
            shape.append((base, "like"))
            values[p] = f"%{value}%"
        elif kind == "exact":
            shape.append((base, "eq"))
            values[p] = value
        elif bound == "from":
            shape.append((base, "from"))
            values[p] = _date(value, name)
        elif bound == "to":
            end = _date(value, name)
            shape.append((base, "before"))
            values[p] = end + timedelta(days=1) if len(value) == 10 else end
        else:
            start = _date(value, name)
            shape.append((base, "day"))
            values[p], values[p + "_end"] = start, start + timedelta(days=1)
    return Filtered(tuple(shape), values, modalities)


#: The list's columns, labelled as :func:`account_json` names them, in its order.
LIST_COLUMNS = (
    Account.id, Practice.id.label("practice_id"), Practice.name.label("practice"),
    Practice.slug.label("practice_slug"), Company.id.label("company_id"), Company.slug.label("company"),
    Company.name.label("company_name"), Account.approved_for_access, Account.modalities,
    Account.auto_submit, Account.status, Account.managed_by_config,
    # isoformat() strings, as account_json writes them, without a datetime between
    type_coerce(Account.created_at, IsoformatTime()).label("created_at"),
    type_coerce(Account.updated_at, IsoformatTime()).label("updated_at"),
)


def filtered_accounts(params: Mapping[str, str]) -> Filtered:
    """The account list's filters in ``params`` (a bad filter is refused here, before any
    read); :func:`account_rows` applies them with the caller's scope."""
    return parse_filters(params)


_LIST = (select(*LIST_COLUMNS).join(Practice, Practice.id == Account.practice_id)
         .join(Company, Company.id == Account.company_id).order_by(Account.id))
@lru_cache(maxsize=256)
def _list_statement(role: str, shape: tuple[tuple[str, str], ...]) -> Select:
    # One statement per shape of filter and caller, built once: building it for every request
    # cost more than running it. The values are parameters.
    stmt = Filtered(shape, {}, []).statement(_LIST)
    condition = _scope_condition(role)
    return stmt if condition is None else stmt.where(condition)


def account_rows(conn: Connection, principal: Principal, filtered: Filtered) -> list[dict[str, Any]]:
    """The accounts ``principal`` may see, as :func:`account_json` writes them, read on ``conn``
    as plain rows: ORM instances of three tables per row cost more than reading them."""
    params = {**filtered.values, **principal.tenant_params()}
    rows = row_dicts(conn.execute(_list_statement(principal.role, filtered.shape), params))
    for item in rows:
        item["modalities"] = list(item["modalities"] or [])
    if filtered.modalities:  # JSON containment differs between SQLite and PostgreSQL; filter here
        rows = [r for r in rows if set(filtered.modalities) <= set(r["modalities"])]
    return rows


async def list_accounts(
    session: AsyncSession, principal: Principal, params: Mapping[str, str]
) -> list[dict[str, Any]]:
    filtered = filtered_accounts(params)
    return await session.run_sync(lambda sync: account_rows(sync.connection(), principal, filtered))


def account_json(a: Account, p: Practice, c: Company) -> dict[str, Any]:
    return {
        "id": a.id, "practice_id": p.id, "practice": p.name, "practice_slug": p.slug,
        "company_id": c.id, "company": c.slug, "company_name": c.name,
        "approved_for_access": a.approved_for_access, "modalities": list(a.modalities or []),
        "auto_submit": a.auto_submit, "status": a.status, "managed_by_config": a.managed_by_config,
        "created_at": a.created_at.isoformat() if a.created_at else None,
        "updated_at": a.updated_at.isoformat() if a.updated_at else None,
    }


async def get_account(session: AsyncSession, principal: Principal, account_id: int) -> tuple[Account, Practice, Company]:
    stmt = (
        select(Account, Practice, Company)
        .join(Practice, Practice.id == Account.practice_id)
        .join(Company, Company.id == Account.company_id)
        .where(Account.id == account_id)
    )
    row = (await session.execute(scope(stmt, principal))).first()
    if row is None:  # another tenant's account is "not found", not "forbidden": no probing
        raise ManageError(404, "not_found", "account not found")
    return row[0], row[1], row[2]


# --- changing access -----------------------------------------------------------------------------------

EDITABLE = {"approved_for_access": bool, "modalities": list, "auto_submit": bool}


async def update_account(
    session: AsyncSession, hub: Hub, principal: Principal, account_id: int, changes: Mapping[str, Any]
) -> dict[str, Any]:
    """PATCH an account. ``approved_for_access: false`` suspends the practice's access with
    this company (logins, tokens and case submission refused once no account of the practice
    is approved); images keep being received and stored."""
    if principal.role not in ("operator", "company_admin"):
        raise ManageError(403, "forbidden", "only the company or an operator changes an account")
    account, practice, company = await get_account(session, principal, account_id)
    if principal.role == "company_admin" and account.status != AccountStatus.ACTIVE and changes:
        # a switched-out account is history: reinstating it would attach the practice again
        raise ManageError(409, "account_not_active", f"this account is {account.status}; only an "
                          "active account can be changed by its company")
    if account.managed_by_config and changes:
        # the config file is applied at every start: a change made here would be undone then
        raise ManageError(409, "managed_by_config", "this account is declared in the hub's config file; "
                          "change it there (accounts[].approved_for_access, modalities, auto_submit)")
    for name, value in changes.items():
        if name not in EDITABLE:
            raise ManageError(422, "not_editable", f"{name} cannot be changed here; editable: {', '.join(EDITABLE)}", name)
        if not isinstance(value, EDITABLE[name]):
            raise ManageError(422, "invalid_field", f"{name} must be a {EDITABLE[name].__name__}", name)
    before = history.account_state(account)
    if "approved_for_access" in changes:
        account.approved_for_access = changes["approved_for_access"]
    if "auto_submit" in changes:
        account.auto_submit = changes["auto_submit"]
    if "modalities" in changes:
        account.modalities = sorted({str(m).strip().upper() for m in changes["modalities"] if str(m).strip()})
    account.updated_at = hub.clock.now()
    await session.flush()
    after = history.account_state(account)
    if before != after:
        change = "changed"
        if before["approved_for_access"] and not after["approved_for_access"]:
            change = "suspended"
        elif not before["approved_for_access"] and after["approved_for_access"]:
            change = "reinstated"
        row = await history.record(session, account, change, principal.actor, before=before, after=after,
                                   at=hub.clock.now())
        await audit.record(session, principal.actor, f"account.{change}", "account", account.id,
                           before=before, after=after, company_id=account.company_id,
                           practice_id=account.practice_id)
        await history.announce(session, hub, row)
    return account_json(account, practice, company)


async def account_history(session: AsyncSession, account_id: int) -> list[dict[str, Any]]:
    from hub.accounts.models import AccountHistory

    rows = await session.execute(
        select(AccountHistory).where(AccountHistory.account_id == account_id).order_by(AccountHistory.id)
    )
    return [
        {"at": h.at.isoformat(), "change": h.change, "actor": h.actor, "company_id": h.company_id,
         "switch_request_id": h.switch_request_id, "before": h.before, "after": h.after}
        for h in rows.scalars()
    ]


# --- the onboarding report --------------------------------------------------------------------------------


async def resolve_company(session: AsyncSession, ref: str | int | None) -> Company | None:
    if ref in (None, ""):
        return None
    if db_id(ref) is not None:
        company = await session.get(Company, int(ref))  # checked: a BIGINT id
    else:
        company = (await session.execute(select(Company).where(Company.slug == str(ref)))).scalar_one_or_none()
    if company is None:
        raise ManageError(404, "not_found", f"company {ref!r} not found", "company")
    return company


async def report_company_for(session: AsyncSession, principal: Principal, ref: str | None) -> Company | None:
    """Which company's report the caller may see: a company admin only its own."""
    if principal.role == "practice_staff":
        raise ManageError(403, "forbidden", "the onboarding report is for companies and operators")
    company = await resolve_company(session, ref)
    if principal.role == "company_admin":
        if company is not None and company.id != principal.company_id:
            raise ManageError(403, "forbidden", "a company admin sees only its own company's report", "company")
        company = await session.get(Company, principal.company_id)
    return company


def _state(req: AccountRequest, account: Account | None) -> str:
    if req.state != "accepted":
        return req.state
    if account is not None and account.status != AccountStatus.ACTIVE:
        return account.status
    if account is not None and not account.approved_for_access:
        return "suspended"
    reached = [s for s in STAGES if getattr(req, f"{s}_at") is not None]
    return reached[-1] if reached else req.state


async def onboarding_report(
    session: AsyncSession, hub: Hub, company: Company | None, date_from: date | None, date_to: date | None
) -> OnboardingReport:
    """One row per account request made in [from, to] (dates inclusive, UTC)."""
    stmt = select(AccountRequest).order_by(AccountRequest.requested_at, AccountRequest.id)
    if company is not None:
        stmt = stmt.where(AccountRequest.company_id == company.id)
    if date_from is not None:
        stmt = stmt.where(AccountRequest.requested_at >= datetime.combine(date_from, time(), tzinfo=UTC))
    if date_to is not None:
        stmt = stmt.where(
            AccountRequest.requested_at < datetime.combine(date_to + timedelta(days=1), time(), tzinfo=UTC)
        )
    requests = list((await session.execute(stmt)).scalars())
    await refresh_stages(session, requests)
    companies = {c.id: c for c in (await session.execute(select(Company))).scalars()}
    account_ids = [r.account_id for r in requests if r.account_id]
    accounts = {}
    if account_ids:
        accounts = {a.id: a for a in (await session.execute(select(Account).where(Account.id.in_(account_ids)))).scalars()}
    rows = [
        OnboardingRow(
            request_id=r.id, account_id=r.account_id, practice=r.practice_name or "",
            company=companies[r.company_id].name if r.company_id in companies else "",
            state=_state(r, accounts.get(r.account_id) if r.account_id is not None else None),
            stages={s: getattr(r, f"{s}_at") for s in STAGES},
        )
        for r in requests
    ]
    return OnboardingReport(rows=rows, date_from=date_from, date_to=date_to,
                            company=company.name if company else None, generated_at=hub.clock.now())
