"""HTTP adapter on the worker's Faust web server: snapshot API, /metrics and /health."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import json
import re
import time
from datetime import datetime
from typing import Any, Callable

import faust
from aiohttp import web
from faust.web import View
from prometheus_client.exposition import gzip_accepted

from alerts.config import AlertsConfig
from ccmon.alerting import AlertService, alerts_view
from ccmon.errors import CcmonError, StoreUnavailable
from ccmon.ingest import RateLimiter, authorized, publish, split_body, tokens_of, validate
from ccmon.openapi import document as openapi_document
from ccmon.exposition import render_worker
from ccmon.scrape_pool import ScrapePool
from ccmon.settings import Settings
from ccmon.store import Store
from ccmon.wallboard import SECURITY_HEADERS, Hub, asset, match_token
from streams.deadletter import encode as encode_dead_letter, make_dead_letter
from streams.events import TS_MAX_S, TS_MIN_S
from streams.producer import Publisher


_EPOCH_SECONDS = re.compile(r"[0-9]+(\.[0-9]+)?")


def parse_instant(text: str) -> int:
    """Epoch seconds or RFC 3339 with an offset, within the event contract's 2000..2100, as epoch milliseconds."""
    if _EPOCH_SECONDS.fullmatch(text):
        seconds = float(text)
    else:
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"cannot read {text[:64]!r} as a time; give epoch seconds or RFC 3339 like "
                             "2026-11-23T10:00:00Z") from None
        if when.tzinfo is None:
            raise ValueError(f"{text[:64]!r} has no offset; add Z or +01:00")
        seconds = when.timestamp()
    if not TS_MIN_S <= seconds < TS_MAX_S:  # also what would overflow the arithmetic below
        raise ValueError(f"{text[:64]!r} is outside 2000-01-01..2100-01-01; give a time in that range")
    return round(seconds * 1000)


PUBLIC_PATHS = frozenset({"/metrics", "/metrics/worker", "/health"})  # scrapers and probes: never a token
INGEST_PATHS = ("/api/events", "/api/webhooks/")  # their own tokens (CCMON_INGEST_TOKENS), checked by `ingest`
WALLBOARD = "/wallboard"
COOKIE = "ccmon_token"  # set by /wallboard?token=…, so the page's script, style and stream need no token in the URL


def access_class(path: str) -> str:
    """``public``, ``ingest`` or ``read``: everything not public or ingest (unknown paths too) needs a read token."""
    if path in PUBLIC_PATHS:
        return "public"
    if path == INGEST_PATHS[0] or path.startswith(INGEST_PATHS[1]):
        return "ingest"
    return "read"


def bearer(headers: Any) -> list[str]:
    """The token of ``Authorization: Bearer …``, as a one-item list (none without one)."""
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    return [token.strip()] if scheme.lower() == "bearer" and token.strip() else []


# Bodies from this size on are gzipped for a client that accepts it, at level 1, in a thread (zlib lets go of the
# GIL): a 500-queue /metrics is 9.8 MB, 840 KB gzipped in 20-30 ms (level 6: 664 KB in 65-69 ms).
GZIP_MIN_BYTES = 1024
GZIP_LEVEL = 1


async def respond(request: Any, body: bytes, content_type: str) -> web.Response:
    """``body``, gzipped when it has ``GZIP_MIN_BYTES`` or more and the client accepts gzip (Prometheus does), as
    prometheus_client's own handler does."""
    headers = {"Content-Type": content_type, "Vary": "Accept-Encoding"}
    if len(body) >= GZIP_MIN_BYTES and gzip_accepted(request.headers.get("Accept-Encoding", "")):
        body = await asyncio.get_running_loop().run_in_executor(None, _gzip, body)
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=headers)


def _gzip(body: bytes) -> bytes:
    return gzip.compress(body, GZIP_LEVEL, mtime=0)


def json_error(message: str, status: int, **headers: str) -> web.Response:
    """``{"error": message}`` with ``<``, ``>`` and ``&`` escaped, so an echoed input never reads as markup."""
    text = json.dumps({"error": message}).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return web.Response(text=text, status=status, content_type="application/json", headers=headers)


