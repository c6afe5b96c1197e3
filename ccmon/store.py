"""The Redis adapter: it alone names keys, sets TTLs and runs the atomic batch commit."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Iterable, Optional

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, TimeoutError as RedisTimeoutError

from agents.config import MetricsConfig, day_end_epoch
from agents.core import COUNTER_HASHES, Deltas, WindowKey, Z_WAITING
from agents.snapshot import LIVE_SETS, StoreData, assemble, needed_keys
from ccmon.errors import StoreUnavailable

PREFIX = "ccmon:"

# Fenced like a commit: only resets when the stored offset is still the one the worker saw.
_packer = msgspec.msgpack.Encoder()

_RESET_PARTITION = """
if (redis.call('HGET', KEYS[1], ARGV[1]) or '-1') ~= ARGV[2] then return 1 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[2])
return 0
"""
TP = tuple[str, int]  # (topic, partition)
READ_CHUNK = 2000  # keys per read script call: each call is short, so commits are not held up


@dataclass
class Commit:
    """Everything one batch writes, applied in a single atomic step."""

    offsets: dict[TP, tuple[int, int]] = field(default_factory=dict)  # tp -> (expected stored, new)
    deltas: Deltas = field(default_factory=Deltas)
    states: dict[TP, dict[str, Optional[bytes]]] = field(default_factory=dict)  # None deletes
    stream_ms: dict[TP, int] = field(default_factory=dict)
    queues: set[str] = field(default_factory=set)
    stats: dict[str, int] = field(default_factory=dict)
    highwater: dict[TP, int] = field(default_factory=dict)


class Fenced(Exception):
    """Another writer moved these partitions' offsets: reload their state and redo the batch."""

    def __init__(self, tps: list[TP]):
        super().__init__(f"offsets moved under us for {tps}")
        self.tps = tps


