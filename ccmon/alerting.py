"""The alert evaluator and deliverer that runs inside every worker; one of them holds the lease and acts.

It evaluates every ``evaluation_interval`` and within about a second of
any committed batch (at most once a second on commits, so that a busy stream does
not spend its CPU re-reading the snapshot) (the commit script publishes on ``ccmon:commits``), writes
state changes and their notifications in one fenced step, and drains each
receiver's outbox in order with retries and backoff.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Optional

from alerts.config import AlertsConfig
from alerts.engine import AlertState, Notification, evaluate, queues_of
from ccmon.alert_store import AlertStore, state_field
from ccmon.errors import StoreUnavailable
from ccmon.gcpause import gc_paused
from ccmon.notify import DeliveryError, Notifier, generic_body
from ccmon.store import Store

if TYPE_CHECKING:
    import faust

    from ccmon.settings import Settings

log = logging.getLogger("ccmon.alerts")
TOPIC = "_topic"  # the pseudo-receiver that publishes every notification to the alerts topic
DEBOUNCE_S = 0.2  # after a commit, wait this long for more before evaluating (bursts of batches)
MIN_GAP_S = 1.0  # commit-triggered evaluations start at least this far apart (one costs ~0.1 s at 50 queues)
MAX_BACKOFF_S = 60.0

Publish = Callable[[bytes, bytes], Awaitable[None]]


class AlertService:
    """Lease, evaluation and delivery."""

    def __init__(self, store: Store, cfg: AlertsConfig, publish: Optional[Publish] = None,
                 owner: Optional[str] = None, clock: Callable[[], float] = time.time):
        self.store = store
        self.astore = AlertStore(store)
        self.cfg = cfg
        self.publish = publish
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.clock = clock
        self.notifier = Notifier()
        self.token: Optional[str] = None
        self.triggered = asyncio.Event()
        self.wake: dict[str, asyncio.Event] = {}
        self.on_commit: list[Callable[[], None]] = [self.triggered.set]  # the wallboard adds its own
        self.evaluations = 0
        self.last_evaluation_ms: Optional[int] = None

    @property
    def receivers(self) -> list[str]:
        """Every outbox this service drains."""
        return list(self.cfg.receivers) + ([TOPIC] if self.publish else [])

    # ------------------------------------------------------------ evaluation
    async def evaluate_once(self) -> list[Notification]:
        """One pass over every rule and queue; returns the notifications queued (empty without the lease)."""
        if self.token is None:
            return []
        with gc_paused():  # the whole snapshot lives through the evaluation (ccmon/gcpause.py)
            return await self._evaluate(int(self.clock() * 1000))

    async def _evaluate(self, now_ms: int) -> list[Notification]:
        # No rule reads the all-queues roll-up or an agent's survey view (alerts.engine.metric_value reads a window's
        # numbers), so this read leaves them out, and fetches none of the agents' own hashes: ~15 ms at 50 queues of 60
        # agents with an hour of traffic (bench/reads.py), where the full read takes ~70. With no rules at all nothing
        # is read: a worker whose alerts YAML has none pays nothing for evaluating.
        snapshot: dict[str, object] = {}
        status: dict[str, object] = {}
        if self.cfg.rules:
            snapshot = await self.store.snapshot(now_ms=now_ms, rollup_all=False, agents=False)
            status = await self.store.status()
        stored = await self.astore.states()
        changed: list[AlertState] = []
        notes: list[tuple[str, Notification]] = []
        live: set[str] = set()
        for rule in self.cfg.rules:
            for queue in queues_of(rule, snapshot):
                f = state_field(rule.name, queue)
                live.add(f)
                before = stored.get(f) or AlertState(rule.name, queue)
                after, out = evaluate(rule, before, snapshot, status, now_ms)
                if after != before:
                    changed.append(after)
                for n in out:
                    targets = [r for r in n.receivers if r in self.cfg.receivers and
                               (n.kind != "resolved" or self.cfg.receivers[r].send_resolved)]
                    if self.publish:
                        targets.append(TOPIC)
                    notes += [(r, n) for r in targets]
                    log.warning("alert %s %s in %s: %s", n.kind, n.rule, n.queue or "ccmon", n.summary)
        # Drop what no rule produces any more (a rule removed, a queue gone) and inactive leftovers.
        gone = [f for f in stored if f not in live]
        keep = [s for s in changed if s.status != "inactive" or s.history]
        gone += [state_field(s.rule, s.queue) for s in changed if s.status == "inactive" and not s.history
                 and state_field(s.rule, s.queue) in stored]
        if keep or gone or notes:
            if not await self.astore.commit(self.token, keep, gone, notes):
                log.warning("lost the alert lease during an evaluation; another worker evaluates now")
                self.token = None
                return []
        self.evaluations += 1
        self.last_evaluation_ms = now_ms
        for r, _ in notes:
            self.wake.setdefault(r, asyncio.Event()).set()
        return [n for _, n in notes]

    # -------------------------------------------------------------- delivery
    async def _send(self, receiver: str, n: Notification) -> None:
        if receiver == TOPIC:
            assert self.publish is not None
            try:
                await self.publish(n.key.encode(), json.dumps(generic_body(n)).encode())
            except Exception as exc:  # noqa: BLE001 - any producer failure is "retry later"
                raise DeliveryError(f"could not publish to the alerts topic: {type(exc).__name__}") from None
            return
        await self.notifier.send(self.cfg.receivers[receiver], n)

    async def deliver(self, receiver: str) -> None:
        """Drain one receiver's outbox for as long as this worker holds the lease."""
        wake = self.wake.setdefault(receiver, asyncio.Event())
        backoff = 1.0
        while True:
            head = await self._safe(self.astore.head(receiver)) if self.token else None
            if head is None:
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), timeout=1.0)
                except asyncio.TimeoutError:
                    pass
                continue
            token = self.token
            try:
                await self._send(receiver, Notification.decode(head))
            except DeliveryError as exc:
                await self._safe(self.astore.failed(receiver, str(exc)))
                if exc.permanent:
                    log.error("%s; dropping this notification (see /api/alerts)", exc)
                    if token:
                        await self._safe(self.astore.ack(token, receiver, head, "dropped"))
                    backoff = 1.0
                    continue
                log.error("%s; retrying in %.0fs (the notification stays queued)", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = 1.0
            if token:
                await self._safe(self.astore.ack(token, receiver, head, "sent"))

    async def _safe(self, coro: Awaitable[object]) -> Optional[object]:
        try:
            return await coro
        except StoreUnavailable as exc:
            log.error("alerts: %s", exc)
            await asyncio.sleep(1.0)
            return None

    # ----------------------------------------------------------------- loops
    async def listen(self) -> None:
        """Set the trigger on every committed batch (Redis pub/sub), reconnecting as needed."""
        while True:
            try:
                pubsub = self.store.redis.pubsub()
                await pubsub.subscribe(Store.COMMITS)
                async for msg in pubsub.listen():
                    if msg.get("type") == "message":
                        for callback in self.on_commit:
                            callback()
            except Exception as exc:  # noqa: BLE001 - Redis away: the periodic evaluation still runs
                log.debug("alerts: commit channel lost (%s); resubscribing", exc)
                await asyncio.sleep(1.0)

    async def run(self) -> None:
        """Hold or wait for the lease; evaluate on commits and every interval; deliver."""
        interval = self.cfg.evaluation_interval_s
        tasks = [asyncio.create_task(self.listen())]
        tasks += [asyncio.create_task(self.deliver(r)) for r in self.receivers]
        next_due = 0.0
        last_started = float("-inf")
        try:
            while True:
                token = await self._safe(self.astore.acquire(self.owner, ttl_s=max(3 * interval, 10.0)))
                if token and token != self.token:
                    log.info("alerts: this worker now evaluates the alert rules (lease %s)", token)
                    for e in self.wake.values():
                        e.set()
                self.token = token  # type: ignore[assignment]
                loop_now = asyncio.get_running_loop().time()
                if self.token and (self.triggered.is_set() or loop_now >= next_due):
                    self.triggered.clear()
                    last_started = loop_now
                    try:
                        await self.evaluate_once()
                    except StoreUnavailable as exc:
                        log.error("alerts: evaluation skipped: %s", exc)
                    next_due = loop_now + interval
                try:
                    await asyncio.wait_for(self.triggered.wait(), timeout=min(interval, 2.0))
                    gap = last_started + MIN_GAP_S - asyncio.get_running_loop().time()
                    await asyncio.sleep(max(DEBOUNCE_S, gap))
                except asyncio.TimeoutError:
                    pass
        finally:
            for t in tasks:
                t.cancel()
            if self.token:
                try:
                    await self.astore.release(self.token)
                except StoreUnavailable:
                    pass
            await self.notifier.close()


def register_alerts(app: "faust.App", settings: "Settings", store: Store, cfg: AlertsConfig) -> AlertService:
    """Run the alert service as a task of the worker; notifications also go to the alerts topic."""
    topic = app.topic(settings.alerts_topic, value_serializer="raw", key_serializer="raw")

    async def publish(key: bytes, value: bytes) -> None:
        fut = await topic.send(key=key, value=value)
        await fut  # the broker's ack: the outbox entry leaves only after it

    service = AlertService(store, cfg, publish)

    async def _run() -> None:
        await service.run()

    app.task(_run)
    return service


async def alerts_view(service: AlertService) -> dict[str, Any]:
    """``/api/alerts``: pending and firing alerts, and each receiver's delivery status (no secrets)."""
    rules = {r.name: r for r in service.cfg.rules}
    alerts = []
    for s in sorted((await service.astore.states()).values(), key=lambda s: (s.status != "firing", s.rule, s.queue)):
        if s.status == "inactive":
            continue
        rule = rules.get(s.rule)
        alerts.append({
            "rule": s.rule, "queue": s.queue, "status": s.status, "severity": rule.severity if rule else None,
            "value": s.value, "threshold": s.threshold,
            "condition": rule.condition.describe() if rule else None,
            "pending_since": s.pending_since_ms / 1000 if s.pending_since_ms else None,
            "firing_since": s.fired_ms / 1000 if s.fired_ms else None,
            "summary": s.summary, "runbook_url": rule.runbook_url if rule else None,
        })
    delivery = await service.astore.delivery_status(service.receivers)
    receivers = [{**r.redacted(), **delivery.get(name, {})} for name, r in service.cfg.receivers.items()]
    return {
        "alerts": alerts,
        "receivers": receivers,
        "evaluator": {"this_worker": service.token is not None, "evaluations": service.evaluations,
                      "last_evaluation": service.last_evaluation_ms / 1000 if service.last_evaluation_ms else None},
    }
