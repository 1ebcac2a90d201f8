"""The accounts domain's refusals: part of the hub's error tree (:mod:`hub.errors`)."""

from __future__ import annotations

from hub.errors import DomainError


class AccountsError(DomainError):
    """A refusal with an HTTP status, a stable code, a message and the field at fault."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message, code=code, field=field, status=status)
