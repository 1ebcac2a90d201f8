"""Polling an IMAP mailbox (aioimaplib), with IDLE where the server offers it.

Each message is fetched without marking it seen, stored with its processing job, and only then
flagged ``\\Deleted`` and expunged. A hub killed between the two fetches it again on restart;
its source key (host, mailbox, UIDVALIDITY, UID) is already stored, so nothing is stored or
processed twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parseaddr
from typing import TYPE_CHECKING

import aioimaplib

from .config import ImapConfig, InboundConfig
from .store import store

if TYPE_CHECKING:
    from hub.core import Hub

log = logging.getLogger(__name__)


class ImapError(Exception):
    """The IMAP server did not answer OK to a command; the poller backs off and tries again."""
    pass


def _ok(response: aioimaplib.Response, what: str) -> aioimaplib.Response:
    if response.result != "OK":
        raise ImapError(f"IMAP {what}: {response.result} {response.lines[-1:]!r}")
    return response


def envelope_of(raw: bytes) -> tuple[str, list[str]]:
    """(envelope sender, recipients) as the delivering server recorded them in the headers."""
    headers = BytesHeaderParser().parsebytes(raw[:65536])
    sender = headers.get("Return-Path")
    mail_from = parseaddr(str(sender))[1] if sender is not None else parseaddr(str(headers.get("From", "")))[1]
    delivered = headers.get_all("Delivered-To") or headers.get_all("X-Original-To") or []
    if not delivered:
        delivered = (headers.get_all("To") or []) + (headers.get_all("Cc") or [])
    return mail_from, [addr for _, addr in getaddresses([str(v) for v in delivered]) if addr]


class ImapPoller:
    """Polls the configured mailbox and stores each new message with its processing job."""
    def __init__(self, hub: Hub, config: InboundConfig, imap: ImapConfig) -> None:
        self.hub, self.config, self.imap = hub, config, imap
        self._task: asyncio.Task[None] | None = None
        self.polls = 0  # completed passes over the mailbox (tests wait on it)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="inbound-imap")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a server down or hostile: retry with backoff
                log.warning("IMAP %s: %s; retrying in %.0fs", self.imap.host, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.imap.poll_seconds)

    async def _connect(self) -> aioimaplib.IMAP4:
        c = self.imap
        client: aioimaplib.IMAP4
        if c.tls == "tls":
            client = aioimaplib.IMAP4_SSL(host=c.host, port=c.imap_port, timeout=c.timeout,
                                          ssl_context=ssl.create_default_context())
        else:
            client = aioimaplib.IMAP4(host=c.host, port=c.imap_port, timeout=c.timeout)
        await client.wait_hello_from_server()
        _ok(await client.login(c.username, c.password.get_secret_value()), "LOGIN")
        return client

    async def _session(self) -> None:
        client = await self._connect()
        try:
            selected = _ok(await client.select(self.imap.mailbox), "SELECT")
            validity = next((m.group(1) for line in selected.lines
                             if (m := re.search(rb"UIDVALIDITY (\d+)", bytes(line)))), b"0").decode()
            idle = self.imap.idle and client.has_capability("IDLE")
            while True:
                await self._drain(client, validity)
                self.polls += 1
                if idle:
                    waiting = await client.idle_start(timeout=self.imap.poll_seconds)
                    with contextlib.suppress(asyncio.TimeoutError):
                        await client.wait_server_push(timeout=self.imap.poll_seconds)
                    client.idle_done()
                    await asyncio.wait_for(waiting, self.imap.timeout)
                else:
                    await asyncio.sleep(self.imap.poll_seconds)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.logout(), 5)

    async def _drain(self, client: aioimaplib.IMAP4, validity: str) -> None:
        found = _ok(await client.uid_search("ALL", charset=None), "UID SEARCH")
        uids = [u for line in found.lines[:1] for u in bytes(line).decode().split() if u.isdigit()]
        for uid in uids:
            fetched = _ok(await client.uid("fetch", uid, "(BODY.PEEK[])"), "UID FETCH")
            raw = next((bytes(line) for line in fetched.lines if isinstance(line, bytearray)), None)
            if raw is None:
                continue
            mail_from, rcpts = envelope_of(raw)
            key = f"imap:{self.imap.host}/{self.imap.mailbox}/{validity}/{uid}"[:255]
            ident = await store(self.hub, raw, via="imap", peer=self.imap.host, mail_from=mail_from,
                                rcpt_to=rcpts, max_bytes=self.config.max_bytes, source_key=key)
            log.info("inbound email %s stored from IMAP uid %s", ident, uid)
            # only now that it is stored: delete it from the mailbox
            _ok(await client.uid("store", uid, "+FLAGS.SILENT (\\Deleted)"), "UID STORE")
        if uids:
            _ok(await client.expunge(), "EXPUNGE")
