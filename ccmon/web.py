"""HTTP adapter on the worker's Faust web server: snapshot API, /metrics and /health."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import faust
from aiohttp import web

from ccmon.alerting import AlertService, alerts_view
from ccmon.errors import StoreUnavailable
from ccmon.exposition import render, render_worker
from ccmon.store import Store


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


def register_web(app: faust.App, store: Store, alerts: AlertService | None = None) -> None:
    """Add ccmon's routes to the Faust web server."""
    ready = {"consuming": False}

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
