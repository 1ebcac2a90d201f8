"""One error type for the accounts domain's services; the API renders it as ApiError."""

from __future__ import annotations


class AccountsError(Exception):
    """A refusal with an HTTP status, a stable code, a message and the field at fault."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
