"""Onboarding: a practice's account request, the missing-information loop, acceptance, the
welcome email with a single-use set-password link, and the stage timestamps.

Services take a session and only flush; the caller's transaction commits. Every email goes
through ``hub.messaging.outbound.queue_email`` with the company in Cc.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from hub import audit, events
from hub.accounts import history
from hub.accounts.config import onboarding_settings
from hub.accounts.errors import AccountsError
from hub.accounts.links import hash_secret, sign_consent
from hub.accounts.models import AccountRequest, PasswordSetToken, RequestState, db_id
from hub.accounts.policy import label
from hub.auth import hash_password, revoke_user_tokens
from hub.db.models import Account, AccountStatus, CallingAE, Company, Practice, User
from hub.messaging import links
from hub.messaging.outbound import queue_email
from hub.state import HubKey

if TYPE_CHECKING:
    from hub.core import Hub

#: Fields a request carries as columns; anything else a company asks for goes in ``extra``.
REQUEST_FIELDS = (
    "practice_name", "contact_name", "email", "phone", "address", "pims", "imaging_software",
    "modalities",
)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_MODALITY = re.compile(r"^[A-Z]{2,4}$")


class OnboardingError(AccountsError):
    """An account request or set-password step was refused."""
    pass


# --- reading input -----------------------------------------------------------------------------


def _clean_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """Normalise what a practice typed; invalid values are refused with the field named."""
    out: dict[str, Any] = {}
    for name in REQUEST_FIELDS:
        if name not in data:
            continue
        value = data[name]
        if name == "address":
            if value in (None, ""):
                value = {}
            if not isinstance(value, Mapping):
                raise OnboardingError(422, "invalid_field", "address must be an object", "address")
            value = {str(k): str(v).strip() for k, v in value.items() if v not in (None, "")}
        elif name == "modalities":
            if isinstance(value, str):
                value = [m for m in re.split(r"[\s,]+", value) if m]
            if not isinstance(value, list):
                raise OnboardingError(422, "invalid_field", "modalities must be a list", "modalities")
            value = sorted({str(m).strip().upper() for m in value if str(m).strip()})
            bad = [m for m in value if not _MODALITY.match(m)]
            if bad:
                raise OnboardingError(
                    422, "invalid_field", f"unknown modality codes: {', '.join(bad)}", "modalities"
                )
        else:
            value = None if value is None else str(value).strip() or None
            if name == "email" and value and not _EMAIL.match(value):
                raise OnboardingError(422, "invalid_field", "email is not an email address", "email")
        out[name] = value
    return out


async def _find_company(session: AsyncSession, data: Mapping[str, Any]) -> Company | None:
    ref = data.get("company", data.get("company_id"))
    if ref in (None, ""):
        return None
    if db_id(ref) is not None:
        company = await session.get(Company, int(ref))  # checked: a BIGINT id
    else:
        company = (
            await session.execute(select(Company).where(Company.slug == str(ref)))
        ).scalar_one_or_none()
    if company is None:
        raise OnboardingError(422, "unknown_company", f"no company {ref!r}", "company")
    return company


def missing_fields(hub: Hub, request: AccountRequest, company: Company | None) -> list[str]:
    """The union of every ``vethub_onboarding_missing_fields`` answer, in first-seen order."""
    fields = {name: getattr(request, name) for name in REQUEST_FIELDS}
    fields["company_id"] = request.company_id
    fields["extra"] = dict(request.extra or {})
    seen: dict[str, None] = {}
    for result in hub.pm.hook.vethub_onboarding_missing_fields(request=fields, company=company):
        for name in result or ():
            seen.setdefault(str(name), None)
    return list(seen)


# --- the request --------------------------------------------------------------------------------


async def submit_request(
    session: AsyncSession, hub: Hub, data: Mapping[str, Any], *, actor: str = "public"
) -> tuple[AccountRequest, str]:
    """Save a new request (complete or not) and move it on. Returns it and the secret that
    lets the practice complete it (shown once, sent in the missing-information email)."""
    company = await _find_company(session, data)
    fields = _clean_fields(data)
    extra = {
        k: v for k, v in (data.get("extra") or {}).items() if isinstance(k, str)
    } if isinstance(data.get("extra"), Mapping) else {}
    now = hub.clock.now()
    req = AccountRequest(
        company_id=company.id if company else None,
        address={}, modalities=[], extra=extra, missing_fields=[],
        requested_at=now, updated_at=now, state=RequestState.information_requested,
    )
    for name, value in fields.items():
        setattr(req, name, value)
    session.add(req)
    await session.flush()
    token = links.single_use_token(links.secret_of(hub), "ar", _completion_arg(req))
    req.completion_token_hash = hash_secret(token)
    await session.flush()
    await audit.record(
        session, actor, "account_request.create", "account_request", req.id,
        after=request_json(req), company_id=req.company_id,
    )
    await _advance(session, hub, req, company, actor=actor)
    return req, token


async def complete_request(
    session: AsyncSession, hub: Hub, request_id: int, token: str, data: Mapping[str, Any]
) -> AccountRequest:
    """The practice adds what was missing (through the link in the email, no login)."""
    req = await session.get(AccountRequest, request_id, with_for_update=True)
    if (
        req is None
        or req.completion_token_hash is None
        or not secrets.compare_digest(req.completion_token_hash, hash_secret(token or ""))
    ):
        raise OnboardingError(404, "not_found", "account request not found")
    if req.state != "information_requested":
        raise OnboardingError(409, "not_open", f"this request is {req.state.replace('_', ' ')}")
    before = request_json(req)
    company = await _find_company(session, data) if ("company" in data or "company_id" in data) else None
    if company is not None:
        req.company_id = company.id
    elif req.company_id is not None:
        company = await session.get(Company, req.company_id)
    for name, value in _clean_fields(data).items():
        setattr(req, name, value)
    if isinstance(data.get("extra"), Mapping):
        req.extra = {**(req.extra or {}), **data["extra"]}
    req.updated_at = hub.clock.now()
    await session.flush()
    await audit.record(
        session, "practice:" + (req.email or str(req.id)), "account_request.update",
        "account_request", req.id, before=before, after=request_json(req),
        company_id=req.company_id,
    )
    await _advance(session, hub, req, company, actor="public")
    return req


async def _advance(
    session: AsyncSession, hub: Hub, req: AccountRequest, company: Company | None, *,
    actor: str,
) -> None:
    missing = missing_fields(hub, req, company)
    req.missing_fields = missing
    now = hub.clock.now()
    if missing:
        req.state = RequestState.information_requested
        req.information_requested_at = req.information_requested_at or now
        if req.email:
            await _email(
                session, hub, req, company, "account_information_requested",
                missing=[{"name": m, "label": label(m)} for m in missing],
                complete_url=f"{_public_url(hub)}/account-requests/{req.id}/complete"
                             f"?token={links.sealed('ar', _completion_arg(req))}",
            )
        await session.flush()
        return
    req.state = RequestState.awaiting_approval
    if req.acknowledged_at is None:
        req.acknowledged_at = now
        await _email(session, hub, req, company, "account_request_received")
    await session.flush()
    if company is not None and (company.settings or {}).get("auto_approve"):
        try:
            async with session.begin_nested():  # a refusal leaves the request for an operator
                await accept_request(session, hub, req, actor="auto_approve")
        except OnboardingError as err:
            await session.refresh(req)
            await events.record(session, "account_request.needs_operator",
                                f"account request {req.id} was not approved automatically: {err.message}",
                                data={"account_request_id": req.id, "code": err.code})


# --- acceptance ----------------------------------------------------------------------------------


async def accept_request(
    session: AsyncSession, hub: Hub, req: AccountRequest, *, actor: str
) -> AccountRequest:
    """Create the practice, its account, a calling AE title and a user; send the welcome email.

    For a practice the hub already knows (its login email or practice email), the company's
    acceptance only asks the practice: the request waits in ``awaiting_practice`` until the
    practice itself confirms (:func:`confirm_by_practice`). A company never attaches a practice
    on its own say-so."""
    if req.state != "awaiting_approval":
        raise OnboardingError(
            409, "not_ready", f"only a complete request can be accepted (this one is {req.state})"
        )
    company = await _request_company(session, req)
    user, practice = await _known_practice(session, req)
    if practice is not None:
        await _refuse_existing_account(session, practice, company)
        req.state, req.practice_id, req.decided_by = "awaiting_practice", practice.id, actor
        await session.flush()
        await audit.record(session, actor, "account_request.ask_practice", "account_request", req.id,
                           after={"practice_id": practice.id}, company_id=company.id,
                           practice_id=practice.id)
        await _ask_practice(session, hub, req, practice, company)
        return req
    return await _create_account(session, hub, req, company, None, None, actor=actor)


async def confirm_by_practice(
    session: AsyncSession, hub: Hub, req: AccountRequest, *, practice_id: int, actor: str
) -> AccountRequest:
    """The known practice itself agrees to the account with the request's company."""
    if req.state != "awaiting_practice" or req.practice_id != practice_id:
        raise OnboardingError(409, "not_awaiting_practice", "this request is not waiting for the practice")
    company = await _request_company(session, req)
    practice = await session.get(Practice, practice_id)
    assert practice is not None  # req.practice_id (a foreign key) is this id, checked above
    await _refuse_existing_account(session, practice, company)
    user = (await session.execute(select(User).where(
        User.email == req.email, User.practice_id == practice_id))).scalar_one_or_none()
    req.state = RequestState.awaiting_approval  # _create_account's precondition; set to accepted there
    return await _create_account(session, hub, req, company, practice, user, actor=actor)


