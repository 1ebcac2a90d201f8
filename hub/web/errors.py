"""API errors rendered as JSON: {"error": {"code", "message", "field"}}."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    def response(self) -> web.Response:
        body = {"error": {"code": self.code, "message": self.message, "field": self.field}}
        return web.json_response(body, status=self.status)


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as err:
        return err.response()
    except json.JSONDecodeError as err:
        return ApiError(400, "invalid_json", f"request body is not valid JSON: {err}").response()
    except web.HTTPException:
        raise
    except Exception:
        if not request.path.startswith("/api"):
            raise
        log.exception("unhandled error in %s %s", request.method, request.path)
        return ApiError(500, "internal_error", "internal error; see the hub's log").response()


async def json_body(request: web.Request) -> dict:
    try:
        data = await request.json()
    except json.JSONDecodeError as err:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {err.msg}") from err
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    return data
