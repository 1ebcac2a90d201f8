"""The one place where the hub's errors become HTTP responses.

Every ``/api`` answer that is not a success has the same envelope::

    {"error": {"code": "not_found", "message": "case not found", "field": null}}

A :class:`hub.errors.DomainError` raised anywhere under a handler is rendered with its class's
status (see the tree in :mod:`hub.errors`); aiohttp's own refusals under ``/api`` (an unknown
route, a method the route does not take, a body over the size limit) are rendered in the same
envelope, so a client parses one shape whatever went wrong.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from hub.errors import DomainError, NotFound, RateLimited, Unavailable
from hub.ops.dbstate import is_unavailable
from hub.ops.metrics import DB_UNAVAILABLE

log = logging.getLogger(__name__)


class ApiError(DomainError):
    """A refusal raised by the web layer itself, with an explicit HTTP status."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message, code=code, field=field, status=status)

    def response(self) -> web.Response:
        return error_response(self)


def not_found(what: str) -> NotFound:
    return NotFound.of(what)


def envelope(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


def error_response(err: DomainError) -> web.Response:
    headers = {}
    if isinstance(err, RateLimited | Unavailable):
        headers["Retry-After"] = str(err.retry_after)
    return web.json_response(envelope(err.code, err.message, err.field), status=err.status,
                             headers=headers)


# aiohttp's own refusals, named as the API names them.
_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
    422: "invalid", 429: "rate_limited",
}


def _http_exception_response(exc: web.HTTPException) -> web.Response:
    code = _HTTP_CODES.get(exc.status, "http_error")
    if exc.status == 404:
        message = "no such route"
    elif exc.status == 405 and isinstance(exc, web.HTTPMethodNotAllowed):
        message = f"this route takes {', '.join(sorted(exc.allowed_methods))}"
    elif exc.status == 413 and isinstance(exc, web.HTTPRequestEntityTooLarge):
        message = exc.text or "request body too large"
    else:
        message = exc.reason
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    return web.json_response(envelope(code, message), status=exc.status, headers=headers)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except DomainError as err:
        return error_response(err)
    except json.JSONDecodeError as err:
        return error_response(ApiError(400, "invalid_json", f"request body is not valid JSON: {err}"))
    except web.HTTPException as exc:
        if request.path.startswith("/api") and exc.status >= 400:
            return _http_exception_response(exc)
        raise
    except Exception as err:
        if not request.path.startswith("/api"):
            raise
        if is_unavailable(err):  # the database is down: tell clients when to come back
            DB_UNAVAILABLE.labels("api").inc()
            log.warning("%s %s: database unreachable: %s", request.method, request.path, err)
            return error_response(Unavailable("the database is unreachable; retry shortly",
                                              code="database_unavailable", retry_after=5))
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(ApiError(500, "internal_error", "internal error; see the hub's log"))


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except json.JSONDecodeError as err:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {err.msg}") from err
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    return data