async def _request_company(session: AsyncSession, req: AccountRequest) -> Company:
    """The company the request is for; only a request that names one can become an account (the
    built-in rules ask for it, but a house rule may not)."""
    company = await session.get(Company, req.company_id) if req.company_id is not None else None
    if company is None:
        raise OnboardingError(409, "no_company", "the request names no company", "company")
    return company


async def _known_practice(session: AsyncSession, req: AccountRequest) -> tuple[User | None, Practice | None]:
    user = (await session.execute(select(User).where(User.email == req.email))).scalar_one_or_none()
    if user is not None and (user.role != "practice_staff" or user.practice_id is None):
        raise OnboardingError(409, "email_in_use", f"{req.email} is already a {user.role} user; "
                              "ask the practice for another contact email", "email")
    if user is not None:
        return user, await session.get(Practice, user.practice_id)
    practice = (await session.execute(
        select(Practice).where(Practice.email == req.email).order_by(Practice.id).limit(1)
    )).scalar_one_or_none()
    return None, practice


async def _refuse_existing_account(session: AsyncSession, practice: Practice, company: Company) -> None:
    if (await session.execute(select(Account.id).where(
            Account.practice_id == practice.id, Account.company_id == company.id))).first():
        raise OnboardingError(409, "account_exists",
                              f"{practice.name} already has an account with {company.name}")


