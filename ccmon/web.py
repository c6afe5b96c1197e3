"""HTTP adapter on the worker's Faust web server: snapshot API, /metrics and /health."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Any, Callable

import faust
from aiohttp import web
from faust.web import View

from alerts.config import AlertsConfig
from ccmon.alerting import AlertService, alerts_view
from ccmon.errors import CcmonError, StoreUnavailable
from ccmon.gcpause import gc_paused
from ccmon.ingest import RateLimiter, authorized, publish, split_body, tokens_of, validate
from ccmon.openapi import document as openapi_document
from ccmon.exposition import render_worker, scrape
from ccmon.settings import Settings
from ccmon.store import Store
from ccmon.wallboard import SECURITY_HEADERS, Hub, asset, token_ok
from streams.producer import Publisher


def parse_instant(text: str) -> int:
    """Epoch seconds or RFC 3339 with an offset, as epoch milliseconds."""
    try:
        return round(float(text) * 1000)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a time; give epoch seconds or RFC 3339 like 2026-11-23T10:00:00Z") from None
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no offset; add Z or +01:00")
    return round(when.timestamp() * 1000)


def register_web(app: faust.App, store: Store, alerts: AlertService | None = None,
                 settings: Settings | None = None, agents_partitions: int = 1) -> None:
    """Add ccmon's routes to the Faust web server."""
    ready = {"consuming": False}
    settings = settings or Settings()
    hub = Hub(store, alerts.cfg if alerts is not None else AlertsConfig(), settings.topic("agents"), agents_partitions,
              alerts, consuming=lambda: ready["consuming"])
    if alerts is not None:
        alerts.on_commit.append(hub.trigger.set)

    def denied() -> web.Response:
        return web.Response(status=401, text="401: this wallboard needs its token: open /wallboard?token=…\n",
                            headers=SECURITY_HEADERS)

    @app.page("/wallboard")
    async def wallboard(view: Any, request: Any) -> Any:
        """The live wallboard page (``?queues=a,b``, ``?tv=1``, ``?view=agents``)."""
        if not token_ok(settings.wallboard_token, request.query, request.headers):
            return denied()
        return web.Response(body=asset("index.html"), content_type="text/html", charset="utf-8",
                            headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

    @app.page("/wallboard/app.js")
    async def wallboard_js(view: Any, request: Any) -> Any:
        """The page's script."""
        return web.Response(body=asset("app.js"), content_type="text/javascript", charset="utf-8",
                            headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

    @app.page("/wallboard/app.css")
    async def wallboard_css(view: Any, request: Any) -> Any:
        """The page's style sheet."""
        return web.Response(body=asset("app.css"), content_type="text/css", charset="utf-8",
                            headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

    @app.page("/wallboard/stream")
    async def wallboard_stream(view: Any, request: Any) -> Any:
        """Server-Sent Events: a snapshot message at least every second and right after commits."""
        if not token_ok(settings.wallboard_token, request.query, request.headers):
            return denied()
        resp = web.StreamResponse(headers={**SECURITY_HEADERS, "Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        screen = hub.subscribe()
        try:
            await resp.write(b"retry: 1000\n\n")
            while True:
                await resp.write(await screen.get())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            hub.unsubscribe(screen)
        return resp

    @app.on_rebalance_complete.connect
    async def _consuming(sender: Any, **_: Any) -> None:
        ready["consuming"] = True

    @app.page("/api/snapshot")
    async def snapshot(view: Any, request: Any) -> Any:
        """The snapshot JSON; ``?queue=a,b`` filters queues, ``?at=`` evaluates at another instant."""
        wanted = request.query.get("queue") or request.query.get("queues")
        only = [q for q in wanted.split(",") if q] if wanted else None
        try:
            at = parse_instant(request.query["at"]) if request.query.get("at") else None
        except ValueError as exc:
            return view.json({"error": str(exc)}, status=400)
        try:
            with gc_paused():  # until the snapshot is encoded and dropped (ccmon/gcpause.py)
                return view.json(await store.snapshot(now_ms=at, only=only))
        except StoreUnavailable as exc:
            return view.json({"error": str(exc)}, status=503)

    limiter = RateLimiter(settings.ingest_rate)
    tokens = tokens_of(settings.ingest_tokens)
    publisher: dict[str, Any] = {}
    mappings: dict[str, Any] = {}

    def ingest_error(status: int, message: str, **headers: str) -> web.Response:
        return web.json_response({"error": message}, status=status, headers={**SECURITY_HEADERS, **headers})

    async def read_limited(request: Any) -> bytes | None:
        """The body, or None when it is over the limit (without reading all of it)."""
        if request.content_length is not None and request.content_length > settings.ingest_max_bytes:
            return None
        parts: list[bytes] = []
        size = 0
        while size <= settings.ingest_max_bytes:
            part = await request.content.read(settings.ingest_max_bytes + 1 - size)  # returns what has arrived
            if not part:
                return b"".join(parts)
            parts.append(part)
            size += len(part)
        return None

    async def ingest(request: Any, lines: Callable[[bytes], list[bytes]], source: str) -> web.Response:
        if not tokens and not settings.ingest_open:
            return ingest_error(401, "ingest is closed: set CCMON_INGEST_TOKENS (or CCMON_INGEST_OPEN=true for "
                                     "local use only)")
        key = "open"
        if tokens:
            found = authorized(tokens, request.headers.get("Authorization", ""))
            if found is None:
                return ingest_error(401, "send Authorization: Bearer <one of CCMON_INGEST_TOKENS>",
                                    **{"WWW-Authenticate": "Bearer"})
            key = found
        body = await read_limited(request)
        if body is None:
            return ingest_error(413, f"the body is larger than {settings.ingest_max_bytes} bytes "
                                     "(CCMON_INGEST_MAX_BYTES); send smaller NDJSON chunks")
        try:
            split = lines(body)
        except ValueError as exc:
            return ingest_error(400, str(exc))
        wait = limiter.take(key, len(split))
        if wait:
            if wait == float("inf"):
                return ingest_error(413, f"{len(split)} events in one request exceed this token's burst "
                                         f"({2 * settings.ingest_rate:g}); send smaller chunks")
            return ingest_error(429, f"over {settings.ingest_rate:g} events/s for this token; retry later",
                                **{"Retry-After": str(max(1, int(wait + 0.999)))})
        outcome = validate(split, source, settings.ingest_max_line)
        if "p" not in publisher:
            publisher["p"] = await asyncio.to_thread(Publisher, settings, settings.kafka_bootstrap)
        try:
            await publish(publisher["p"], outcome)
        except CcmonError as exc:
            return ingest_error(503, f"{exc}; nothing is lost by retrying the same request (event ids dedup)")
        status = 200 if outcome.accepted == len(outcome.results) else 207
        return web.json_response(outcome.body(), status=status, headers=SECURITY_HEADERS)

    @app.page("/api/events")
    class Events(View):
        """``POST`` one JSON event or NDJSON."""

        async def post(self, request: Any) -> Any:
            return await ingest(request, lambda b: split_body(b, request.headers.get("Content-Type", "")), "http")

    @app.page("/api/webhooks/{mapping}")
    class Webhooks(View):
        """``POST`` a product's webhook; a mapping file turns it into events."""

        async def post(self, request: Any, mapping: str) -> Any:
            from ccmon.adapters.mapping import load_mapping, map_payload, parse_body

            m = mappings.get(mapping)
            if m is None:
                path = settings.mappings_dir / f"{mapping}.yaml" if settings.mappings_dir else None
                if path is None or not mapping.replace("_", "").replace("-", "").isalnum() or not path.is_file():
                    return ingest_error(404, f"no mapping {mapping!r} in CCMON_MAPPINGS_DIR "
                                             f"({settings.mappings_dir or 'not set'})")
                m = mappings[mapping] = load_mapping(path)
            ctype = request.headers.get("Content-Type", "")

            def lines(body: bytes) -> list[bytes]:
                payload = parse_body(body, ctype)  # ValueError -> 400 with the reason
                events, problems = map_payload(m, payload)
                if problems and not events:
                    raise ValueError(f"mapping {mapping}: " + "; ".join(problems))
                return [json.dumps(e).encode() for e in events]

            return await ingest(request, lines, f"webhook:{mapping}")

    @app.page("/api/openapi.json")
    async def openapi(view: Any, request: Any) -> Any:
        """The OpenAPI description of this API."""
        return web.json_response(openapi_document(), headers=SECURITY_HEADERS)

    @app.page("/api/alerts")
    async def api_alerts(view: Any, request: Any) -> Any:
        """Pending and firing alerts, and each receiver's delivery status."""
        if alerts is None:
            return view.json({"error": "alerting is not running in this process"}, status=404)
        try:
            return view.json(await alerts_view(alerts))
        except StoreUnavailable as exc:
            return view.json({"error": str(exc)}, status=503)

    @app.page("/metrics")
    async def metrics(view: Any, request: Any) -> Any:
        """Prometheus text format, or OpenMetrics when negotiated."""
        try:
            status = await store.status()
            if alerts is not None:
                status["alerts"] = await alerts_view(alerts)
            body, content_type = await scrape(store, status, request.headers.get("Accept"))
        except StoreUnavailable as exc:
            return view.text(f"# {exc}\n", status=503)
        return web.Response(body=body, headers={"Content-Type": content_type})

    @app.page("/metrics/worker")
    async def worker_metrics(view: Any, request: Any) -> Any:
        """This process alone (memory, CPU, partitions held): scrape it on every replica."""
        try:
            partitions: int | None = len(app.consumer.assignment())
        except Exception:  # noqa: BLE001 - no consumer yet during start-up
            partitions = None
        body, content_type = render_worker(ready["consuming"], partitions, request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    @app.page("/health")
    async def health(view: Any, request: Any) -> Any:
        """200 when Redis answers; includes the age of the last commit."""
        try:
            status = await store.status()
        except StoreUnavailable as exc:
            return view.json({"status": "error", "error": str(exc)}, status=503)
        last = status["stats"].get("last_commit_ms")  # type: ignore[union-attr]
        age = None if last is None else round(time.time() - last / 1000, 3)
        return view.json(
            {"status": "ok", "consuming": ready["consuming"], "last_commit_age_seconds": age, "lag": status["lag"]}
        )
