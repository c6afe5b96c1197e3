"""Alert state, the evaluator lease and the durable outbox in Redis.

Only the holder of the lease evaluates and delivers. The lease carries a fencing
number that grows with every new holder, and every write checks it inside a Lua
script: an evaluator that paused past its lease (GC, a frozen VM) cannot write
over its successor. State changes and the notifications they cause are written
in one script, so a crash never loses a notification nor queues one twice for
one transition; each receiver's queue is drained in order and an entry leaves
only after its receiver accepted it (delivery is at least once: a crash between
the receiver's answer and the removal sends that one again).
"""

from __future__ import annotations

from typing import Iterable, Optional

import redis.asyncio as aioredis

from alerts.engine import AlertState, Notification
from ccmon.store import PREFIX, Store

_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local owner, fence = string.match(cur, '^(.*)|(%d+)$')
  if owner == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(fence)
  end
  return 0
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. fence, 'PX', ARGV[2])
return fence
"""
# ARGV: token, n_set, (field, json)*, n_del, field*, n_push, (list key, json)*
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local i = 2
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]); i = i + 2 end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('HDEL', KEYS[2], ARGV[i]); i = i + 1 end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('RPUSH', ARGV[i], ARGV[i + 1]); i = i + 2 end
return 1
"""
# Remove the head of a receiver's queue once delivered (or given up), if it is still the one sent.
# ARGV: token, expected head, stats field ('' for none)
_ACK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('LINDEX', KEYS[2], 0) ~= ARGV[2] then return 0 end
redis.call('LPOP', KEYS[2])
if ARGV[3] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[3], 1) end
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def state_field(rule: str, queue: str) -> str:
    """The state hash field of one alert."""
    return f"{rule}|{queue}"


class AlertStore:
    """Owns every ``ccmon:alerts:*`` key."""

    LEASE = PREFIX + "alerts:lease"
    FENCE = PREFIX + "alerts:fence"
    STATE = PREFIX + "alerts:state"
    STATS = PREFIX + "alerts:stats"
    ERRORS = PREFIX + "alerts:last_error"

    def __init__(self, store: Store):
        self.store = store
        self.redis: aioredis.Redis = store.redis
        self._acquire = self.redis.register_script(_ACQUIRE)
        self._commit = self.redis.register_script(_COMMIT)
        self._ack = self.redis.register_script(_ACK)
        self._release = self.redis.register_script(_RELEASE)

    @staticmethod
    def outbox(receiver: str) -> str:
        """The list of notifications waiting for one receiver."""
        return f"{PREFIX}alerts:outbox:{receiver}"

    async def acquire(self, owner: str, ttl_s: float) -> Optional[str]:
        """Take or renew the evaluator lease; the fencing token when we hold it, else None."""
        fence = await self.store._call(self._acquire(keys=[self.LEASE, self.FENCE], args=[owner, int(ttl_s * 1000)]))
        return f"{owner}|{fence}" if fence else None

    async def release(self, token: str) -> None:
        """Give the lease up (at shutdown), so another worker takes over at once."""
        await self.store._call(self._release(keys=[self.LEASE], args=[token]))

    async def states(self) -> dict[str, AlertState]:
        """Every stored alert state by field."""
        raw = await self.store._call(self.redis.hgetall(self.STATE))
        return {k.decode(): AlertState.decode(v) for k, v in raw.items()}

    async def commit(self, token: str, changed: Iterable[AlertState], gone: Iterable[str],
                     notes: Iterable[tuple[str, Notification]]) -> bool:
        """Write state changes and queue their notifications atomically; False when the lease is lost."""
        sets = [x for s in changed for x in (state_field(s.rule, s.queue), s.encode())]
        dels = list(gone)
        pushes = [x for receiver, n in notes for x in (self.outbox(receiver), n.encode())]
        args = [token, len(sets) // 2, *sets, len(dels), *dels, len(pushes) // 2, *pushes]
        return bool(await self.store._call(self._commit(keys=[self.LEASE, self.STATE], args=args)))

    async def head(self, receiver: str) -> Optional[bytes]:
        """The oldest undelivered notification of a receiver."""
        return await self.store._call(self.redis.lindex(self.outbox(receiver), 0))  # type: ignore[no-any-return]

    async def ack(self, token: str, receiver: str, head: bytes, outcome: str) -> bool:
        """Drop a delivered (``sent``) or abandoned (``dropped``) head and count it."""
        return bool(await self.store._call(self._ack(
            keys=[self.LEASE, self.outbox(receiver), self.STATS], args=[token, head, f"{outcome}:{receiver}"])))

    async def failed(self, receiver: str, error: str) -> None:
        """Count a failed attempt and keep its (secret-free) error for /api/alerts."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self.STATS, f"failed:{receiver}", 1)
        pipe.hset(self.ERRORS, receiver, error[:500])
        await self.store._call(pipe.execute())

    async def delivery_status(self, receivers: Iterable[str]) -> dict[str, dict[str, object]]:
        """Per receiver: queued, sent, failed, dropped and the last error."""
        names = list(receivers)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.STATS)
        pipe.hgetall(self.ERRORS)
        for n in names:
            pipe.llen(self.outbox(n))
        stats, errors, *lengths = await self.store._call(pipe.execute())
        stats = {k.decode(): int(v) for k, v in stats.items()}
        out: dict[str, dict[str, object]] = {}
        for n, length in zip(names, lengths):
            err = errors.get(n.encode())
            out[n] = {"queued": length, "sent": stats.get(f"sent:{n}", 0), "failed": stats.get(f"failed:{n}", 0),
                      "dropped": stats.get(f"dropped:{n}", 0), "last_error": err.decode() if err else None}
        return out