async def _ask_practice(session: AsyncSession, hub: Hub, req: AccountRequest, practice: Practice,
                        company: Company) -> None:
    """Mail the practice's own addresses (never only the address the request named) a signed
    link to confirm; its logged-in staff can confirm through the API as well."""
    s = onboarding_settings(hub)
    expires_at = hub.clock.now() + timedelta(hours=s.password_link_hours)
    expires, sig = sign_consent(hub.config.hub.secret_key.get_secret_value(), req.id, practice.id, expires_at)
    url = f"{_public_url(hub)}/account-requests/{req.id}/confirm?expires={expires}&sig={sig}"
    users = (await session.execute(select(User.email).where(
        User.practice_id == practice.id, User.is_active.is_(True)))).scalars().all()
    recipients = sorted({e for e in (*users, practice.email) if e})
    for to in recipients:
        await queue_email(
            session, hub, to=to, template="account_practice_confirm",
            context={"practice_name": practice.name, "company_name": company.name,
                     "contact_name": req.contact_name or "", "request_email": req.email or "",
                     "confirm_url": url, "link_expires_at": expires_at.strftime("%Y-%m-%d %H:%M UTC"),
                     "hub_name": hub.config.hub.name, "request": {"id": req.id}},
            category="account", practice_id=practice.id, company_id=company.id,
        )


