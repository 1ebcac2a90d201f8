"""Declared API routes: pydantic models for every body, query, path and response.

A route module declares its routes on an :class:`ApiRoutes` table instead of a bare
``web.RouteTableDef``; the table parses and validates the request before the handler runs, and
remembers the declaration so that :mod:`hub.web.openapi` can describe the route::

    routes = ApiRoutes(tag="cases")

    class CaseCreate(RequestModel):
        study_id: Id
        question: str = Field(max_length=4000)

    @routes.post("/api/cases", body=CaseCreate, response=CaseOut, status=201,
                 summary="Submit a case", errors=(403, 404, 409, 422))
    async def create_case(request: web.Request, body: CaseCreate) -> CaseOut:
        ...

The handler receives the parsed models as keyword arguments (``body``, ``query``, ``path``)
and may return a pydantic model, a dict or list (sent as JSON with the declared status), or any
``web.StreamResponse`` it built itself (a CSV, a PDF, a zip).

Request models refuse unknown fields (422 naming them); bad values answer 422 naming the field;
a body over ``max_body`` answers 413. Plugins declare their routes the same way and return the
table from ``vethub_web_routes``; the spec then includes them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import to_jsonable_python

from hub.db.types import ID_MAX
from hub.errors import Invalid, TooLarge

DB_INT_MAX = ID_MAX



def _id_value(value: Any) -> Any:
    # JSON ids are integers; path and query ids arrive as text and must be plain ASCII digits
    # (Python's int() would take " 7", "٣" or "1_000").
    if isinstance(value, bool):
        raise ValueError("must be an integer id")
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()) or len(value) > 19:
            raise ValueError("must be an integer id")
        return int(value)
    return value


# An object id in a path, a query or a body: a positive integer within the ids' INTEGER range.
# Anything else (a 23-digit number, "abc", " 7", "٣", true) answers 422 naming the field, never 500.
Id = Annotated[int, BeforeValidator(_id_value), Field(ge=1, le=DB_INT_MAX, strict=True)]

DEFAULT_MAX_BODY = 64 * 1024

Handler = Callable[..., Awaitable[Any]]


def _nul_at(value: Any, where: str) -> str | None:
    """The path of the first string holding a NUL character, or None."""
    if isinstance(value, str):
        return where if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _nul_at(key, where) or _nul_at(item, f"{where}.{key}" if where else str(key))
            if found is not None:
                return found
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _nul_at(item, f"{where}.{i}" if where else str(i))
            if found is not None:
                return found
    return None


class RequestModel(BaseModel):
    """Base for request bodies, queries and paths: unknown fields are refused, and no text may
    hold a NUL character (PostgreSQL cannot store one; no field means one)."""

    model_config = ConfigDict(extra="forbid", str_max_length=10_000)

    @model_validator(mode="before")
    @classmethod
    def _refuse_nul(cls, data: Any) -> Any:
        found = _nul_at(data, "")
        if found is not None:
            raise ValueError(f"{found or 'text'} may not contain a NUL character")
        return data


class ResponseModel(BaseModel):
    """Base for response bodies."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Endpoint:
    """What one route declares; read by the OpenAPI generator and the contract tests."""

    method: str
    path: str
    handler_name: str
    tag: str
    summary: str
    description: str = ""
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    path_params: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    public: bool = False
    #: the handler reads through :func:`hub.web.auth.read_as_caller`, which checks the token in
    #: the same hand-off to the database as the read (one hand-off per request, not two); it
    #: may not act or send anything before that read (the token is not checked yet)
    auth_in_read: bool = False
    security: tuple[str, ...] = ()
    content_type: str = "application/json"
    max_body: int = DEFAULT_MAX_BODY
    examples: dict[str, Any] = field(default_factory=dict)


ENDPOINT_ATTR = "vethub_endpoint"


def endpoint_of(handler: Any) -> Endpoint | None:
    target = getattr(handler, "__func__", handler)
    return getattr(target, ENDPOINT_ATTR, None)


def _field_name(loc: Sequence[int | str], where: str) -> str:
    parts = [str(p) for p in loc]
    return ".".join(parts) if parts else where


def invalid_from(err: ValidationError, where: str) -> Invalid:
    """One 422 naming the first field at fault; the message lists every problem."""
    problems = err.errors(include_url=False)
    first = problems[0]
    unknown = [_field_name(p["loc"], where) for p in problems if p["type"] == "extra_forbidden"]
    if unknown:
        return Invalid(f"unknown field(s) in the {where}: {', '.join(unknown)}",
                       code="unknown_field", field=unknown[0])
    message = "; ".join(f"{_field_name(p['loc'], where)}: {p['msg']}" for p in problems[:10])
    return Invalid(message, code="invalid", field=_field_name(first["loc"], where))


