"""HTTP adapter on the worker's Faust web server: snapshot API, /metrics and /health."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import faust
from aiohttp import web

from alerts.config import AlertsConfig
from ccmon.alerting import AlertService, alerts_view
from ccmon.errors import StoreUnavailable
from ccmon.exposition import render, render_worker
from ccmon.settings import Settings
from ccmon.store import Store
from ccmon.wallboard import SECURITY_HEADERS, Hub, asset, token_ok


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
            return view.json(await store.snapshot(now_ms=at, only=only))
        except StoreUnavailable as exc:
            return view.json({"error": str(exc)}, status=503)

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
            body, content_type = render(await store.snapshot(), status, request.headers.get("Accept"))
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
