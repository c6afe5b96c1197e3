"""HTTP ingest: bodies to validated events, bearer tokens, a per-token rate limit, and publishing.

Every line goes through ``streams.events.decode_line``, the validator ``ccmon
send`` and the worker use; rejects go to the dead-letter topic with their reason
and the answer lists each line's result. The answer is sent only after the
broker acknowledged every accepted event (and every dead letter).
"""

from __future__ import annotations

import asyncio
import hmac
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from streams.deadletter import encode as encode_dead_letter
from streams.deadletter import make_dead_letter
from streams.events import Event, Rejected, decode_line


def tokens_of(text: Optional[str]) -> list[str]:
    """The configured bearer tokens (comma-separated)."""
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def authorized(tokens: list[str], header: str) -> Optional[str]:
    """The matching token for ``Authorization: Bearer …``, or None; every token is compared (constant time)."""
    given = header[len("Bearer "):].strip() if header.startswith("Bearer ") else ""
    found = None
    for t in tokens:
        if hmac.compare_digest(given.encode(), t.encode()):
            found = t
    return found


@dataclass
class Bucket:
    """A token bucket of events per second (burst: two seconds' worth)."""

    rate: float
    tokens: float
    stamp: float


class RateLimiter:
    """Per-token event budgets; a request that does not fit waits for nothing and is told when to retry."""

    def __init__(self, rate: float, clock: Any = time.monotonic):
        self.rate = rate
        self.clock = clock
        self.buckets: dict[str, Bucket] = {}

    def take(self, key: str, n: int) -> float:
        """Take ``n`` events from ``key``'s budget: 0 when allowed, else the seconds until it would be."""
        now = self.clock()
        b = self.buckets.get(key)
        if b is None:
            b = self.buckets[key] = Bucket(self.rate, 2 * self.rate, now)
        b.tokens = min(2 * self.rate, b.tokens + (now - b.stamp) * self.rate)
        b.stamp = now
        if n <= b.tokens:
            b.tokens -= n
            return 0.0
        return max(0.001, (n - b.tokens) / self.rate) if n <= 2 * self.rate else math.inf


@dataclass
class Outcome:
    """What one request did: per-line results, the valid events and the dead letters."""

    results: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[Event, bytes]] = field(default_factory=list)
    dead: list[bytes] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        """Lines accepted."""
        return len(self.events)

    def body(self) -> dict[str, Any]:
        """The documented answer: counts and a result per line."""
        return {"accepted": self.accepted, "rejected": len(self.results) - self.accepted, "results": self.results}


def split_body(body: bytes, content_type: str) -> list[bytes]:
    """One JSON event (``application/json``) or NDJSON (one per line; blank lines ignored)."""
    if content_type.startswith("application/json") and body.lstrip()[:1] == b"{":
        return [body.strip()]
    return [line.strip() for line in body.split(b"\n") if line.strip()]


def validate(lines: Iterable[bytes], source: str, max_line: int) -> Outcome:
    """Decode every line with the shared validator; rejects become dead letters with their reason."""
    out = Outcome()
    for n, line in enumerate(lines, start=1):
        if len(line) > max_line:
            item: Any = Rejected("line_too_long", f"{len(line)} bytes; the limit is {max_line}", line[:1024])
        else:
            item = decode_line(line)
        if isinstance(item, Rejected):
            out.results.append({"line": n, "status": "rejected", "reason": item.reason, "detail": item.detail})
            out.dead.append(encode_dead_letter(make_dead_letter(line, item.reason, item.detail, source, line=n)))
        else:
            out.results.append({"line": n, "status": "accepted", "event_id": item.event_id, "type": item.type})
            out.events.append((item, line))
    return out


async def publish(publisher: Any, outcome: Outcome) -> None:
    """Send the accepted events and the dead letters; return once the broker acknowledged them all."""
    def send() -> None:
        if outcome.events:
            publisher.publish(outcome.events)
        if outcome.dead:
            publisher.dead_letter(outcome.dead)

    await asyncio.to_thread(send)
