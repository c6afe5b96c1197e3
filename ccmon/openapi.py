"""The OpenAPI description of ccmon's HTTP API, served at ``/api/openapi.json``."""

from __future__ import annotations

from typing import Any

import msgspec

from ccmon import __version__
from streams.events import AnyEvent

_RESULT = {
    "type": "object",
    "required": ["line", "status"],
    "properties": {
        "line": {"type": ["integer", "null"], "minimum": 1,
                 "description": "1-based line (NDJSON) or 1 for a single event; null for a webhook payload the "
                                "mapping could not (fully) turn into events (reason mapping_problem)"},
        "status": {"type": "string", "enum": ["accepted", "rejected"]},
        "event_id": {"type": "string"},
        "type": {"type": "string", "description": "the event type, e.g. call.offered"},
        "reason": {"type": "string", "description": "stable reject code, e.g. invalid_json, missing_field, "
                                                     "mapping_problem"},
        "detail": {"type": "string"},
    },
}
_ANSWER = {
    "type": "object",
    "required": ["accepted", "rejected", "results"],
    "properties": {
        "accepted": {"type": "integer"},
        "rejected": {"type": "integer"},
        "results": {"type": "array", "items": _RESULT},
    },
}
_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "the request is malformed", 401: "no or wrong bearer token", 404: "unknown mapping",
            413: "the body is larger than CCMON_INGEST_MAX_BYTES",
            429: "over the token's rate (CCMON_INGEST_RATE events/s); see Retry-After",
            503: "the broker or Redis is unavailable; retry"}
    return {str(c): {"description": text[c], "content": {"application/json": {"schema": _ERROR}}} for c in codes}


def _event_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """Contract v1 as JSON Schema, from the event types themselves: one event (any type), and each type."""
    (event,), types = msgspec.json.schema_components([AnyEvent], ref_template="#/components/schemas/{name}")
    for schema in types.values():
        # The decoder also takes RFC 3339 text with an offset for `ts` (streams/events.py, _decode_text_ts).
        ts = schema["properties"]["ts"]
        schema["properties"]["ts"] = {"anyOf": [ts, {"type": "string", "format": "date-time"}],
                                      "description": "epoch seconds, or RFC 3339 with an offset (2000..2100)"}
    return event, types


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document."""
    event, event_types = _event_schemas()
    ingest_responses = {
        "200": {"description": "every line accepted (published and acknowledged by the broker)",
                "content": {"application/json": {"schema": _ANSWER}}},
        "207": {"description": "some or all lines rejected (each with its reason); accepted ones were published, "
                               "rejected ones dead-lettered",
                "content": {"application/json": {"schema": _ANSWER}}},
        **_errors(400, 401, 413, 429, 503),
    }
    return {
        "openapi": "3.1.0",  # JSON Schema 2020-12, as msgspec writes the event schemas
        "info": {"title": "ccmon", "version": __version__,
                 "description": "Real-time contact-center monitor: event ingest, snapshot, alerts."},
        "components": {"schemas": event_types, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "an ingest token (CCMON_INGEST_TOKENS)"},
            "read": {"type": "http", "scheme": "bearer",
                     "description": "a read token (CCMON_READ_TOKENS); required only when read tokens are set"}}},
        "paths": {
            "/api/events": {
                "post": {
                    "summary": "Ingest contract v1 events: one JSON event, or NDJSON (one event per line)",
                    "security": [{"bearer": []}],
                    "requestBody": {"required": True, "content": {
                        "application/json": {"schema": event},
                        "application/x-ndjson": {"schema": {"type": "string"}},
                    }},
                    "responses": ingest_responses,
                }
            },
            "/api/webhooks/{mapping}": {
                "post": {
                    "summary": "A product's webhook (JSON or form-encoded), turned into events by a mapping file",
                    "security": [{"bearer": []}],
                    "parameters": [{"name": "mapping", "in": "path", "required": True,
                                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}}],
                    "requestBody": {"required": True, "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
                    }},
                    "responses": {**ingest_responses, **_errors(404)},
                }
            },
            "/api/snapshot": {"get": {"summary": "The snapshot of every metric", "security": [{"read": []}], "parameters": [
                {"name": "queue", "in": "query", "schema": {"type": "string"}},
                {"name": "at", "in": "query", "description": "evaluate at this instant (2000..2100); empty: now",
                 "schema": {
                    # What is documented here is always accepted (epoch seconds, RFC 3339 of 2001..2089);
                    # the server takes any instant of 2000..2100 and answers 400 outside it.
                    "anyOf": [{"type": "string", "maxLength": 0},
                              {"type": "string", "pattern": r"^[1-3][0-9]{9}(\.[0-9]{1,6})?$"},
                              {"type": "string", "format": "date-time", "pattern": r"^20(0[1-9]|[1-8][0-9])-"}]}}],
                "responses": {"200": {"description": "the snapshot", "content": {"application/json": {
                    "schema": {"type": "object"}}}}, **_errors(400, 401, 503)}}},
            "/api/alerts": {"get": {"summary": "Pending and firing alerts and receiver status",
                                    "security": [{"read": []}], "responses": {
                "200": {"description": "alerts", "content": {"application/json": {"schema": {"type": "object"}}}},
                **_errors(401, 503)}}},
            "/health": {"get": {"summary": "Liveness and lag", "responses": {
                "200": {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}},
                **_errors(503)}}},
        },
    }