def access_summary(settings: Settings) -> list[str]:
    """What the start-up message says about who may use which endpoints (and a warning when it is unsafe)."""
    host = settings.http_host
    reads = len(settings.read_token_list())
    ingests = len(tokens_of(settings.ingest_tokens))
    lines = [f"http://{host}:{settings.http_port}" + ("" if is_loopback(host) else
                                                       "  (not loopback: reachable from other machines)"),
             "  open to all:  /metrics, /metrics/worker, /health",
             "  read:         /wallboard, /api/snapshot, /api/alerts, /api/openapi.json: "
             + (f"token-protected ({reads} read token{'s' * (reads != 1)})" if reads
                else "OPEN (no CCMON_READ_TOKENS)"),
             "  ingest:       /api/events, /api/webhooks/<mapping>: "
             + (f"token-protected ({ingests} ingest token{'s' * (ingests != 1)})" if ingests
                else "OPEN (CCMON_INGEST_OPEN=true)" if settings.ingest_open
                else "closed (set CCMON_INGEST_TOKENS to enable)")]
    if not is_loopback(host):
        if not reads:
            lines.append(f"WARNING: listening on {host} with no read token: anyone who can reach port "
                         f"{settings.http_port} sees the snapshot, alerts and wallboard; set CCMON_READ_TOKENS")
        if settings.ingest_open and not ingests:
            lines.append(f"WARNING: listening on {host} with ingest open: anyone who can reach port "
                         f"{settings.http_port} can send events; set CCMON_INGEST_TOKENS")
    return lines


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1."""
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def install_guard(web_app: web.Application, settings: Settings) -> None:
    """Read-token checks on every non-public, non-ingest route, and the security headers on every response."""
    tokens = settings.read_token_list()

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if not tokens or access_class(request.path) != "read":
            return await handler(request)
        wallboard = request.path == WALLBOARD or request.path.startswith(WALLBOARD + "/")
        given = bearer(request.headers)
        if wallboard:  # a browser page and its EventSource cannot send headers
            given += [v for v in (request.query.get("token"), request.cookies.get(COOKIE)) if v]
        found = match_token(tokens, given)
        if found is None:
            challenge = {"WWW-Authenticate": 'Bearer realm="ccmon"'}
            if wallboard:
                return web.Response(status=401, text="401: this wallboard needs a read token: open "
                                    "/wallboard?token=<one of CCMON_READ_TOKENS>\n", headers=challenge)
            return json_error("this endpoint needs a read token: send Authorization: Bearer <one of "
                              "CCMON_READ_TOKENS> (ingest tokens cannot read)", 401, **challenge)
        resp = await handler(request)
        if request.path == WALLBOARD and resp.status == 200:
            resp.set_cookie(COOKIE, found, path=WALLBOARD, httponly=True, samesite="Strict")
        return resp

    async def headers(request: web.Request, resp: web.StreamResponse) -> None:
        for name, value in SECURITY_HEADERS.items():
            resp.headers.setdefault(name, value)
        resp.headers.setdefault("Cache-Control", "no-store")

    web_app.middlewares.append(guard)
    web_app.on_response_prepare.append(headers)


def register_web(app: faust.App, store: Store, alerts: AlertService | None = None,
                 settings: Settings | None = None, agents_partitions: int = 1) -> None:
    """Add ccmon's routes to the Faust web server."""
    ready = {"consuming": False}
    settings = settings or Settings()
    scrapes = ScrapePool(store.url, store.cfg, settings.redis_options(), settings.scrape_processes)
    hub = Hub(store, alerts.cfg if alerts is not None else AlertsConfig(), settings.topic("agents"), agents_partitions,
              alerts, consuming=lambda: ready["consuming"], pool=scrapes)
    if alerts is not None:
        alerts.on_commit.append(hub.trigger.set)
    install_guard(app.web.web_app, settings)

    @app.page("/wallboard")
    async def wallboard(view: Any, request: Any) -> Any:
        """The live wallboard page (``?queues=a,b``, ``?tv=1``, ``?view=agents``)."""
        return web.Response(body=asset("index.html"), content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    @app.page("/wallboard/app.js")
    async def wallboard_js(view: Any, request: Any) -> Any:
        """The page's script."""
        return web.Response(body=asset("app.js"), content_type="text/javascript", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    @app.page("/wallboard/app.css")
    async def wallboard_css(view: Any, request: Any) -> Any:
        """The page's style sheet."""
        return web.Response(body=asset("app.css"), content_type="text/css", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    @app.page("/wallboard/stream")
    async def wallboard_stream(view: Any, request: Any) -> Any:
        """Server-Sent Events: a snapshot message at least every second and right after commits."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
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
            return json_error(str(exc), 400)
        try:
            body = await scrapes.snapshot(store, at, only)  # in a helper when it covers many queues
            return await respond(request, body, "application/json")
        except StoreUnavailable as exc:
            return json_error(str(exc), 503)

    limiter = RateLimiter(settings.ingest_rate)
    tokens = tokens_of(settings.ingest_tokens)
    publisher: dict[str, Any] = {}
    mappings: dict[str, Any] = {}

    def ingest_error(status: int, message: str, **headers: str) -> web.Response:
        return json_error(message, status, **headers)

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

    async def ingest(request: Any, lines: Callable[[bytes], tuple[list[bytes], list[str]]],
                     source: str) -> web.Response:
        """Authorize, read, split (``lines``: the event lines and any mapping problems), validate and publish."""
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
            split, problems = lines(body)
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
        if problems:  # a webhook the mapping could not (fully) turn into events: never dropped silently
            detail = "; ".join(problems)
            outcome.results.append({"line": None, "status": "rejected", "reason": "mapping_problem", "detail": detail})
            outcome.dead.append(encode_dead_letter(make_dead_letter(body, "mapping_problem", detail, source)))
        if "p" not in publisher:
            publisher["p"] = await asyncio.to_thread(Publisher, settings, settings.kafka_bootstrap)
        try:
            await publish(publisher["p"], outcome)
        except CcmonError as exc:
            return ingest_error(503, f"{exc}; nothing is lost by retrying the same request (event ids dedup)")
        if problems and not outcome.events:  # nothing of the payload could be used: the sender must hear of it
            return ingest_error(400, f"{detail} (dead-lettered as mapping_problem)")
        status = 200 if outcome.accepted == len(outcome.results) else 207
        return web.json_response(outcome.body(), status=status)

    @app.page("/api/events")
    class Events(View):
        """``POST`` one JSON event or NDJSON."""

        async def post(self, request: Any) -> Any:
            return await ingest(request, lambda b: (split_body(b, request.headers.get("Content-Type", "")), []),
                                "http")

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

            def lines(body: bytes) -> tuple[list[bytes], list[str]]:
                payload = parse_body(body, ctype)  # ValueError -> 400 with the reason
                events, problems = map_payload(m, payload)
                return [json.dumps(e).encode() for e in events], problems

            return await ingest(request, lines, f"webhook:{mapping}")

    @app.page("/api/openapi.json")
    async def openapi(view: Any, request: Any) -> Any:
        """The OpenAPI description of this API."""
        return web.json_response(openapi_document())

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
            body, content_type = await scrapes.scrape(store, status, request.headers.get("Accept"))
        except StoreUnavailable as exc:
            return view.text(f"# {exc}\n", status=503)
        return await respond(request, body, content_type)

    @app.page("/metrics/worker")
    async def worker_metrics(view: Any, request: Any) -> Any:
        """This process alone (memory, CPU, partitions held): scrape it on every replica."""
        try:
            partitions: int | None = len(app.consumer.assignment())
        except Exception:  # noqa: BLE001 - no consumer yet during start-up
            partitions = None
        body, content_type = render_worker(ready["consuming"], partitions, request.headers.get("Accept"),
                                           store.down_since is None, store.errors, scrapes.served, scrapes.failures,
                                           scrapes.wallboard_served, scrapes.snapshots_served)
        return await respond(request, body, content_type)

    @app.page("/health")
    async def health(view: Any, request: Any) -> Any:
        """200 when Redis answers; includes the age of the last commit."""
        try:
            status = await store.status()
        except StoreUnavailable as exc:
            down = None if store.down_since is None else round(time.time() - store.down_since, 3)
            return view.json({"status": "error", "error": str(exc), "consuming": ready["consuming"],
                              "redis_down_seconds": down}, status=503)
        last = status["stats"].get("last_commit_ms")  # type: ignore[union-attr]
        age = None if last is None else round(time.time() - last / 1000, 3)
        return view.json(
            {"status": "ok", "consuming": ready["consuming"], "last_commit_age_seconds": age, "lag": status["lag"]}
        )