def redact_url(url: str) -> str:
    """A Redis URL without its credentials, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def _tp_field(tp: TP) -> str:
    return f"{tp[0]}:{tp[1]}"


def _groups(flat: list[object], width: int = 1) -> int:
    """How many (key, n, n x ``width`` items) groups a flat commit section holds."""
    count, i = 0, 0
    while i < len(flat):
        i += 2 + flat[i + 1] * width  # type: ignore[operator]
        count += 1
    return count


class Store:
    """Counters, gauges, entity states and partition offsets in one Redis database."""

    def __init__(self, url: str, cfg: MetricsConfig):
        self.url = url
        self.cfg = cfg
        self.redis = aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
        self._commit = self.redis.register_script(resources.files("ccmon").joinpath("commit.lua").read_text())
        self._reset = self.redis.register_script(resources.files("ccmon").joinpath("topic_reset.lua").read_text())
        self._reset_part = self.redis.register_script(_RESET_PARTITION)
        self._read = self.redis.register_script(resources.files("ccmon").joinpath("read.lua").read_text())

    # ------------------------------------------------------------- key naming
    def key(self, wk: WindowKey) -> str:
        """The Redis key of a counter hash."""
        kind, queue, part = wk
        return f"{PREFIX}{kind}:{queue}" if part == "" else f"{PREFIX}{kind}:{queue}:{part}"

    def expire_at(self, wk: WindowKey) -> int | None:
        """When a counter hash may go: buckets after the longest window, days after retention."""
        kind, queue, part = wk
        if kind in ("b", "zw"):
            return int(part) + self.cfg.longest_window_seconds + 2 * self.cfg.bucket_seconds  # type: ignore[arg-type]
        if kind in ("d", "zwd"):
            return day_end_epoch(str(part), self.cfg.queue(queue)) + self.cfg.day_retention_days * 86400
        return None

    @staticmethod
    def state_key(tp: TP) -> str:
        """The hash of entity states owned by one partition."""
        return f"{PREFIX}state:{tp[0]}:{tp[1]}"

    OFFSETS = PREFIX + "offsets"
    QUEUES = PREFIX + "queues"
    STATS = PREFIX + "stats"
    HIGHWATER = PREFIX + "highwater"
    STREAM_TIME = PREFIX + "stream_ms"
    TOPIC_IDS = PREFIX + "topic_ids"
    COMMITS = PREFIX + "commits"  # pub/sub channel: a batch was committed

    # ------------------------------------------------------------------ calls
    async def _call(self, coro):  # type: ignore[no-untyped-def]
        try:
            return await coro
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable(f"Redis at {self.redacted_url} is unreachable ({exc}); is it running?") from exc
        except RedisError as exc:
            raise StoreUnavailable(f"Redis at {self.redacted_url} refused a command: {exc}") from exc

    @property
    def redacted_url(self) -> str:
        """The URL without its password, for messages."""
        return redact_url(self.url)

    async def ping(self) -> None:
        """Fail with StoreUnavailable unless Redis answers."""
        await self._call(self.redis.ping())

    async def close(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()

    async def reset_if_recreated(self, topic: str, topic_id: str, partitions: int) -> bool:
        """Forget a topic's offsets and states when its id changed; True when it did."""
        if not topic_id:
            return False
        keys = [self.TOPIC_IDS, self.OFFSETS] + [self.state_key((topic, p)) for p in range(partitions)]
        return bool(await self._call(self._reset(keys=keys, args=[topic, topic_id, partitions])))

    async def load_partition(self, tp: TP) -> tuple[int, dict[str, bytes], Optional[int]]:
        """The last applied offset (-1 for none), the entity states and the stream time of one partition."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(self.OFFSETS, _tp_field(tp))
        pipe.hgetall(self.state_key(tp))
        pipe.hget(self.STREAM_TIME, _tp_field(tp))
        offset, states, stream = await self._call(pipe.execute())
        return (
            int(offset) if offset is not None else -1,
            {k.decode(): v for k, v in states.items()},
            int(stream) if stream is not None else None,
        )

    async def reset_partition(self, tp: TP, expected: int) -> None:
        """Forget one partition's offset and entity states (the log no longer holds them); fenced."""
        field_ = _tp_field(tp)
        bad = await self._call(
            self._reset_part(keys=[self.OFFSETS, self.state_key(tp), self.STREAM_TIME], args=[field_, str(expected)])
        )
        if bad:
            raise Fenced([tp])

    def commit_args(self, c: Commit) -> tuple[bytes, bytes]:
        """The two arguments of the commit script: the packed array and the concatenated state blobs."""
        args: list[object] = [self.OFFSETS, len(c.offsets)]
        for tp, (expected, new) in c.offsets.items():
            args += [_tp_field(tp), str(expected), str(new)]
        incr: list[object] = []  # groups: key, n, n x (field, delta)
        expiries: dict[str, int] = {}
        key, expire_at = self.key, self.expire_at
        counters, zadd_of, zrem_of = c.deltas.counters, c.deltas.zadd, c.deltas.zrem
        for wk, fields in counters.items():
            items = [x for f, v in fields.items() if v for x in (f, v)]
            if items:
                k = key(wk)
                incr += [k, len(items) // 2, *items]
                at = expire_at(wk)
                if at is not None:
                    expiries[k] = at
        stats = [x for name, v in c.stats.items() if v for x in (name, v)]
        if stats:
            incr += [self.STATS, len(stats) // 2, *stats]
        sets: list[object] = []
        for tp, hw in c.highwater.items():
            sets += [self.HIGHWATER, _tp_field(tp), hw]
        for tp, ms in c.stream_ms.items():
            sets += [self.STREAM_TIME, _tp_field(tp), ms]
        sets += [self.STATS, "last_commit_ms", int(time.time() * 1000)]
        blob_sets: list[object] = []  # groups: key, n, n x (field, start, length) into the blobs argument
        dels: list[object] = []  # groups: key, n, n fields
        blobs: list[bytes] = []
        at_byte = 1  # Lua strings count from 1
        for tp, states in c.states.items():
            sk = self.state_key(tp)
            put: list[object] = []
            gone: list[str] = []
            for eid, blob in states.items():
                if blob is None:
                    gone.append(eid)
                else:
                    put += [eid, at_byte, len(blob)]
                    blobs.append(blob)
                    at_byte += len(blob)
            if put:
                blob_sets += [sk, len(put) // 3, *put]
            if gone:
                dels += [sk, len(gone), *gone]
        adds: list[object] = [self.QUEUES, len(c.queues), *c.queues] if c.queues else []
        zrem: list[object] = []
        for wk, members in zrem_of.items():
            zrem += [key(wk), len(members), *members]
        zadd: list[object] = []
        for wk, scored in zadd_of.items():
            k = key(wk)
            zadd += [k, len(scored), *(x for m, score in scored.items() for x in (score, m))]
            at = expire_at(wk)
            if at is not None:
                expiries[k] = at
        exp: list[object] = [x for kv in expiries.items() for x in kv]
        args += [_groups(incr, 2), *incr, len(sets) // 3, *sets, _groups(blob_sets, 3), *blob_sets,
                 _groups(dels), *dels, 1 if adds else 0, *adds, _groups(zrem), *zrem, _groups(zadd, 2), *zadd,
                 len(exp) // 2, *exp, self.COMMITS]
        return _packer.encode(args), b"".join(blobs)

    async def commit(self, c: Commit) -> None:
        """Apply a batch atomically; raise Fenced if another writer moved our offsets."""
        bad = await self._call(self._commit(keys=[], args=list(self.commit_args(c))))
        if bad:
            wanted = {_tp_field(tp): tp for tp in c.offsets}
            raise Fenced([wanted[b.decode() if isinstance(b, bytes) else b] for b in bad])

    # ---------------------------------------------------------------- readers
    async def queues(self) -> list[str]:
        """Every queue seen so far."""
        return sorted(q.decode() for q in await self._call(self.redis.smembers(self.QUEUES)))

    async def snapshot(self, now_ms: int | None = None, only: Iterable[str] | None = None) -> dict[str, object]:
        """The snapshot document at ``now_ms`` (wall clock by default)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        queues = await self.queues()
        if only is not None:
            wanted = set(only)
            queues = [q for q in queues if q in wanted]
        reads: list[tuple[WindowKey, str]] = [
            (wk, "h" if wk[0] in COUNTER_HASHES else "m") for wk in needed_keys(queues, self.cfg, now_ms)
        ] + [((kind, q, ""), "s") for q in queues for kind in LIVE_SETS]
        # Scripts of a bounded size, pipelined: one round trip, and Redis serves commits in between.
        pipe = self.redis.pipeline(transaction=False)
        for i in range(0, len(reads), READ_CHUNK):
            chunk = reads[i:i + READ_CHUNK]
            await self._read(keys=[self.key(wk) for wk, _ in chunk], args=["".join(op for _, op in chunk)], client=pipe)
        rows = [row for part in await self._call(pipe.execute()) for row in part] if queues else []
        data = StoreData()
        for (wk, op), row in zip(reads, rows):
            if not row:
                continue
            if op == "h":
                data.counters[wk] = {row[j].decode(): int(row[j + 1]) for j in range(0, len(row), 2)}
            elif op == "m":
                data.zmax[wk] = int(float(row))
            else:
                kind, q, _ = wk
                scores = [int(float(x)) for x in row]
                if kind == Z_WAITING:
                    data.waiting[q] = (len(scores), min(scores))
                elif kind.startswith("za:"):
                    data.open_since[(q, kind[len("za:"):])] = scores
                else:
                    data.ticket_members[(kind, q)] = scores
        return assemble(queues, data, self.cfg, now_ms)

    async def agent_states(self, topic: str, partitions: int) -> list[dict[str, object]]:
        """Every agent's latest state (since, queues, reason), read from the agents topic's entity states."""
        from agents.core import decode_state

        pipe = self.redis.pipeline(transaction=False)
        for p in range(partitions):
            pipe.hgetall(self.state_key((topic, p)))
        out = []
        for rows in await self._call(pipe.execute()):
            for raw in rows.values():
                rec = decode_state("agents", raw)
                latest = rec.latest()  # type: ignore[attr-defined]
                if latest is not None:
                    since, st, queues, reason = latest
                    out.append({"agent_id": rec.agent_id, "state": st, "since": since / 1000,  # type: ignore[attr-defined]
                                "queues": list(queues), "reason": reason})
        return sorted(out, key=lambda a: str(a["agent_id"]))

    async def status(self) -> dict[str, object]:
        """Worker self-stats: counters, last commit time, and lag per partition."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.STATS)
        pipe.hgetall(self.OFFSETS)
        pipe.hgetall(self.HIGHWATER)
        stats, offsets, hw = await self._call(pipe.execute())
        stats = {k.decode(): int(v) for k, v in stats.items()}
        offsets = {k.decode(): int(v) for k, v in offsets.items()}
        lag = {f: max(0, int(h) - offsets.get(f.decode(), -1) - 1) for f, h in hw.items()}
        return {"stats": stats, "offsets": offsets, "lag": {k.decode(): v for k, v in lag.items()}}
