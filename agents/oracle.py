"""The batch oracle: every metric recomputed from the raw event list.

This is the reference definition. It is written as a direct batch computation,
independent of the streaming core's state machine, so that property tests can
hold one against the other.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from agents.config import MetricsConfig, bucket_start, day_of, in_rolling_window
from agents.snapshot import build_snapshot
from streams.events import CallBlocked, CallEvent, Event


def compute(events: Iterable[Event], cfg: MetricsConfig, now_ms: int) -> dict[str, object]:
    """The snapshot that the streaming path must produce for ``events`` at ``now_ms``."""
    seen: set[str] = set()
    # (call_id, queue) -> type -> earliest event of that type (ties by event_id)
    legs: dict[tuple[str, str], dict[str, CallEvent]] = defaultdict(dict)
    for ev in events:
        if ev.event_id in seen:
            continue  # a repeated event_id changes nothing
        seen.add(ev.event_id)
        if not isinstance(ev, CallEvent):
            continue
        slot = legs[(ev.call_id, ev.queue)]
        prev = slot.get(ev.type)
        if prev is None or (ev.ts_ms, ev.event_id) < (prev.ts_ms, prev.event_id):
            slot[ev.type] = ev

    facts: list[tuple[str, int, str, int]] = []  # (queue, ts_ms, field, value)
    waiting: dict[str, int] = defaultdict(int)
    offers_by_call: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for (call_id, queue), by_type in legs.items():
        if "call.offered" in by_type:
            offers_by_call[call_id].append((queue, by_type["call.offered"].ts_ms))

    for (call_id, queue), by_type in legs.items():
        q = cfg.queue(queue)
        blocked = by_type.get("call.blocked")
        if isinstance(blocked, CallBlocked):
            facts.append((queue, blocked.ts_ms, "blocked", 1))
            facts.append((queue, blocked.ts_ms, "blocked:" + blocked.reason, 1))
        offered = by_type.get("call.offered")
        if offered is None:
            continue
        facts.append((queue, offered.ts_ms, "offered", 1))
        ends = [
            (by_type[t].ts_ms, rank, t)
            for rank, t in enumerate(("call.answered", "call.abandoned", "call.timed_out"))
            if t in by_type
        ]
        if not ends:
            moved_on = any(t > offered.ts_ms for other, t in offers_by_call[call_id] if other != queue)
            if not moved_on:
                waiting[queue] += 1
            continue
        at, _, kind = min(ends)
        wait = max(0, at - offered.ts_ms)
        if kind == "call.answered":
            facts += [(queue, at, "answered", 1), (queue, at, "answer_wait_ms", wait)]
            if wait <= q.sl_threshold_ms:
                facts.append((queue, at, "answered_in_sl", 1))
        elif kind == "call.abandoned":
            facts.append((queue, at, "abandoned", 1))
            if wait <= q.short_abandon_ms:
                facts.append((queue, at, "short_abandoned", 1))
        else:
            facts.append((queue, at, "timed_out", 1))

    windows: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    width = cfg.bucket_seconds
    for queue, ts_ms, name, value in facts:
        per = windows[queue]
        b = bucket_start(ts_ms, width)
        for wname, wsec in cfg.windows:
            if in_rolling_window(b, width, wsec, now_ms):
                per[wname][name] += value
        q = cfg.queue(queue)
        if day_of(ts_ms, q) == day_of(now_ms, q):
            per["today"][name] += value
    gauges = {queue: {"calls_waiting": n} for queue, n in waiting.items()}
    # Queues that were only ever seen still appear, with zero counts.
    for _call, queue in legs:
        windows[queue]
    return build_snapshot(windows, gauges, cfg.window_names, now_ms)
