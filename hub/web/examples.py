"""Examples for the API description, made from a JSON schema when a route gives none.

Every request and response body in ``/api/openapi.json`` carries an example a reader (or a
client generator) can start from. A route may declare its own (``examples={"request": ...}``);
otherwise one is built here from the body's schema: required fields only, each with the
smallest value its constraints allow. A test validates every example against its model.
"""

from __future__ import annotations

from typing import Any

_FORMATS = {"email": "owner@example.org", "date": "2026-12-07", "date-time": "2026-12-07T09:00:00Z",
            "uri": "https://example.org/", "uuid": "00000000-0000-4000-8000-000000000000"}


def example_of(schema: dict[str, Any], defs: dict[str, Any], depth: int = 0) -> Any:
    """A value valid against ``schema`` (``$ref``s resolved in ``defs``)."""
    if depth > 12:
        return None
    if "$ref" in schema:
        return example_of(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, depth + 1)
    if "example" in schema:
        return schema["example"]
    if schema.get("examples"):
        return schema["examples"][0]
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return example_of(options[0], defs, depth + 1)
    if "allOf" in schema:
        return example_of(schema["allOf"][0], defs, depth + 1)
    return _by_type(schema, defs, depth)


def _by_type(schema: dict[str, Any], defs: dict[str, Any], depth: int) -> Any:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {name: example_of(props[name], defs, depth + 1)
                for name in schema.get("required", []) if name in props}
    if kind == "array":
        count = schema.get("minItems", 0)
        return [example_of(schema.get("items", {}), defs, depth + 1) for _ in range(count)]
    if kind == "integer":
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0) + 1 if "exclusiveMinimum" in schema else 1)
        return max(int(low), 1) if schema.get("maximum", 1) >= 1 else int(schema.get("maximum", 0))
    if kind == "number":
        return float(schema.get("minimum", 1.0))
    if kind == "boolean":
        return False
    if kind == "string":
        if schema.get("format") in _FORMATS:
            return _FORMATS[schema["format"]]
        text = "example"
        low, high = schema.get("minLength", 0), schema.get("maxLength", 1000)
        text = (text * (low // len(text) + 1))[:max(low, min(len(text), high))]
        return text
    return None
