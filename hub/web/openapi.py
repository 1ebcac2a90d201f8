"""OpenAPI 3.1 for the hub's API, generated from the route table and its declared models.

The spec is built once, when the app starts (every plugin's routes are in the router by then),
and served at ``GET /api/openapi.json`` without a token. ``GET /api/docs`` renders the same spec
as a readable reference page, with no script and nothing from another host.

A route under ``/api`` that was not declared through :class:`hub.web.contract.ApiRoutes` still
appears (with its path parameters, and ``x-vethub-undeclared: true``) so that nothing a client
can call is missing from the spec; the contract tests list those routes.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from hub import __version__
from hub.web.auth import public
from hub.web.contract import ENDPOINT_ATTR, Endpoint, endpoint_of
from hub.web.examples import example_of
from hub.web.keys import HUB_KEY

SPEC_KEY: web.AppKey[dict[str, Any]] = web.AppKey("vethub_openapi", dict)

BEARER = "bearerToken"

# Webhook signature schemes and any other scheme a plugin needs: name -> OpenAPI scheme object.
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    BEARER: {"type": "http", "scheme": "bearer",
             "description": "An API token (`vh_...`) from `vethub admin create-token` or `POST /api/login`."},
}

_STATUS_TEXT = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No content", 400: "Bad request",
    401: "No or bad token", 403: "Forbidden for this caller", 404: "Not found (or another tenant's)",
    405: "Method not allowed", 409: "Conflict with the current state", 410: "Gone",
    413: "Body too large", 422: "Invalid input; `field` names it", 429: "Rate limited; see Retry-After",
    500: "Internal error", 503: "A dependency is down; see Retry-After",
}

_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def declare_security_scheme(name: str, scheme: dict[str, Any]) -> None:
    """Add a security scheme (e.g. a webhook's signature header) to every spec built later."""
    SECURITY_SCHEMES[name] = scheme


def _openapi_path(path: str) -> str:
    return _PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object", "required": ["error"], "additionalProperties": False,
        "properties": {"error": {
            "type": "object", "required": ["code", "message", "field"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                           "field": {"type": ["string", "null"]}},
        }},
    }


