"""Single-use links are stored only as hashes: the stored copy of the email keeps the link masked
(sealed), the recipient gets the real one, and it works once."""

from __future__ import annotations

import hashlib
import re

from sqlalchemy import select

from hub.accounts.models import AccountRequest, PasswordSetToken
from hub.db.models import Job
from hub.messaging.models import Communication

from .accounts_world import World

FULL = {
    "company": "read-right", "practice_name": "Elm Street Vets", "contact_name": "Dr Ada Brown",
    "email": "ada@elm.example", "phone": "+441134960000", "pims": "ezyVet", "imaging_software": "Vet-Rocket",
    "modalities": ["DX"], "address": {"line1": "1 Elm St", "city": "Leeds", "postcode": "LS1 1AA", "country": "GB"},
}


def body_of(msg) -> str:
    return msg.get_body(preferencelist=("plain",)).get_content()


async def stored_text(world: World) -> str:
    """Everything the database holds about messages and jobs, as one string."""
    async with world.hub.sessionmaker() as s:
        comms = (await s.execute(select(Communication))).scalars().all()
        jobs = (await s.execute(select(Job))).scalars().all()
    return "\n".join([*(f"{c.subject}|{c.body_text}|{c.body_html}|{c.context}|{c.headers}" for c in comms),
                      *(str(j.payload) for j in jobs)])


async def test_set_password_link_is_masked_in_storage(world: World) -> None:
    req = await (await world.api.post("/api/account-requests", json=FULL)).json()
    company = await world.as_company("read-right")
    assert (await company.post(f"/api/account-requests/{req['id']}/accept")).status == 200
    await world.run_jobs()
    welcome = [m for m in world.mails("ada@elm.example") if "set-password" in body_of(m)][-1]
    token = re.search(r"/set-password\?token=([A-Za-z0-9_-]+)", body_of(welcome)).group(1)
    assert not token.startswith("sealed")
    stored = await stored_text(world)
    assert "set-password?token=sealed.pw." in stored
    assert token not in stored
    async with world.hub.sessionmaker() as s:
        row = (await s.execute(select(PasswordSetToken))).scalar_one()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    # the masked link does nothing; the real one works once
    sealed = re.search(r"token=(sealed\.pw\.[A-Za-z0-9_-]+)", stored).group(1)
    assert (await world.api.post("/api/password", json={"token": sealed, "password": "x" * 12})).status == 404
    r = await world.api.post("/api/password", json={"token": token, "password": "correct horse battery"})
    assert r.status == 200
    assert (await world.api.post("/api/password", json={"token": token, "password": "x" * 12})).status == 410


async def test_completion_link_is_masked_in_storage(world: World) -> None:
    partial = {k: v for k, v in FULL.items() if k not in ("phone", "pims")}
    req = await (await world.api.post("/api/account-requests", json=partial)).json()
    await world.run_jobs()
    [mail] = world.mails("ada@elm.example")
    token = re.search(r"/complete\?token=([A-Za-z0-9_-]+)", body_of(mail)).group(1)
    assert token == req["completion_token"]  # the submitter and the mailbox hold the same secret
    stored = await stored_text(world)
    assert token not in stored and "complete?token=sealed.ar." in stored
    async with world.hub.sessionmaker() as s:
        row = await s.get(AccountRequest, req["id"])
    assert row.completion_token_hash == hashlib.sha256(token.encode()).hexdigest()
    r = await world.api.post(f"/api/account-requests/{req['id']}/complete", json={"token": token, "phone": "1"})
    assert r.status == 200, await r.text()
    await world.run_jobs()
    again = world.mails("ada@elm.example")[-1]
    assert f"complete?token={token}" in body_of(again)  # the next list carries the same link