def _query_data(request: web.Request, model: type[BaseModel]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        info = model.model_fields.get(key)
        is_list = info is not None and getattr(info.annotation, "__origin__", None) in (list, tuple)
        data[key] = values if is_list or len(values) > 1 else values[0]
    return data


async def _read_body(request: web.Request, ep: Endpoint) -> Any:
    if request.content_length is not None and request.content_length > ep.max_body:
        raise TooLarge(f"request body is over {ep.max_body} bytes", code="too_large")
    # StreamReader.read(n) returns what has arrived so far, not n bytes: read to the end.
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > ep.max_body:
            raise TooLarge(f"request body is over {ep.max_body} bytes", code="too_large")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise Invalid(f"request body is not valid JSON: {err}", code="invalid_json") from None


async def parse_request(request: web.Request, ep: Endpoint) -> dict[str, Any]:
    """The handler's keyword arguments, validated against the declaration."""
    kwargs: dict[str, Any] = {}
    if ep.path_params is not None:
        try:
            kwargs["path"] = ep.path_params.model_validate(dict(request.match_info))
        except ValidationError as err:
            raise invalid_from(err, "path") from None
    if ep.query is not None:
        try:
            kwargs["query"] = ep.query.model_validate(_query_data(request, ep.query))
        except ValidationError as err:
            raise invalid_from(err, "query") from None
    if ep.body is not None:
        data = await _read_body(request, ep)
        if not isinstance(data, dict):
            raise Invalid("request body must be a JSON object", code="invalid_json")
        try:
            kwargs["body"] = ep.body.model_validate(data)
        except ValidationError as err:
            raise invalid_from(err, "body") from None
    return kwargs


@dataclass(frozen=True, slots=True)
class Prebuilt:
    """A result already in the declared response's shape, built by the handler from typed
    columns: sent as JSON as it is, without validating it into the model first.

    For hot list routes, where validating every row cost more than reading it. The JSON is the
    same pydantic would write for the model (pydantic's own serializer); the contract tests
    check these routes' answers against the declared model, so a drift still fails a test.
    """

    payload: dict[str, Any]


def prebuilt_json(payload: dict[str, Any]) -> bytes:
    """A :class:`Prebuilt` payload as the bytes pydantic's serializer writes, by orjson: five
    times faster on a page of 200 cases. The two agree on the types such rows hold (str, int,
    float, bool, None, lists, dicts, enums, datetimes with UTC as ``Z``); anything else goes
    through pydantic (``default``). ``tests/hub/web/test_prebuilt.py`` compares the bytes."""
    return orjson.dumps(payload, option=orjson.OPT_UTC_Z, default=to_jsonable_python)


def render(result: Any, ep: Endpoint) -> web.StreamResponse:
    """The handler's result as a response; a dict is checked against the declared response model."""
    if isinstance(result, web.StreamResponse):
        return result
    if isinstance(result, Prebuilt):
        return web.Response(body=prebuilt_json(result.payload), status=ep.status,
                            content_type="application/json", charset="utf-8")
    if isinstance(result, BaseModel):
        return web.json_response(text=result.model_dump_json(), status=ep.status)
    if ep.response is not None:
        # A dict keeps its shape: a key the handler left out (an optional section absent for
        # this object) stays out, rather than appearing as null.
        checked = ep.response.model_validate(result)
        return web.json_response(text=checked.model_dump_json(exclude_unset=True), status=ep.status)
    return web.json_response(result, status=ep.status)


class ApiRoutes(Iterable[web.AbstractRouteDef]):
    """A route table whose routes are declared; pass it to ``app.add_routes``."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self._table = web.RouteTableDef()

    def __iter__(self) -> Iterator[web.AbstractRouteDef]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def route(self, method: str, path: str, *, summary: str, **declared: Any) -> Callable[[Handler], Handler]:
        def decorate(handler: Handler) -> Handler:
            ep = Endpoint(method=method.upper(), path=path, handler_name=handler.__name__,
                          tag=declared.pop("tag", self.tag), summary=summary,
                          description=declared.pop("description", None) or (handler.__doc__ or "").strip(),
                          **declared)

            @functools.wraps(handler)
            async def wrapper(request: web.Request) -> web.StreamResponse:
                kwargs = await parse_request(request, ep)
                return render(await handler(request, **kwargs), ep)

            setattr(wrapper, ENDPOINT_ATTR, ep)
            if ep.public:
                wrapper.vethub_public = True  # type: ignore[attr-defined]
            if ep.auth_in_read:
                wrapper.vethub_auth_in_read = True  # type: ignore[attr-defined]
            self._table.route(ep.method, path)(wrapper)
            return handler

        return decorate

    def get(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **kw)