async def _create_account(
    session: AsyncSession, hub: Hub, req: AccountRequest, company: Company, practice: Practice | None,
    user: User | None, *, actor: str,
) -> AccountRequest:
    now = hub.clock.now()
    if practice is None:
        practice = Practice(
            slug=await _unique_slug(session, req.practice_name or "practice"),
            name=req.practice_name, email=req.email, phone=req.phone,
            country=(req.address.get("country") or "US").upper()[:2], address=dict(req.address),
        )
        session.add(practice)
        await session.flush()
    account = Account(
        practice_id=practice.id, company_id=company.id, approved_for_access=True,
        modalities=list(req.modalities), status=AccountStatus.ACTIVE, created_at=now, updated_at=now,
    )
    session.add(account)
    await session.flush()
    ae = CallingAE(
        practice_id=practice.id, account_id=account.id,
        ae_title=await _unique_ae_title(session, hub, practice.id),
    )
    session.add(ae)
    if user is None:
        user = User(email=req.email, name=req.contact_name or "", role="practice_staff",
                    practice_id=practice.id, is_active=True)
        session.add(user)
    await session.flush()
    req.practice_id, req.account_id, req.user_id = practice.id, account.id, user.id
    hub.state.setdefault(FIRST_IMAGES_DONE, set).discard(practice.id)
    req.state, req.decided_by, req.account_created_at = "accepted", actor, now
    created = await history.record(session, account, "created", actor, after=history.account_state(account),
                                   at=now)
    await audit.record(
        session, actor, "account_request.accept", "account_request", req.id,
        after={"practice_id": practice.id, "account_id": account.id, "calling_ae": ae.ae_title},
        company_id=company.id, practice_id=practice.id,
    )
    await audit.record(
        session, actor, "account.create", "account", account.id,
        after=history.account_state(account), company_id=company.id, practice_id=practice.id,
    )
    link, expires_at = (None, None) if user.password_hash else await issue_password_link(session, hub, user)
    s = onboarding_settings(hub)
    await _email(
        session, hub, req, company, "account_welcome",
        practice_id=practice.id, login_email=user.email,
        set_password_url=link, link_expires_at=expires_at.strftime("%Y-%m-%d %H:%M UTC") if expires_at else None,
        dicom_host=s.dicom_host or urlsplit(_public_url(hub)).hostname, dicom_port=s.dicom_port,
        called_ae=s.called_ae, calling_ae=ae.ae_title,
        submit_case_url=f"{_public_url(hub)}/api/cases",
    )
    req.welcome_sent_at = hub.clock.now()
    await session.flush()
    await history.announce(session, hub, created)
    return req


async def reject_request(
    session: AsyncSession, hub: Hub, req: AccountRequest, *, actor: str, reason: str = ""
) -> AccountRequest:
    if req.state in ("accepted", "rejected"):
        raise OnboardingError(409, "not_open", f"this request is {req.state}")
    req.state, req.decided_by, req.rejected_at = "rejected", actor, hub.clock.now()
    await audit.record(session, actor, "account_request.reject", "account_request", req.id,
                       after={"reason": reason}, company_id=req.company_id)
    await session.flush()
    return req


async def _unique_slug(session: AsyncSession, name: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:50] or "practice"
    slug, n = base, 1
    while (await session.execute(select(Practice.id).where(Practice.slug == slug))).first():
        n += 1
        slug = f"{base}-{n}"
    return slug


async def _unique_ae_title(session: AsyncSession, hub: Hub, practice_id: int) -> str:
    prefix = onboarding_settings(hub).ae_prefix.upper()
    for n in range(practice_id, practice_id + 1000):
        title = f"{prefix}{n:04d}"[:16]
        if not (await session.execute(select(CallingAE.id).where(CallingAE.ae_title == title))).first():
            return title
    raise OnboardingError(500, "no_ae_title", "could not find a free calling AE title")


# --- passwords -----------------------------------------------------------------------------------


async def issue_password_link(session: AsyncSession, hub: Hub, user: User) -> tuple[str, datetime]:
    """A single-use link that expires after ``[onboarding] password_link_hours``.

    Returned *sealed* (``hub.messaging.links.sealed``): the stored email keeps it masked and the
    send puts the real token in; ``links.unseal`` gives the real link. Only the token's hash is
    stored."""
    nonce = secrets.token_urlsafe(16)
    token = links.single_use_token(links.secret_of(hub), "pw", nonce)
    now = hub.clock.now()
    expires_at = now + timedelta(hours=onboarding_settings(hub).password_link_hours)
    session.add(PasswordSetToken(token_hash=hash_secret(token), user_id=user.id, created_at=now,
                                 expires_at=expires_at))
    await session.flush()
    return f"{_public_url(hub)}/set-password?token={links.sealed('pw', nonce)}", expires_at


