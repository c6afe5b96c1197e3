"""The live wallboard: a payload built once per tick and pushed to every screen over Server-Sent Events.

Colours come from the alert rules' own thresholds (``status_of``), so a tile
turns red exactly when the matching alert condition holds; nothing here
hard-codes a threshold. One producer builds each payload for all screens, and a
slow screen only ever holds the latest two messages, so a hundred screens cost
one snapshot read per tick and memory stays bounded.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from importlib import resources
from typing import Any, Mapping, Optional, Sequence

import msgspec

from alerts.config import AlertsConfig
from alerts.engine import Rule, clear_bound, compare, healthy_side
from ccmon.store import Store

log = logging.getLogger("ccmon.wallboard")
TICK_S = 1.0
DEBOUNCE_S = 0.25
STALE_COMMIT_AGE_S = 10.0  # the worker lags: messages wait and nothing committed for this long
ASSETS = {"app.js": "text/javascript", "app.css": "text/css", "index.html": "text/html"}
SECURITY_HEADERS = {  # on every HTTP response (ccmon/web.py adds them)
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
                               "form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def asset(name: str) -> bytes:
    """A wallboard file shipped in the package (no CDN: the page works offline)."""
    return resources.files("ccmon").joinpath("wallboard", name).read_bytes()


def match_token(tokens: Sequence[str], given: Sequence[str]) -> Optional[str]:
    """The configured token one of ``given`` equals, or None; compares every pair in constant time."""
    found = None
    for t in tokens:
        for g in given:
            if hmac.compare_digest(g.encode(), t.encode()):
                found = t
    return found


# ------------------------------------------------------------- statuses


def status_of(rule: Optional[Rule], value: Optional[float], threshold: Optional[float], guard_ok: bool = True,
              worst: str = "breach") -> str:
    """``breach`` when the rule's condition holds, ``warn`` inside its hysteresis band (past the clear value but
    not the threshold), else ``ok``; ``none`` without a value or a rule. ``worst`` caps it (a forecast warns)."""
    if rule is None or value is None or threshold is None:
        return "none"
    op = rule.condition.op
    if guard_ok and compare(op, value, threshold):
        return worst
    clear = rule.clear
    if clear is None and rule.clear_by is not None:
        clear = clear_bound(op, threshold, rule.clear_by)
    if clear is not None and not healthy_side(op, value, clear):
        return "warn"
    return "ok"


RANK = {"none": 0, "ok": 1, "warn": 2, "breach": 3}


def queue_view(q: str, view: Mapping[str, Any], rules: Mapping[str, Rule]) -> dict[str, Any]:
    """One tile's numbers and statuses from a queue's snapshot view."""
    now, w15, today = view["now"], view.get("15m") or {}, view.get("today") or {}
    target = now.get("sl_target")
    sl_rule = rules.get("CcmonServiceLevelBelowTarget")
    wait_rule = rules.get("CcmonLongestWaitHigh")
    abandon_rule = rules.get("CcmonAbandonRateHigh")
    forecast_rule = rules.get("CcmonForecastBelowTarget")

    def threshold(rule: Optional[Rule]) -> Optional[float]:
        if rule is None:
            return None
        t = rule.condition.threshold
        return now.get(t) if isinstance(t, str) else float(t)

    has_tickets = bool(now.get("tickets_open") or now.get("backlog") or today.get("tickets_created")
                       or view.get("totals", {}).get("tickets_created"))
    guard = abandon_rule.guard if abandon_rule else None
    volume_ok = guard is None or compare(guard.op, float(w15.get(guard.metric) or 0), float(guard.threshold))  # type: ignore[arg-type]
    asa, asa_target = w15.get("asa_seconds"), now.get("asa_target_seconds")
    status = {
        "service_level": status_of(sl_rule, w15.get("service_level"), threshold(sl_rule)),
        "service_level_today": status_of(sl_rule, today.get("service_level"), threshold(sl_rule)),
        "longest_wait": status_of(wait_rule, now.get("longest_wait_seconds") or 0.0, threshold(wait_rule)),
        "asa": "none" if asa is None or asa_target is None else "breach" if asa > asa_target else "ok",
        "abandon": status_of(abandon_rule, w15.get("abandon_rate"), threshold(abandon_rule), volume_ok),
        "forecast": status_of(forecast_rule, now.get("predicted_service_level"), threshold(forecast_rule),
                              worst="warn"),
    }
    status["tile"] = max(status.values(), key=lambda s: RANK[s])
    return {
        "calls_waiting": now.get("calls_waiting", 0),
        "oldest_waiting_since": now.get("oldest_waiting_since"),
        "longest_wait_seconds": now.get("longest_wait_seconds"),
        "service_level_today": today.get("service_level"),
        "service_level_15m": w15.get("service_level"),
        "sl_target": target,
        "asa_seconds": asa,
        "asa_target_seconds": asa_target,
        "abandoned_today": today.get("abandoned", 0),
        "abandon_rate_15m": w15.get("abandon_rate"),
        "agents": {st: now.get("agents_" + st, 0) for st in ("available", "on_call", "wrap_up", "away", "staffed")},
        "predicted_service_level": now.get("predicted_service_level"),
        "agents_required": now.get("agents_required"),
        "tickets": {"open": now.get("tickets_open", 0), "backlog": now.get("backlog", 0),
                    "sla_breached": now.get("sla_breached_open", 0), "sla_due_soon": now.get("sla_due_soon", 0)}
        if has_tickets else None,
        "status": status,
    }


def health(status: Mapping[str, Any], consuming: bool, now_s: float) -> dict[str, Any]:
    """``live``, or ``stale`` with a reason when the worker lags or is not consuming."""
    last = status.get("stats", {}).get("last_commit_ms")
    age = None if last is None else round(max(0.0, now_s - last / 1000), 3)
    lag = int(sum(status.get("lag", {}).values()))
    reason = None
    if not consuming:
        reason = "the worker is not consuming yet"
    elif lag and (age is None or age > STALE_COMMIT_AGE_S):
        reason = f"{lag} messages waiting, nothing committed for {age or 0:.0f}s"
    return {"state": "stale" if reason else "live", "reason": reason, "last_commit_age_seconds": age, "lag": lag,
            "consuming": consuming}


def build_payload(snapshot: Mapping[str, Any], status: Mapping[str, Any], alerts: list[dict[str, Any]],
                  agents: list[dict[str, Any]], cfg: AlertsConfig, consuming: bool, now_s: float) -> dict[str, Any]:
    """Everything every screen needs for one tick (pure)."""
    rules = {r.name: r for r in cfg.rules}
    return {
        "generated_at": snapshot.get("generated_at"),
        "server_time": now_s,
        "health": health(status, consuming, now_s),
        "queues": {q: queue_view(q, v, rules) for q, v in snapshot.get("queues", {}).items()},
        "alerts": [{"rule": a["rule"], "queue": a["queue"], "severity": a["severity"], "summary": a["summary"],
                    "firing_since": a["firing_since"]} for a in alerts if a["status"] == "firing"],
        "agents": agents,
    }


async def read_payload(store: Store, cfg: AlertsConfig, alerts: list[dict[str, Any]], agents_topic: str,
                       agents_partitions: int, consuming: bool, now_s: float) -> dict[str, Any]:
    """Read what a tick shows at ``now_s`` and build its payload (the alerts are read by the caller)."""
    snapshot = await store.snapshot(now_ms=int(now_s * 1000))
    status = await store.status()
    agents = await store.agent_states(agents_topic, agents_partitions)
    return build_payload(snapshot, status, alerts, agents, cfg, consuming, now_s)


def message(payload: Mapping[str, Any]) -> bytes:
    """One Server-Sent Events message carrying ``payload``."""
    return b"event: snapshot\ndata: " + msgspec.json.encode(payload) + b"\n\n"


class Hub:
    """One producer, many screens: each screen gets a small queue holding at most the newest messages.

    With a ``pool`` (``ccmon/scrape_pool.py``) the messages of a center with many queues are read and built in one of
    its helper processes, off the worker's event loop."""

    def __init__(self, store: Store, cfg: AlertsConfig, agents_topic: str, agents_partitions: int,
                 alerts: Any = None, consuming: Any = lambda: True, pool: Any = None):
        self.store = store
        self.cfg = cfg
        self.agents_topic = agents_topic
        self.agents_partitions = agents_partitions
        self.alerts = alerts
        self.consuming = consuming
        self.pool = pool
        self.screens: set[asyncio.Queue[bytes]] = set()
        self.trigger = asyncio.Event()
        self._task: Optional[asyncio.Task[None]] = None
        self.built = 0

    async def payload(self) -> dict[str, Any]:
        """Read everything and build one payload, here."""
        return await read_payload(self.store, self.cfg, await self._alerts(), self.agents_topic,
                                  self.agents_partitions, bool(self.consuming()), time.time())

    async def message(self) -> bytes:
        """The next message for the screens: built by the pool's helpers when it has them, else here."""
        if self.pool is None:
            return message(await self.payload())
        return await self.pool.wallboard(self.store, self.cfg, await self._alerts(), self.agents_topic,
                                         self.agents_partitions, bool(self.consuming()), time.time())

    async def _alerts(self) -> list[dict[str, Any]]:
        from ccmon.alerting import alerts_view

        return (await alerts_view(self.alerts))["alerts"] if self.alerts is not None else []

    def subscribe(self) -> asyncio.Queue[bytes]:
        """A new screen; starts the producer with the first one."""
        q: asyncio.Queue[bytes] = asyncio.Queue(maxsize=2)
        self.screens.add(q)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._produce())
        self.trigger.set()
        return q

    def unsubscribe(self, q: asyncio.Queue[bytes]) -> None:
        """A screen went away."""
        self.screens.discard(q)

    async def _produce(self) -> None:
        while self.screens:
            try:
                update = await self.message()
                self.built += 1
            except Exception as exc:  # noqa: BLE001 - Redis away: the screens go stale by themselves
                log.warning("wallboard: cannot build an update: %s", exc)
                update = b""
            for q in list(self.screens):
                if update:
                    if q.full():
                        q.get_nowait()  # a slow screen skips to the newest
                    q.put_nowait(update)
            self.trigger.clear()
            try:
                await asyncio.wait_for(self.trigger.wait(), timeout=TICK_S)
                await asyncio.sleep(DEBOUNCE_S)
            except asyncio.TimeoutError:
                pass
