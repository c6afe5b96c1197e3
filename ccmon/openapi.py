"""The OpenAPI description of ccmon's HTTP API, served at ``/api/openapi.json``."""

from __future__ import annotations

from typing import Any

from ccmon import __version__

_RESULT = {
    "type": "object",
    "required": ["line", "status"],
    "properties": {
        "line": {"type": "integer", "minimum": 1, "description": "1-based line (NDJSON) or 1 for a single event"},
        "status": {"type": "string", "enum": ["accepted", "rejected"]},
        "event_id": {"type": "string"},
        "type": {"type": "string", "description": "the event type, e.g. call.offered"},
        "reason": {"type": "string", "description": "stable reject code, e.g. invalid_json, missing_field"},
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


def document() -> dict[str, Any]:
    """The OpenAPI 3.0 document."""
    ingest_responses = {
        "200": {"description": "every line accepted (published and acknowledged by the broker)",
                "content": {"application/json": {"schema": _ANSWER}}},
        "207": {"description": "some or all lines rejected (each with its reason); accepted ones were published, "
                               "rejected ones dead-lettered",
                "content": {"application/json": {"schema": _ANSWER}}},
        **_errors(400, 401, 413, 429, 503),
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "ccmon", "version": __version__,
                 "description": "Real-time contact-center monitor: event ingest, snapshot, alerts."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/api/events": {
                "post": {
                    "summary": "Ingest contract v1 events: one JSON event, or NDJSON (one event per line)",
                    "security": [{"bearer": []}],
                    "requestBody": {"required": True, "content": {
                        "application/json": {"schema": {"type": "object", "required": ["event_id", "type", "ts"],
                                                        "properties": {"event_id": {"type": "string"},
                                                                       "type": {"type": "string"},
                                                                       "ts": {"oneOf": [{"type": "number"},
                                                                                        {"type": "string"}]}},
                                                        "additionalProperties": True}},
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
            "/api/snapshot": {"get": {"summary": "The snapshot of every metric", "parameters": [
                {"name": "queue", "in": "query", "schema": {"type": "string"}},
                {"name": "at", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the snapshot", "content": {"application/json": {
                    "schema": {"type": "object"}}}}, **_errors(400, 503)}}},
            "/api/alerts": {"get": {"summary": "Pending and firing alerts and receiver status", "responses": {
                "200": {"description": "alerts", "content": {"application/json": {"schema": {"type": "object"}}}},
                **_errors(503)}}},
            "/health": {"get": {"summary": "Liveness and lag", "responses": {
                "200": {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}},
                **_errors(503)}}},
        },
    }