def _completion_arg(req: AccountRequest) -> str:
    # stable for the request's life and unique across database resets (id and second of asking)
    return f"{req.id}-{int(req.requested_at.timestamp())}"


async def set_password(session: AsyncSession, hub: Hub, token: str, password: str) -> User:
    """Use a set-password link once. The conditional UPDATE makes a second use (even a
    concurrent one) fail."""
    if len(password or "") < 10:
        raise OnboardingError(422, "weak_password", "use at least 10 characters", "password")
    now = hub.clock.now()
    row = (
        await session.execute(
            select(PasswordSetToken).where(PasswordSetToken.token_hash == hash_secret(token or ""))
        )
    ).scalar_one_or_none()
    if row is None:
        raise OnboardingError(404, "invalid_link", "this link is not valid")
    if row.used_at is not None:
        raise OnboardingError(410, "link_used", "this link was already used")
    if row.expires_at <= now:
        raise OnboardingError(410, "link_expired", "this link has expired; ask for a new one")
    claimed = await session.execute(
        update(PasswordSetToken)
        .where(PasswordSetToken.id == row.id, PasswordSetToken.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if cast(CursorResult[Any], claimed).rowcount != 1:
        raise OnboardingError(410, "link_used", "this link was already used")
    user = await session.get(User, row.user_id)
    assert user is not None  # the token's user (a foreign key), read under this transaction
    user.password_hash = hash_password(password)
    # a new password ends every session opened with the old one (and any stolen token)
    await revoke_user_tokens(session, user.id, now)
    await session.execute(
        update(AccountRequest)
        .where(AccountRequest.user_id == user.id, AccountRequest.password_set_at.is_(None))
        .values(password_set_at=now)
        .execution_options(synchronize_session=False)
    )
    await audit.record(session, f"user:{user.email}", "user.set_password", "user", user.id,
                       practice_id=user.practice_id)
    await session.flush()
    return user


# --- stages from imaging ------------------------------------------------------------------------


# Practices known to have no accepted request still lacking "first images received": kept so
# every stored image need not run the stamping update. Acceptance clears the practice's entry.
FIRST_IMAGES_DONE: HubKey[set[int]] = HubKey("accounts.first_images_done")


def first_images_pending(hub: Hub, practice_id: int) -> bool:
    return practice_id not in hub.state.get(FIRST_IMAGES_DONE, set())


# The practices among the "ids" with an accepted request still waiting for its first
# images: built once, as the receiver's bursts of new practices ask it again and again.
_FIRST_IMAGES_WAITING = (
    select(AccountRequest.practice_id)
    .where(
        AccountRequest.practice_id.in_(bindparam("ids", expanding=True)),
        AccountRequest.account_created_at <= bindparam("at"),
        AccountRequest.first_images_received_at.is_(None),
    )
    .distinct()
)


def first_images_unstamped(conn: Connection, practice_ids: Collection[int], at: datetime) -> set[int]:
    """The practices among ``practice_ids`` with an accepted request still waiting for its
    first images: read first, so practices with none (most of them, most of the time) cost no
    write transaction, which on SQLite would queue behind the DICOM committer."""
    rows = conn.execute(_FIRST_IMAGES_WAITING, {"ids": list(practice_ids), "at": at}).scalars()
    return {practice_id for practice_id in rows if practice_id is not None}


async def note_first_images(session: AsyncSession, hub: Hub, practice_ids: Collection[int], at: datetime) -> None:
    """Stamp "first images received" on the practices' accepted requests that lack it."""
    await session.execute(
        update(AccountRequest)
        .where(
            AccountRequest.practice_id.in_(list(practice_ids)),
            AccountRequest.account_created_at <= at,
            AccountRequest.first_images_received_at.is_(None),
        )
        .values(first_images_received_at=at)
        .execution_options(synchronize_session=False)
    )
    hub.state.setdefault(FIRST_IMAGES_DONE, set).update(practice_ids)


class FirstImages:
    """Stamps "first images received" for the practices whose instances were just stored, a
    burst at a time: every practice named before the loop's next turn (one committed batch's
    ``vethub_instance_stored`` calls, :meth:`hub.core.Hub.fire_each`) shares one read, and one
    write if any of them has a request waiting, where a read per practice made two hundred
    hand-offs to the database's thread when two hundred practices sent their first studies
    at once (docs/performance.md)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._gathering: tuple[set[int], asyncio.Task[None]] | None = None

    def stored(self, practice_id: int) -> asyncio.Task[None] | None:
        """Count ``practice_id`` in the burst; the burst's task for the call that started it,
        None for the others (the burst is awaited once, and fails, if it does, once)."""
        if self._gathering is not None:
            self._gathering[0].add(practice_id)
            return None
        ids = {practice_id}
        task = asyncio.get_running_loop().create_task(self._stamp(ids))
        self._gathering = (ids, task)
        return task

    async def _stamp(self, ids: set[int]) -> None:
        # The task's first step runs on the loop's next turn, after the calls that named ids.
        self._gathering = None
        now = self.hub.clock.now()
        waiting = await self.hub.read(lambda conn: first_images_unstamped(conn, ids, now))
        self.hub.state.setdefault(FIRST_IMAGES_DONE, set).update(ids - waiting)
        if waiting:
            async with self.hub.transaction() as session:
                await note_first_images(session, self.hub, waiting, now)


FIRST_IMAGES: HubKey[FirstImages] = HubKey("accounts.first_images")


async def refresh_stages(session: AsyncSession, requests: list[AccountRequest]) -> None:
    """Fill "first images received" / "first case submitted" from the imaging tables, for
    requests whose account exists and whose stamps are still empty (no case event exists, so
    the report asks the tables; ``vethub_instance_stored`` stamps images as they arrive)."""
    from hub.imaging.models import Case, Instance

    for req in requests:
        if req.account_id is None or req.practice_id is None:
            continue
        if req.first_images_received_at is None:
            first = (
                await session.execute(
                    select(func.min(Instance.received_at)).where(
                        Instance.practice_id == req.practice_id,
                        Instance.received_at >= req.account_created_at,
                    )
                )
            ).scalar()
            if first is not None:
                req.first_images_received_at = _aware(first)
        if req.first_case_submitted_at is None:
            first = (
                await session.execute(
                    select(func.min(Case.created_at)).where(Case.account_id == req.account_id)
                )
            ).scalar()
            if first is not None:
                req.first_case_submitted_at = _aware(first)
    await session.flush()


def _aware(value: datetime) -> datetime:
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --- helpers ------------------------------------------------------------------------------------


def _public_url(hub: Hub) -> str:
    return hub.config.hub.public_url.rstrip("/")


async def _email(
    session: AsyncSession, hub: Hub, req: AccountRequest, company: Company | None, template: str,
    *, practice_id: int | None = None, **context: Any,
) -> None:
    if req.email is None:  # the built-in rules ask for it, but a house rule may not
        raise OnboardingError(409, "no_email", "the request has no email address to write to", "email")
    ctx = {
        "request": request_json(req),
        "practice_name": req.practice_name or "your practice",
        "contact_name": req.contact_name or "",
        "company_name": company.name if company else "",
        "hub_name": hub.config.hub.name,
        **context,
    }
    cc = (company.email,) if company is not None and company.email else ()
    await queue_email(
        session, hub, to=req.email, template=template, context=ctx, category="account", cc=cc,
        practice_id=practice_id or req.practice_id, company_id=company.id if company else None,
    )


def request_json(req: AccountRequest) -> dict[str, Any]:
    return {
        "id": req.id,
        "company_id": req.company_id,
        **{name: getattr(req, name) for name in REQUEST_FIELDS},
        "extra": dict(req.extra or {}),
        "state": req.state,
        "missing_fields": list(req.missing_fields or []),
        "practice_id": req.practice_id,
        "account_id": req.account_id,
        "stages": {
            name: (v.isoformat() if (v := getattr(req, f"{name}_at")) else None)
            for name in (
                "requested", "information_requested", "account_created", "welcome_sent",
                "password_set", "first_images_received", "first_case_submitted",
            )
        },
    }
