"""The API contract: declared bodies, one error envelope, and the served OpenAPI spec."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import Field

from hub.errors import Conflict, RateLimited
from hub.web import openapi
from hub.web.contract import ApiRoutes, Id, RequestModel, ResponseModel, endpoint_of
from hub.web.errors import error_middleware
from hub.web.openapi import build_spec


class NoteIn(RequestModel):
    practice_id: Id
    text: str = Field(max_length=20)


class NoteOut(ResponseModel):
    id: int
    text: str


notes = ApiRoutes(tag="notes")
stored: list[NoteIn] = []


@notes.post("/api/notes", summary="Add a note", body=NoteIn, response=NoteOut, status=201,
            public=True, max_body=1024, errors=(409, 429))
async def add_note(request: web.Request, body: NoteIn) -> NoteOut:
    if body.text == "dup":
        raise Conflict("a note with this text exists", field="text")
    if body.text == "slow down":
        raise RateLimited("too many notes", retry_after=7)
    stored.append(body)
    return NoteOut(id=len(stored), text=body.text)


@pytest.fixture
async def notes_client() -> Any:
    stored.clear()
    app = web.Application(middlewares=[error_middleware])
    app.add_routes(notes)
    openapi.install(app)
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    yield client
    await client.close()


async def _error(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}
    return body["error"]


async def test_declared_body_is_validated_before_the_handler(notes_client: TestClient) -> None:
    resp = await notes_client.post("/api/notes", json={"practice_id": 1, "text": "hi"})
    assert resp.status == 201 and await resp.json() == {"id": 1, "text": "hi"}

    err = await _error(await notes_client.post("/api/notes", json={"practice_id": 1, "text": "x",
                                                                   "colour": "red"}), 422)
    assert err["code"] == "unknown_field" and err["field"] == "colour"
    err = await _error(await notes_client.post("/api/notes", json={"practice_id": 1, "text": "x" * 21}), 422)
    assert err["field"] == "text"
    for bad in (10**23, 2**31, "abc", " 7", "٣", 0, -1, True):
        err = await _error(await notes_client.post("/api/notes", json={"practice_id": bad, "text": "x"}), 422)
        assert err["field"] == "practice_id", bad
    err = await _error(await notes_client.post("/api/notes", data=b"{not json"), 422)
    assert err["code"] == "invalid_json"
    err = await _error(await notes_client.post("/api/notes", json=[1, 2]), 422)
    assert err["code"] == "invalid_json"
    assert len(stored) == 1  # nothing refused was stored


async def test_body_over_its_limit_is_a_json_413(notes_client: TestClient) -> None:
    err = await _error(await notes_client.post("/api/notes", data=b'{"text": "' + b"x" * 5000 + b'"}',
                                               headers={"Content-Type": "application/json"}), 413)
    assert err["code"] == "too_large"
    assert stored == []


async def test_domain_errors_map_to_their_status(notes_client: TestClient) -> None:
    err = await _error(await notes_client.post("/api/notes", json={"practice_id": 1, "text": "dup"}), 409)
    assert err == {"code": "conflict", "message": "a note with this text exists", "field": "text"}
    resp = await notes_client.post("/api/notes", json={"practice_id": 1, "text": "slow down"})
    await _error(resp, 429)
    assert resp.headers["Retry-After"] == "7"


async def test_unknown_routes_and_methods_answer_in_the_envelope(notes_client: TestClient) -> None:
    err = await _error(await notes_client.get("/api/nothing-here"), 404)
    assert err["code"] == "not_found"
    resp = await notes_client.get("/api/notes")
    err = await _error(resp, 405)
    assert err["code"] == "method_not_allowed" and "POST" in resp.headers["Allow"]


async def test_spec_describes_declared_routes(notes_client: TestClient) -> None:
    resp = await notes_client.get("/api/openapi.json")
    assert resp.status == 200
    spec = await resp.json()
    assert spec["openapi"] == "3.1.0"
    op = spec["paths"]["/api/notes"]["post"]
    assert op["security"] == [] and op["tags"] == ["notes"]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/NoteIn"}
    note_in = spec["components"]["schemas"]["NoteIn"]
    assert note_in["additionalProperties"] is False
    assert note_in["properties"]["text"]["maxLength"] == 20
    assert set(op["responses"]) == {"201", "400", "409", "413", "422", "429", "500"}


async def test_hub_api_routes_are_all_in_the_spec(api: Any) -> None:
    """Every /api route of the hub's app is in the spec, with the router's path parameters."""
    resp = await api.get("/api/openapi.json")
    assert resp.status == 200
    spec = await resp.json()
    app = api.client.server.app
    assert spec == build_spec(app)
    for route in app.router.routes():
        info = route.resource.get_info()
        path = info.get("path") or info.get("formatter") or info.get("prefix") or ""
        if not path.startswith("/api") or route.method in ("HEAD", "OPTIONS"):
            continue
        oa_path = re.sub(r"\{([^}:]+)(:[^}]*)?\}", r"{\1}", path)
        assert oa_path in spec["paths"], path
        op = spec["paths"][oa_path][route.method.lower()]
        in_path = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert in_path == set(re.findall(r"\{([^}:]+)", path)), path
        ep = endpoint_of(route.handler)
        assert ep is not None, f"{route.method} {path} is not declared (hub.web.contract.ApiRoutes)"
        assert ep.path == path and ep.method == route.method
        assert not op.get("x-vethub-undeclared")


async def test_hub_reference_page_is_public(api: Any) -> None:
    # the vendored viewer: every script and style from this hub, the spec from this hub
    resp = await api.get("/api/docs")
    assert resp.status == 200 and resp.content_type == "text/html"
    text = await resp.text()
    assert "/static/api-docs/swagger-ui-bundle.js" in text and "//" not in text.replace("http://", "")
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    for asset, kind in (("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "css"),
                        ("init.js", "javascript"), ("LICENSE.txt", "text")):
        served = await api.get(f"/static/api-docs/{asset}")
        assert served.status == 200 and kind in served.content_type, asset
    # the same reference with no script at all
    resp = await api.get("/api/docs/reference")
    assert resp.status == 200 and resp.content_type == "text/html"
    text = await resp.text()
    assert "/api/practices/{id}" in text and "<script" not in text


async def test_core_routes_validate_filters_and_ids(api: Any) -> None:
    operator = await api.as_role("operator")
    err = await _error(await operator.get("/api/jobs?status=bogus"), 422)
    assert err["field"] == "status"
    err = await _error(await operator.get("/api/jobs?colour=red"), 422)
    assert err["code"] == "unknown_field" and err["field"] == "colour"
    for bad in ("99999999999999999999999", "abc", "%D9%A3"):
        err = await _error(await operator.get(f"/api/practices/{bad}"), 422)
        assert err["field"] == "id"
    await _error(await operator.get("/api/practices/12345"), 404)
    resp = await operator.get("/api/jobs?status=dead")
    assert resp.status == 200 and (await resp.json()) == {"items": []}


async def test_every_body_has_an_example_its_model_accepts(api: Any) -> None:
    """A reader or a generated client starts from the spec's examples: each must be valid."""
    spec = await (await api.get("/api/openapi.json")).json()
    app = api.client.server.app
    problems = []
    for route in app.router.routes():
        ep = endpoint_of(route.handler)
        if ep is None or not ep.path.startswith("/api"):
            continue
        op = spec["paths"][re.sub(r"\{([^}:]+)(:[^}]*)?\}", r"{\1}", ep.path)][ep.method.lower()]
        checks = []
        if ep.body is not None:
            checks.append((ep.body, op["requestBody"]["content"]["application/json"]))
        if ep.response is not None:
            checks.append((ep.response, op["responses"][str(ep.status)]["content"]["application/json"]))
        for model, media in checks:
            if "example" not in media:
                problems.append(f"{ep.method} {ep.path}: {model.__name__} has no example")
                continue
            # checked against the spec's own schema (the serialised names, as a client sees them)
            root = {**media["schema"], "components": spec["components"]}
            errors = list(jsonschema.Draft202012Validator(root).iter_errors(media["example"]))
            if errors:
                problems.append(f"{ep.method} {ep.path}: {model.__name__}: {errors[0].message}")
    assert problems == []


async def test_text_with_a_nul_character_is_refused(notes_client: TestClient, api: Any) -> None:
    err = await _error(await notes_client.post("/api/notes", json={"practice_id": 1, "text": "a\x00b"}), 422)
    assert "NUL" in err["message"] and stored == []
    operator = await api.as_role("operator")
    err = await _error(await operator.get("/api/events", params={"kind": "x\x00y"}), 422)
    assert "NUL" in err["message"]
