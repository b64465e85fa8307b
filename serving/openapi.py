"""The service's OpenAPI document: BentoML's, corrected to match what the service does (served at /docs.json)."""

from __future__ import annotations

from typing import Any

from runtime.text import kept_character_pattern
from serving.explain_route import EXPLAIN_PATH
from serving.schemas import Metadata


def _error_response(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _mark_nullable(schema: Any) -> None:
    """BentoML flattens Optional[str] to {"type": "string", "default": null}; say null is allowed."""
    if isinstance(schema, dict):
        for prop in (schema.get("properties") or {}).values():
            if isinstance(prop, dict) and "default" in prop and prop["default"] is None and "type" in prop:
                prop["nullable"] = True
        for value in schema.values():
            _mark_nullable(value)
    elif isinstance(schema, list):
        for value in schema:
            _mark_nullable(value)


EXPLAIN_DESCRIPTION = ("true: each result also carries `text` (the cleaned text) and `evidence`, the spans of that "
                       "text that drove each of its directions; limits.max_explain_units in /metadata bounds the "
                       "texts (or a page's units with a direction) one such request may explain (more gets 413)")


def openapi_spec(service: Any, api_paths: tuple[str, ...], max_page_units: int,
                 hidden_paths: tuple[str, ...] = (EXPLAIN_PATH,)) -> dict:
    """BentoML's document for `service`, with our error schema, the text pattern, the page limit and /metadata.
    `hidden_paths`: routes only the service itself reaches (serving/explain_route.py), left out."""
    spec = service.openapi_spec.asdict()
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for path in hidden_paths:
        spec["paths"].pop(path, None)
        for name in [name for name in schemas if name.startswith(path.strip("/") + "__")]:  # its input model
            schemas.pop(name)
    schemas["Error"] = {
        "type": "object", "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "what went wrong and what to do"},
            "detail": {"type": "array", "items": {"type": "object"},
                       "description": "validation errors: loc (where), msg (what), type"},
        },
    }
    for name in ("InvalidArgument", "NotFound", "InternalServerError"):
        schemas.pop(name, None)
    schemas["Metadata"] = Metadata.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schemas["Metadata"].pop("$defs", {}))
    errors = {
        "400": _error_response("Bad Request: the message and detail say which field and what to fix"),
        "413": _error_response("Too Large: body over FIC_MAX_BODY_BYTES or a page over FIC_MAX_PAGE_UNITS units"),
        "415": _error_response("Unsupported Media Type: send JSON"),
        "429": _error_response("Too many requests in flight; retry after Retry-After seconds"),
        "503": _error_response("Overloaded; retry after Retry-After seconds"),
        "504": _error_response("The request took longer than the service timeout"),
        "500": _error_response("Internal Server Error"),
    }
    for path in api_paths:
        operation = spec["paths"][path]["post"]
        ok = operation["responses"].get(200, operation["responses"].get("200"))  # BentoML keys by int
        operation["responses"] = {"200": ok, **errors}
        operation["requestBody"]["required"] = True  # a missing body is a 400, as for any missing field
    texts = spec["paths"]["/classify"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    texts["properties"]["texts"]["items"]["pattern"] = kept_character_pattern()
    # /classify's batched API has one parameter (BentoML batches one); `explain` is served by a second API that
    # serving/explain_route.py routes to, so the document states it here.
    texts["properties"]["explain"] = {"type": "boolean", "default": False, "description": EXPLAIN_DESCRIPTION}
    page = spec["paths"]["/classify_page"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    page["properties"]["text"]["description"] += (f"; at most {max_page_units} units after splitting "
                                                  "(more gets 413)")
    if "explain" in page["properties"]:
        page["properties"]["explain"]["description"] = EXPLAIN_DESCRIPTION
    spec["paths"]["/metadata"] = {"get": {
        "tags": ["Service APIs"], "operationId": f"{service.name}__metadata",
        "description": "Model tag, labels, thresholds, preprocessing version, training metrics and limits.",
        "responses": {"200": {"description": "Successful Response",
                              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Metadata"}}}},
                      "503": _error_response("The service is starting")},
    }}
    _mark_nullable(spec)
    return spec