def _params(ep: Endpoint | None, path: str, schemas: dict[tuple[Any, str], Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    names = [m.group(1) for m in _PARAM.finditer(path)]
    path_model = ep.path_params if ep else None
    for name in names:
        schema: dict[str, Any] = {"type": "string"}
        if path_model is not None and name in path_model.model_fields:
            schema = schemas[(path_model, "inline")]["properties"].get(name, schema)
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    if ep and ep.query is not None:
        qs = schemas[(ep.query, "inline")]
        required = set(qs.get("required", []))
        for name, schema in qs.get("properties", {}).items():
            params.append({"name": name, "in": "query", "required": name in required, "schema": schema})
    return params


def _made(model: Any, mode: str, schemas: dict[tuple[Any, str], Any]) -> Any:
    return example_of(schemas[(model, mode)], schemas[("$defs", "all")])


def _json_content(schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"application/json": media}


def _operation(ep: Endpoint | None, method: str, path: str,
               schemas: dict[tuple[Any, str], Any]) -> dict[str, Any]:
    if ep is None:
        op: dict[str, Any] = {"summary": f"{method} {path}", "tags": ["undeclared"],
                              "x-vethub-undeclared": True,
                              "responses": {"default": {"description": "see docs/api.md"}}}
        op["parameters"] = _params(None, path, schemas)
        op["security"] = [{BEARER: []}]
        return op
    op = {"operationId": ep.handler_name, "summary": ep.summary, "tags": [ep.tag],
          "parameters": _params(ep, path, schemas)}
    if ep.description:
        op["description"] = ep.description
    if ep.body is not None:
        op["requestBody"] = {"required": True, "content": _json_content(
            schemas[(ep.body, "validation")], ep.examples.get("request", _made(ep.body, "validation", schemas)))}
    ok: dict[str, Any] = {"description": _STATUS_TEXT.get(ep.status, "Success")}
    if ep.response is not None:
        ok["content"] = _json_content(schemas[(ep.response, "serialization")],
                                      ep.examples.get("response", _made(ep.response, "serialization", schemas)))
    elif ep.content_type != "application/json":
        ok["content"] = {ep.content_type: {"schema": {"type": "string", "format": "binary"}}}
    responses: dict[str, Any] = {str(ep.status): ok}
    statuses = set(ep.errors) | {500}
    if ep.body is not None or ep.query is not None or ep.path_params is not None:
        statuses |= {422}
    if ep.body is not None:
        statuses |= {413}
    if not ep.public:
        statuses |= {401}
    for status in sorted(statuses):
        responses[str(status)] = {"description": _STATUS_TEXT.get(status, "Error"),
                                  "content": _json_content({"$ref": "#/components/schemas/Error"})}
    # The HTTP layer refuses a request it cannot parse (a request line or header over its size
    # limit) before any route sees it, as plain text: documented, with no body promised.
    responses.setdefault("400", {"description": "The HTTP layer could not read the request "
                                                "(a request line or header too long, bad framing)."})
    op["responses"] = responses
    if ep.security:
        op["security"] = [{name: []} for name in ep.security]
    elif ep.public:
        op["security"] = []
    else:
        op["security"] = [{BEARER: []}]
    return op


def _collect_models(eps: list[Endpoint]) -> list[tuple[type[BaseModel], Any]]:
    seen: dict[tuple[Any, str], None] = {}
    for ep in eps:
        for model in (ep.body, ep.query, ep.path_params):
            if model is not None:
                seen[(model, "validation")] = None
        if ep.response is not None:
            seen[(ep.response, "serialization")] = None
    return list(seen)


def build_spec(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document for every route under /api in ``app``'s router."""
    found: list[tuple[str, str, Endpoint | None]] = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if not path or not path.startswith("/api") or route.method in ("HEAD", "OPTIONS", "*"):
            continue
        found.append((route.method, path, endpoint_of(route.handler)))
    declared = [ep for _, _, ep in found if ep is not None]
    keys = _collect_models(declared)
    refs, defs = models_json_schema(keys, ref_template="#/components/schemas/{model}")
    all_defs = defs.get("$defs", {})
    schemas: dict[tuple[Any, str], Any] = {("$defs", "all"): all_defs}
    for key in keys:
        ref = refs[key]
        # Bodies and responses point into components; a query or path model is spread into
        # parameters, so the generator needs its own properties.
        schemas[key] = ref
        if "$ref" in ref:
            schemas[(key[0], "inline")] = all_defs[ref["$ref"].rsplit("/", 1)[-1]]
        else:
            schemas[(key[0], "inline")] = ref
    paths: dict[str, dict[str, Any]] = {}
    for method, path, ep in found:
        oa_path = _openapi_path(path)
        paths.setdefault(oa_path, {})[method.lower()] = _operation(ep, method, path, schemas)
    schemes = dict(SECURITY_SCHEMES)
    hub = app.get(HUB_KEY)
    for channel in (hub.channels.values() if hub is not None else ()):
        schemes.update(getattr(channel, "security_schemes", None) or {})  # webhook signatures
    components: dict[str, Any] = {"schemas": dict(all_defs), "securitySchemes": schemes}
    components["schemas"]["Error"] = _error_schema()
    tags = sorted({ep.tag for ep in declared})
    return {
        "openapi": "3.1.0",
        "info": {"title": "VetHub API", "version": __version__,
                 "description": "The hub's HTTP API. Errors share one envelope: "
                                "`{\"error\": {\"code\", \"message\", \"field\"}}`. See docs/api.md."},
        "servers": [{"url": "/"}],
        "tags": [{"name": t} for t in tags],
        "paths": dict(sorted(paths.items())),
        "components": components,
    }


def spec_of(app: web.Application) -> dict[str, Any]:
    """The app's spec, built on first use (the router is frozen by then) and kept."""
    spec = app[SPEC_KEY]
    if not spec:
        spec.update(build_spec(app))
    return spec


routes = web.RouteTableDef()


@routes.get("/api/openapi.json")
@public
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(spec_of(request.app))


def _render_html(spec: dict[str, Any]) -> str:
    out = ["<!doctype html><html lang=en><head><meta charset=utf-8><title>VetHub API reference</title>",
           "<meta name=viewport content='width=device-width, initial-scale=1'>",
           "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#1a1a1a}"
           "code,pre{font:13px ui-monospace,monospace;background:#f3f3f3;padding:.1rem .3rem}"
           "pre{padding:.6rem;overflow:auto}h2{border-bottom:1px solid #ccc}"
           ".m{display:inline-block;min-width:4.5rem;font-weight:700}</style></head><body><main>",
           f"<h1>{html.escape(spec['info']['title'])} {html.escape(spec['info']['version'])}</h1>",
           f"<p>{html.escape(spec['info']['description'])} "
           "The machine-readable spec: <a href='/api/openapi.json'>/api/openapi.json</a>.</p>"]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            by_tag.setdefault(op["tags"][0], []).append((method.upper(), path, op))
    for tag in sorted(by_tag):
        out.append(f"<section><h2 id='{html.escape(tag)}'>{html.escape(tag)}</h2>")
        for method, path, op in by_tag[tag]:
            out.append(f"<h3><span class=m>{method}</span> <code>{html.escape(path)}</code></h3>")
            out.append(f"<p>{html.escape(op.get('summary', ''))}</p>")
            if op.get("description"):
                out.append(f"<p>{html.escape(op['description'])}</p>")
            if op.get("parameters"):
                out.append("<table><thead><tr><th scope=col>parameter</th><th scope=col>in</th>"
                           "<th scope=col>schema</th></tr></thead><tbody>")
                for p in op["parameters"]:
                    out.append(f"<tr><td><code>{html.escape(p['name'])}</code></td><td>{p['in']}</td>"
                               f"<td><code>{html.escape(json.dumps(p['schema']))}</code></td></tr>")
                out.append("</tbody></table>")
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                out.append(f"<p>Body:</p><pre>{html.escape(json.dumps(body['schema'], indent=1))}</pre>")
            statuses = ", ".join(op.get("responses", {}))
            out.append(f"<p>Answers: {html.escape(statuses)}</p>")
        out.append("</section>")
    out.append("<section><h2>Schemas</h2>")
    for name, schema in sorted(spec["components"]["schemas"].items()):
        out.append(f"<h3 id='schema-{html.escape(name)}'>{html.escape(name)}</h3>"
                   f"<pre>{html.escape(json.dumps(schema, indent=1))}</pre>")
    out.append("</section></main></body></html>")
    return "".join(out)


STATIC = Path(__file__).parent / "static" / "api-docs"

# The viewer runs the vendored bundle only: scripts, styles and the spec from this origin.
VIEWER_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
              "img-src 'self' data:; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'")

_VIEWER = """<!doctype html><html lang=en><head><meta charset=utf-8><title>VetHub API</title>
<meta name=viewport content='width=device-width, initial-scale=1'>
<link rel=stylesheet href='/static/api-docs/swagger-ui.css'></head>
<body><main><div id=swagger-ui></div>
<noscript><h1>VetHub API</h1><p>This viewer needs JavaScript; the same reference without it:
<a href='/api/docs/reference'>/api/docs/reference</a>, and the spec itself at
<a href='/api/openapi.json'>/api/openapi.json</a>.</p></noscript></main>
<script src='/static/api-docs/swagger-ui-bundle.js'></script>
<script src='/static/api-docs/init.js'></script></body></html>"""


@routes.get("/api/docs")
@public
async def api_docs(request: web.Request) -> web.Response:
    """The interactive reference: Swagger UI (vendored, served from this hub) on the spec."""
    return web.Response(text=_VIEWER, content_type="text/html",
                        headers={"Content-Security-Policy": VIEWER_CSP})


@routes.get("/api/docs/reference")
@public
async def api_reference(request: web.Request) -> web.Response:
    """The same reference rendered by the hub: no script, for any browser or a reader."""
    return web.Response(text=_render_html(spec_of(request.app)), content_type="text/html")


routes.static("/static/api-docs/", STATIC)


setattr(openapi_json, ENDPOINT_ATTR, Endpoint(
    method="GET", path="/api/openapi.json", handler_name="openapi_json", tag="meta",
    summary="This API's OpenAPI 3.1 document", public=True))
setattr(api_docs, ENDPOINT_ATTR, Endpoint(
    method="GET", path="/api/docs", handler_name="api_docs", tag="meta",
    summary="This API's reference, in the vendored Swagger UI", public=True, content_type="text/html"))
setattr(api_reference, ENDPOINT_ATTR, Endpoint(
    method="GET", path="/api/docs/reference", handler_name="api_reference", tag="meta",
    summary="This API's reference, as a page without script", public=True, content_type="text/html"))


def install(app: web.Application) -> None:
    """Serve the spec and the reference page from ``app``."""
    app[SPEC_KEY] = {}
    app.add_routes(routes)
