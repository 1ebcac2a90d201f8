"""Email channel that writes each message into a local Maildir: the embedded default.

``[email] backend = "maildir"`` (the default) selects it; ``maildir_path`` (relative paths are
under the hub's data_dir) is created on start-up. Any mail client or ``python -m mailbox`` can
read the result. Messages are built exactly as the SMTP channel builds them (same headers,
Message-ID, DKIM when configured), so what a practice sees locally is what SMTP would send.

Delivery into a Maildir is the Maildir protocol: write into ``tmp/``, fsync, rename into
``new/`` — a crash never leaves a half-written message visible. File I/O runs in a thread.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from itertools import count
from pathlib import Path

from aiohttp import web

from hub.hookspecs import hookimpl
from hub.messaging.channel import ChannelError, OutboundMessage, SendResult
from hub.messaging.statuses import CommStatus
from plugins.channels.email import DkimSigner, EmailConfig, MimeBuilder, email_config, hub_secret

_seq = count()


class MaildirEmailChannel:
    """The ``email`` channel writing to a Maildir."""

    name = "email"

    def __init__(
        self,
        config: EmailConfig,
        path: Path,
        *,
        secret: bytes = b"",
        dkim_key: bytes | None = None,
    ) -> None:
        self.config = config
        self.path = path
        self.builder = MimeBuilder(config, secret=secret)
        self.signer = (
            DkimSigner(config.dkim_domain or "", config.dkim_selector or "", dkim_key)
            if dkim_key
            else None
        )
        for sub in ("tmp", "new", "cur"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        self._host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")

    def _unique(self) -> str:
        now = time.time()
        return f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(_seq)}.{self._host}"

    def _deliver(self, data: bytes) -> str:
        name = self._unique()
        tmp = self.path / "tmp" / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data.replace(b"\r\n", b"\n"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self.path / "new" / name)
        return name

    async def send(self, message: OutboundMessage) -> SendResult:
        message_id = self.builder.message_id(message)
        data = self.builder.build(message, message_id)
        if self.signer is not None:
            data = self.signer.sign(data)
        try:
            name = await asyncio.to_thread(self._deliver, data)
        except OSError as exc:
            raise ChannelError(
                f"cannot write to maildir {self.path}: {exc}", reason="transient", permanent=False
            ) from exc
        return SendResult(provider_id=message_id, status=CommStatus.SENT, detail={"maildir_file": name})

    def routes(self) -> list[web.RouteDef]:
        return []

    async def health(self) -> tuple[bool, str]:
        ok = os.access(self.path / "new", os.W_OK)
        return ok, f"maildir {self.path} {'writable' if ok else 'not writable'}"

    async def close(self) -> None:
        return None


@hookimpl
def vethub_channels(hub) -> list[MaildirEmailChannel]:
    config = email_config(hub)
    if config is None:
        config = EmailConfig()  # no [email] section: the embedded default
    if config.backend != "maildir":
        return []
    path = Path(config.maildir_path)
    if not path.is_absolute():
        path = Path(hub.data_dir) / path
    base = Path(hub.config_path).parent if hub.config_path else None
    return [
        MaildirEmailChannel(
            config, path, secret=hub_secret(hub), dkim_key=config.load_dkim_key(base)
        )
    ]
