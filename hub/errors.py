"""The hub's one error tree.

Every error the hub raises on purpose descends from :class:`VetHubError`::

    VetHubError
    ├── ConfigError            the configuration is wrong (start-up, check-config)
    ├── PluginError            a plugin failed to load or start
    └── DomainError            a request the domain refuses; carries a stable ``code``
        ├── Invalid            422  the input is wrong (``field`` names it)
        ├── Unauthorized       401  no or bad credentials
        ├── Forbidden          403  the caller may not do this (its reason in ``code``)
        ├── NotFound           404  missing, or another tenant's (never told apart)
        ├── Conflict           409  the state does not allow it (a duplicate, a race lost)
        ├── Gone               410  a link or object that existed and no longer does
        ├── TooLarge           413  a body or a field over its limit
        ├── RateLimited        429  too many attempts; ``retry_after`` seconds
        └── Unavailable        503  a dependency (the database) is down; ``retry_after``

Domain services raise these and never build HTTP responses; the web layer maps a
``DomainError`` to its status in one place (:mod:`hub.web.errors`), by ``http_status``. A
domain error that needs a status outside the tree (rare: a legacy code kept for API
compatibility) sets ``http_status`` on the instance.
"""

from __future__ import annotations

from typing import ClassVar


class VetHubError(Exception):
    """Root of every error the hub raises deliberately."""


class ConfigError(VetHubError):
    """The configuration is invalid; the message names the file, key and remedy."""


class PluginError(VetHubError):
    """A plugin could not be loaded, registered or started."""


class DomainError(VetHubError):
    """A refusal by a domain service: a stable machine ``code``, a message and the field at fault."""

    http_status: ClassVar[int] = 400
    default_code: ClassVar[str] = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.field = field
        if status is not None:
            # Instance override for a legacy status; the class keeps its documented one.
            self.http_status = status  # type: ignore[misc]

    @property
    def status(self) -> int:
        return self.http_status


class Invalid(DomainError):
    """The request is well formed but its content is refused (HTTP 422)."""
    http_status = 422
    default_code = "invalid"


class Unauthorized(DomainError):
    """The caller is not signed in or its credentials are not valid (HTTP 401)."""
    http_status = 401
    default_code = "unauthorized"


class Forbidden(DomainError):
    """The caller is known but may not do this (HTTP 403)."""
    http_status = 403
    default_code = "forbidden"


class NotFound(DomainError):
    """Missing, or belonging to another tenant: the two answer alike on purpose."""

    http_status = 404
    default_code = "not_found"

    @classmethod
    def of(cls, what: str) -> NotFound:
        return cls(f"{what} not found")


class Conflict(DomainError):
    """The request clashes with the current state, e.g. a duplicate (HTTP 409)."""
    http_status = 409
    default_code = "conflict"


class Gone(DomainError):
    """The thing existed but is no longer available, e.g. an expired link (HTTP 410)."""
    http_status = 410
    default_code = "gone"


class TooLarge(DomainError):
    """The request body or upload is over its limit (HTTP 413)."""
    http_status = 413
    default_code = "too_large"


class RateLimited(DomainError):
    """Too many requests from this caller; retry_after says when to try again (HTTP 429)."""
    http_status = 429
    default_code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int = 60, code: str | None = None,
                 field: str | None = None) -> None:
        super().__init__(message, code=code, field=field)
        self.retry_after = retry_after


class Unavailable(DomainError):
    """A dependency (the database) is down; retry_after says when to try again (HTTP 503)."""
    http_status = 503
    default_code = "unavailable"

    def __init__(self, message: str, *, retry_after: int = 5, code: str | None = None,
                 field: str | None = None) -> None:
        super().__init__(message, code=code, field=field)
        self.retry_after = retry_after


_BY_STATUS: dict[int, type[DomainError]] = {
    cls.http_status: cls
    for cls in (Invalid, Unauthorized, Forbidden, NotFound, Conflict, Gone, TooLarge, RateLimited,
                Unavailable)
}


def error_for_status(status: int, message: str, *, code: str | None = None,
                     field: str | None = None) -> DomainError:
    """The tree's class for an HTTP status (for code that still thinks in statuses)."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        return DomainError(message, code=code, field=field, status=status)
    return cls(message, code=code, field=field)
