"""The Redis adapter: it alone names keys, sets TTLs and runs the atomic batch commit."""

from __future__ import annotations

import asyncio
import hashlib
import time
import zlib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable, Collection, Iterable, Mapping, Optional

import hiredis
import msgspec
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError, TimeoutError as RedisTimeoutError

from agents.config import MetricsConfig, day_end_epoch, day_of
from agents.core import (AGENT_BUCKET, AGENT_DAY, GLOBAL, OCCUPANCY_STATES, TOTAL, Z_WAIT, Z_WAITING, Deltas,
                         WindowKey)
from agents.snapshot import (DUE_SETS, OPEN_SETS, WINDOWED_SETS, Assembler, QueueData, QueueRaw, _Scan, build_snapshot,
                             members_from, reader_spans, scan_flat, segment_bounds, segment_meta)
from ccmon.errors import StoreUnavailable
from ccmon.settings import redact_url

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
# Label values admitted first come up to a cap (agents.core.LabelCap), atomically, so every worker sees one set.
# KEYS[1] the admitted set; ARGV[1] the cap, then the names asked. Returns {full, names}: when the set is not full,
# the asked names now in it; when it is, all of its members (the answer is then final for any name).
_ADMIT = """
local cap = tonumber(ARGV[1])
local n = redis.call('SCARD', KEYS[1])
local kept = {}
for j = 2, #ARGV do
  if redis.call('SISMEMBER', KEYS[1], ARGV[j]) == 1 then
    kept[#kept + 1] = ARGV[j]
  elseif n < cap then
    redis.call('SADD', KEYS[1], ARGV[j])
    n = n + 1
    kept[#kept + 1] = ARGV[j]
  end
end
if n >= cap then return {1, redis.call('SMEMBERS', KEYS[1])} end
return {0, kept}
"""
TP = tuple[str, int]  # (topic, partition)
READ_CHUNK = 20  # queues per read script call: each call is short, so commits are not held up
# hiredis parses a reply, then moves the rest of its buffer to the front, so a large feed costs more per reply.
# bench/scrape.py's 500-queue replies parse in 21 ms fed in slices of this size, 26 ms in the socket's 256 KiB
# reads, 42 ms in 1 MiB ones.
FEED_BYTES = 64 * 1024
WINDOW_SUMS = "ws"  # key kind of a queue's rolling-window segment sums (read.lua)
WINDOW_WAITS = "wz"  # key kind of the longest wait of each bucket in a queue's window-sums range (read.lua)
# The same two for a queue's agents' own fields (AGENT_BUCKET): sums of their own, so that a reader that shows no
# per-agent view (the alert evaluator) reads none of them. Their wz only marks the sums as read.lua's: no waits.
AGENT_WINDOW_SUMS, AGENT_WINDOW_WAITS = "wsa", "wza"
WINDOW_SUMS_TTL = 3600  # a queue's segment sums are rebuilt from the buckets at least this often...
WINDOW_SUMS_JITTER = 900  # ...plus up to this much per queue, so the queues do not all rebuild in one scrape


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


def _fix_for(exc: BaseException) -> str:
    """What to do about a failed Redis connection."""
    text = str(exc)
    if isinstance(exc, AuthenticationError) or "NOAUTH" in text or "WRONGPASS" in text:
        return "check the password (CCMON_REDIS_PASSWORD / _FILE, or the one in CCMON_REDIS_URL)"
    if "SSL" in text or "certificate" in text:
        return ("check TLS: a rediss:// URL, CCMON_REDIS_TLS_CA_FILE for the server's CA, and "
                "CCMON_REDIS_TLS_CERT_FILE/_KEY_FILE if Redis wants a client certificate")
    return "is it running?"


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

    def __init__(self, url: str, cfg: MetricsConfig, options: Mapping[str, Any] | None = None):
        """``options``: redis-py connection arguments beside the URL (``Settings.redis_options()``: password, TLS)."""
        self.url = url
        self.cfg = cfg
        options = dict(options or {})
        self.redis = aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30, **options)
        self._commit = self.redis.register_script(resources.files("ccmon").joinpath("commit.lua").read_text())
        self._reset = self.redis.register_script(resources.files("ccmon").joinpath("topic_reset.lua").read_text())
        self._reset_part = self.redis.register_script(_RESET_PARTITION)
        self._admit = self.redis.register_script(_ADMIT)
        # Reads now trust the window sums every commit keeps (commit.lua's last section); False makes them sum
        # the buckets in read.lua instead, as reads at another instant always do.
        self.window_sums = True
        # The snapshot read's own connections (RESP2: its replies are parsed by hiredis directly, see _pipeline).
        self.reader = aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30, protocol=2,
                                              decode_responses=True, **options)
        self._read_lua = resources.files("ccmon").joinpath("read.lua").read_text()
        self._read_sha = hashlib.sha1(self._read_lua.encode()).hexdigest()
        self._read_cmds: dict[str, _QueueReads] = {}
        self._nspans = len(reader_spans(cfg))
        self.clock: Callable[[], float] = time.time  # the readers' wall clock: what "now" is (tests move it)
        # Redis's health as this process sees it (/health, /metrics/worker): when the current outage began
        # (wall clock; None while the last call succeeded) and how many calls have failed since start-up.
        self.down_since: Optional[float] = None
        self.errors = 0

    # ------------------------------------------------------------- key naming
    def key(self, wk: WindowKey) -> str:
        """The Redis key of a counter hash."""
        kind, queue, part = wk
        return f"{PREFIX}{kind}:{queue}" if part == "" else f"{PREFIX}{kind}:{queue}:{part}"

    def expire_at(self, wk: WindowKey) -> int | None:
        """When a counter hash may go: buckets after the longest window, days after retention."""
        kind, queue, part = wk
        if kind in ("b", "zw", AGENT_BUCKET):
            return int(part) + self.cfg.longest_window_seconds + 2 * self.cfg.bucket_seconds  # type: ignore[arg-type]
        if kind in ("d", "zwd", AGENT_DAY):
            return day_end_epoch(str(part), self.cfg.queue(queue)) + self.cfg.day_retention_days * 86400
        return None

    @staticmethod
    def state_key(tp: TP) -> str:
        """The hash of entity states owned by one partition."""
        return f"{PREFIX}state:{tp[0]}:{tp[1]}"

    OFFSETS = PREFIX + "offsets"
    QUEUES = PREFIX + "queues"
    ADMITTED = PREFIX + "admitted"  # queue names admitted under the cap (QueueCap); other kinds: + ":" + kind
    STATS = PREFIX + "stats"
    HIGHWATER = PREFIX + "highwater"
    STREAM_TIME = PREFIX + "stream_ms"
    TOPIC_IDS = PREFIX + "topic_ids"
    COMMITS = PREFIX + "commits"  # pub/sub channel: a batch was committed

    # ------------------------------------------------------------------ calls
    async def _call(self, coro):  # type: ignore[no-untyped-def]
        try:
            result = await coro
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self.failed()
            raise StoreUnavailable(f"Redis at {self.redacted_url} is unreachable ({exc}); {_fix_for(exc)}") from exc
        except RedisError as exc:
            self.failed()
            raise StoreUnavailable(f"Redis at {self.redacted_url} refused a command: {exc}") from exc
        self.down_since = None
        return result

    def failed(self) -> None:
        """Count a Redis call that failed (this store's, or a helper process's on its behalf: ccmon/scrape_pool.py)."""
        self.errors += 1
        if self.down_since is None:
            self.down_since = time.time()

    @property
    def redacted_url(self) -> str:
        """The URL without its password, for messages."""
        return redact_url(self.url)

    async def ping(self) -> None:
        """Fail with StoreUnavailable unless Redis answers."""
        await self._call(self.redis.ping())

    async def close(self) -> None:
        """Close the connection pools."""
        await self.redis.aclose()
        await self.reader.aclose()

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

    async def partition_offsets(self, tps: Collection[TP]) -> dict[TP, int]:
        """The last offset applied of each partition (-1 for none): where Redis says each one resumes."""
        tps = list(tps)
        if not tps:
            return {}
        raw = await self._call(self.redis.hmget(self.OFFSETS, [_tp_field(tp) for tp in tps]))
        return {tp: int(v) if v is not None else -1 for tp, v in zip(tps, raw)}

    async def count(self, **stats: int) -> None:
        """Add to counters of the ``ccmon:stats`` hash outside a batch commit (e.g. ``rewound_messages``)."""
        pipe = self.redis.pipeline(transaction=True)
        for name, value in stats.items():
            pipe.hincrby(self.STATS, name, value)
        await self._call(pipe.execute())

    def admitted_key(self, kind: str) -> str:
        """The set of the values of label ``kind`` admitted under its cap (``queues``, ``agents``...)."""
        return self.ADMITTED if kind == "queues" else f"{self.ADMITTED}:{kind}"

    async def admit(self, kind: str, names: Collection[str], limit: int) -> tuple[list[str], bool]:
        """Admit values of label ``kind`` first come while fewer than ``limit`` are admitted, atomically for every
        worker: (the asked values admitted, or every admitted value once the set is full; whether it is full)."""
        full, admitted = await self._call(self._admit(keys=[self.admitted_key(kind)], args=[limit, *names]))
        return [n.decode() for n in admitted], bool(full)

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
                 len(exp) // 2, *exp, *self.window_sum_args(counters, zadd_of, zrem_of), self.COMMITS]
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

    def window_sum_args(self, counters: Mapping[WindowKey, Mapping[str, int]],
                        zadd: Mapping[WindowKey, Mapping[str, int]],
                        zrem: Mapping[WindowKey, Collection[str]]) -> list[object]:
        """The commit's window-sum section (the last of commit.lua) for a batch's ``Deltas.counters``, ``.zadd`` and
        ``.zrem``: per bucket the batch touched, the queue's segment sums and longest-waits keys, the bucket, its wait
        set's key when the batch added or removed waits there ('' otherwise), and the bucket's nonzero field
        increments; the same for the agents' bucket (no waits). Starts with the entry count and the seconds after its
        start at which a bucket expires."""
        waits = {(q, b) for (kind, q, b), m in [*zadd.items(), *zrem.items()] if kind == Z_WAIT and m}
        out: list[object] = [0, self.expire_at(("b", GLOBAL, 0))]
        n = 0
        for (kind, q, b), fields in counters.items():
            if kind != "b" and kind != AGENT_BUCKET:
                continue
            flat = [x for f, v in fields.items() if v for x in (f, v)]
            if kind == AGENT_BUCKET:  # the agents' own sums: no waits
                if flat:
                    out += [self.key((AGENT_WINDOW_SUMS, q, "")), self.key((AGENT_WINDOW_WAITS, q, "")), b, "",
                            len(flat) // 2, *flat]
                    n += 1
                continue
            touched = (q, b) in waits
            if flat or touched:
                waits.discard((q, b))
                out += [self.key((WINDOW_SUMS, q, "")), self.key((WINDOW_WAITS, q, "")), b,
                        self.key((Z_WAIT, q, b)) if touched else "", len(flat) // 2, *flat]
                n += 1
        for q, b in sorted(waits, key=str):
            out += [self.key((WINDOW_SUMS, q, "")), self.key((WINDOW_WAITS, q, "")), b, self.key((Z_WAIT, q, b)), 0]
            n += 1
        out[0] = n
        return out

    def _queue_reads(self, queue: str, day: str) -> "_QueueReads":
        """The packed commands that read a queue (cached: only the day and the instant change)."""
        reads = self._read_cmds.get(queue)
        if reads is None:
            live = queue != GLOBAL  # the pseudo-queue has no calls, agents or tickets of its own
            ws, wsa = self.key((WINDOW_SUMS, queue, "")), self.key((AGENT_WINDOW_SUMS, queue, ""))
            key = self.key
            jitter = zlib.crc32(queue.encode()) % WINDOW_SUMS_JITTER

            def sums(k: str) -> bytes:  # a window-sums hash and its spans' hashes
                return b"".join([_pack("HGETALL", k)] + [_pack("HGETALL", f"{k}:{j}") for j in range(self._nspans)])

            reads = _QueueReads(
                item=[ws, key((WINDOW_WAITS, queue, "")), key(("b", queue, "")) + ":", key((Z_WAIT, queue, "")) + ":",
                      jitter],
                sums=sums(ws),
                agent_item=[wsa, key((AGENT_WINDOW_WAITS, queue, "")), key((AGENT_BUCKET, queue, "")) + ":", "", jitter],
                agent_sums=sums(wsa),
                static=b"".join([_pack("HGETALL", key(("n", queue, ""))), _pack("HGETALL", key((TOTAL, queue, "")))]
                                + ([_pack("ZCARD", key((Z_WAITING, queue, ""))),
                                    _pack("ZRANGE", key((Z_WAITING, queue, "")), 0, 0, "WITHSCORES")]
                                   + [_pack("ZRANGE", key((k, queue, "")), 0, -1, "WITHSCORES")
                                      for k in OPEN_SETS] if live else [])),
                windowed=tuple(b"*5\r\n$13\r\nZRANGEBYSCORE\r\n" + _bulk(key((k, queue, "")))
                               for k in WINDOWED_SETS) if live else (),
                due=tuple(b"*4\r\n$6\r\nZCOUNT\r\n" + _bulk(key((k, queue, ""))) + b"$4\r\n-inf\r\n"
                          for k in DUE_SETS) if live else (),
                live=live,
            )
            if len(self._read_cmds) >= 100_000:
                self._read_cmds.clear()
            self._read_cmds[queue] = reads
        if reads.day != day:
            reads.day = day
            reads.daily = _pack("HGETALL", self.key(("d", queue, day))) + \
                _pack("ZREVRANGE", self.key((Z_WAIT + "d", queue, day)), 0, 0, "WITHSCORES")
            reads.agent_daily = _pack("HGETALL", self.key((AGENT_DAY, queue, day)))
        return reads

    async def _pipeline(self, commands: list[bytes], replies: Optional[int] = None,
                        consume: Optional[Callable[[list[object]], None]] = None,
                        encoding: Optional[str] = "utf-8") -> list[object]:
        """Replies to pre-packed commands (``replies`` of them: an item may pack several), sent in one write on one
        of the reader's connections; ``consume`` sees the replies so far each time more arrived, so the caller's
        work overlaps Redis's.

        Replies are parsed by hiredis as they arrive: redis-py's per-reply machinery (a timeout context and a
        few awaits per reply) would cost more than Redis takes to answer. Error replies come back as
        ``hiredis.ReplyError`` values.
        """
        pool = self.reader.connection_pool
        try:
            conn = await pool.get_connection()
        except TypeError:  # redis-py 5 wants a command name
            conn = await pool.get_connection("_")  # type: ignore[call-arg]
        clean = False
        try:
            async with asyncio.timeout(30):
                await conn.send_packed_command(b"".join(commands), check_health=False)
                stream = getattr(conn, "_reader", None)
                out: list[object] = []
                n = len(commands) if replies is None else replies
                if not isinstance(stream, asyncio.StreamReader):  # not the redis-py we know: its own reads
                    for _ in range(n):
                        try:
                            out.append(await conn.read_response())
                        except NoScriptError as exc:
                            out.append(hiredis.ReplyError(f"NOSCRIPT {exc}"))
                        except ResponseError as exc:
                            out.append(hiredis.ReplyError(str(exc)))
                    if consume is not None:
                        consume(out)
                else:
                    parser = hiredis.Reader(encoding=encoding, errors="replace") if encoding else hiredis.Reader()
                    while len(out) < n:
                        data = await stream.read(1 << 20)
                        if not data:
                            raise RedisConnectionError("Redis closed the connection during a snapshot read")
                        for start in range(0, len(data), FEED_BYTES):
                            parser.feed(data, start, min(FEED_BYTES, len(data) - start))
                            reply = parser.gets()
                            while reply is not False:
                                out.append(reply)
                                reply = parser.gets()
                        if consume is not None:
                            consume(out)
            clean = True
            return out
        finally:
            if not clean:
                await conn.disconnect()  # replies may be pending on it: never reuse it
            await pool.release(conn)

    async def snapshot(self, now_ms: int | None = None, only: Iterable[str] | None = None,
                       rollup_all: bool = True, agents: bool = True, with_global: bool = True,
                       sums: bool = False) -> dict[str, object]:
        """The snapshot document at ``now_ms`` (wall clock by default); ``rollup_all=False`` leaves out the all-queues
        roll-up but its custom metrics (all that ``/metrics`` shows of it), ``agents=False`` the per-agent survey
        views, ``sums`` adds the custom metrics' summed counters (``build_snapshot``). ``with_global=False`` reads
        nothing of what belongs to no queue (it counts in the roll-up and the KPIs): for a reader that gets it from
        another read."""
        wall_ms = int(self.clock() * 1000)
        now_ms = wall_ms if now_ms is None else now_ms
        queues = await self.queues()
        if only is not None:
            wanted = set(only)
            queues = [q for q in queues if q in wanted]
        cfg = self.cfg
        width = cfg.bucket_seconds
        # A read now brings the stored window sums to now, then reads them (mode 2); a read at another instant, or
        # while the commit does not keep the sums, sums the buckets in the script and writes nothing (mode 0).
        mode = 2 if self.window_sums and abs(now_ms - wall_ms) <= width * 1000 else 0
        last, firsts = segment_bounds(cfg, now_ms)
        meta = segment_meta(width, last, firsts)
        nspans = len(firsts)
        all_queues = [*queues, GLOBAL] if with_global else list(queues)
        if not all_queues:
            return build_snapshot({}, cfg, now_ms, rollup_all, agents, sums)
        reads = [self._queue_reads(q, day_of(now_ms, cfg.queue(q))) for q in all_queues]
        # Each queue's read.lua items: its sums', and its agents' own sums' when the read shows agents.
        items = [[[*r.item, meta, last, firsts], [*r.agent_item, meta, last, firsts]] if agents
                 else [[*r.item, meta, last, firsts]] for r in reads]
        per_queue = len(items[0])
        header: list[object] = [mode, width, self.expire_at(("b", GLOBAL, 0)), WINDOW_SUMS_TTL]
        # Per chunk of queues: read.lua, then each queue's plain reads: [its window sums (mode 2)], [its agents' own
        # window sums (mode 2, agents)], the day's counters and longest wait, [the day's agents' own counters
        # (agents)], gauges, totals, and (real queues) the waiting, open-agent and ticket sets. Redis answers these
        # faster than read.lua could return them, and the reader decodes each queue while Redis answers the next ones.
        now_arg = _bulk(str(now_ms))
        # Windowed ticket facts: only those a read at now can count (members_from .. now), not the ones still to come.
        facts_range = _bulk(str(members_from(now_ms, firsts))) + now_arg + _bulk("WITHSCORES")
        commands: list[bytes] = []
        scripts: list[bytes] = []
        script_at: list[int] = []  # where each chunk's script reply is
        starts: list[int] = []  # where each queue's replies start
        sizes: list[int] = []
        per_live = 4 + 2 + len(OPEN_SETS) + len(WINDOWED_SETS) + len(DUE_SETS)
        per_queue_sums = ((1 + nspans) * per_queue if mode == 2 else 0) + (1 if agents else 0)
        at = 0
        for i, r in enumerate(reads):
            if i % READ_CHUNK == 0:
                chunk = [item for q_items in items[i:i + READ_CHUNK] for item in q_items]
                scripts.append(_pack("EVALSHA", self._read_sha, 0, _packer.encode([header, *chunk])))
                commands.append(scripts[-1])
                script_at.append(at)
                at += 1
            if mode == 2:
                commands.append(r.sums)
                if agents:
                    commands.append(r.agent_sums)
            commands.append(r.daily)
            if agents:
                commands.append(r.agent_daily)
            commands.append(r.static)
            if r.windowed:
                commands.append(facts_range.join(r.windowed) + facts_range)
            if r.due:
                commands.append(now_arg.join(r.due) + now_arg)
            sizes.append(per_queue_sums + (per_live if r.live else 4))
            starts.append(at)
            at += sizes[-1]
        assembler = Assembler(cfg, now_ms)
        raws: dict[str, QueueRaw] = {}
        stale: list[int] = []
        state = [0]  # the next queue to decode

        def consume(replies: list[object]) -> None:
            i = state[0]
            while i < len(reads) and len(replies) >= starts[i] + sizes[i]:
                script = replies[script_at[i // READ_CHUNK]]
                if _noscript(script):
                    return  # rerun below, once the script is loaded
                at = starts[i]
                if mode == 2:
                    stored, longest = _range_and_longest(_checked(replies[at]), nspans)
                    segments = [_segment(_checked(x), agents) for x in replies[at + 1:at + 1 + nspans]]
                    at += 1 + nspans
                    if agents:
                        stored_a, _ = _range_and_longest(_checked(replies[at]), nspans)
                        if stored_a != stored:
                            stored = None
                        segments = [_merged(p, _segment(_checked(x))) for p, x in
                                    zip(segments, replies[at + 1:at + 1 + nspans])]
                        at += 1 + nspans
                else:
                    stored = meta
                    k = i % READ_CHUNK * per_queue
                    segments, longest = _script_segments(  # type: ignore[assignment]
                        _checked(script)[k:k + per_queue], nspans, agents)
                if stored != meta or None in segments:
                    # Another reader moved the sums meanwhile, or a hash of them is lost (evicted, or expired before
                    # the others) or was recreated by a commit: rebuilt below.
                    stale.append(i)
                else:
                    d = _queue_data(replies, at, reads[i], segments, longest, agents)  # type: ignore[arg-type]
                    raws[all_queues[i]] = assembler.raw(all_queues[i], d)
                i += 1
            state[0] = i

        replies = await self._call(self._pipeline(commands, at, consume))
        if any(_noscript(replies[k]) for k in script_at):
            await self._call(self.reader.script_load(self._read_lua))  # Redis restarted or flushed its scripts
            replies = await self._call(self._pipeline(commands, at, consume))
        for k in script_at:
            _checked(replies[k])
        if stale:  # rebuilt, stored again, and their sums returned
            header[0] = 3
            redo = [_pack("EVALSHA", self._read_sha, 0,
                          _packer.encode([header, *[item for i in stale[j:j + READ_CHUNK] for item in items[i]]]))
                    for j in range(0, len(stale), READ_CHUNK)]
            fresh = [x for r in await self._call(self._pipeline(redo)) for x in _checked(r)]
            for n, i in enumerate(stale):
                segments, longest = _script_segments(fresh[n * per_queue:(n + 1) * per_queue], nspans, agents)
                raws[all_queues[i]] = assembler.raw(all_queues[i], _queue_data(
                    replies, starts[i] + (1 + nspans) * per_queue, reads[i], segments, longest, agents))
        return build_snapshot(raws, cfg, now_ms, rollup_all, agents, sums)

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


def _bulk(arg: object) -> bytes:
    """One argument in the Redis protocol."""
    b = arg if isinstance(arg, bytes) else str(arg).encode()
    return b"$%d\r\n%s\r\n" % (len(b), b)


def _pack(*args: object) -> bytes:
    """One command in the Redis protocol."""
    return b"*%d\r\n" % len(args) + b"".join(_bulk(a) for a in args)


def _noscript(reply: object) -> bool:
    return isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT")


@dataclass
class _QueueReads:
    """A queue's part of the snapshot read, packed once."""

    item: list[object]  # its read.lua item, but the range
    sums: bytes  # HGETALL of its window sums and of each segment's
    agent_item: list[object]  # the same two for its agents' own fields
    agent_sums: bytes
    static: bytes  # gauges, totals, then (real queues) the waiting set's size and first, and the open-agent sets
    windowed: tuple[bytes, ...]  # ZRANGEBYSCORE of each windowed ticket set, but its range and WITHSCORES
    due: tuple[bytes, ...]  # ZCOUNT of each due ticket set up to now, but its last argument (the instant)
    live: bool
    day: str = ""
    daily: bytes = b""  # the day's counters and its wait set's top
    agent_daily: bytes = b""  # the day's agents' own counters


def _checked(reply: object) -> list:  # type: ignore[type-arg]
    if isinstance(reply, hiredis.ReplyError):
        raise StoreUnavailable(f"Redis refused a snapshot read: {reply}")
    return reply  # type: ignore[return-value]


def _pairs(flat: list) -> dict[str, int]:  # type: ignore[type-arg]
    it = iter(flat)
    return dict(zip(it, map(int, it)))


def _scores(flat: list) -> list[int]:  # type: ignore[type-arg]
    return [int(float(x)) for x in flat[1::2]]


def _longest(maxima: dict[str, int], nspans: int) -> list[Optional[int]]:
    """Each span's longest wait from its segments' ('m|j' fields; -1 for none)."""
    longest: list[Optional[int]] = []
    top: Optional[int] = None
    for j in range(nspans):  # a span's window is segments 0..j
        m = int(maxima.get(f"m|{j}", -1))
        if m >= 0 and (top is None or m > top):
            top = m
        longest.append(top)
    return longest


def _range_and_longest(flat: list, nspans: int) -> tuple[Optional[str], list[Optional[int]]]:  # type: ignore[type-arg]
    """The window-sums hash (read.lua): the range it covers, and each span's longest wait."""
    it = iter(flat)
    fields = dict(zip(it, it))
    return fields.get("@"), _longest(fields, nspans)


def _segment(flat: list, agents: bool = True) -> Optional[_Scan]:  # type: ignore[type-arg]
    """One segment's sums (read.lua), sorted out; None when the hash is not read.lua's (lost, or recreated by a
    commit since: it lacks read.lua's placeholder)."""
    scan = scan_flat(flat, agents)
    if scan.plain.pop("@", None) is None:
        return None
    return scan


def _merged(plain: Optional[_Scan], own: Optional[_Scan]) -> Optional[_Scan]:
    """A window's sums from the queue's hash and its agents' own (``AGENT_BUCKET``, ``AGENT_DAY``): the first's, with
    the agents' fields of both. The first holds agents' fields only when written before they were kept apart; an
    agent's field in both then adds up. None when either is None (lost)."""
    if plain is None or own is None:
        return None
    if not plain.agents:
        plain.agents = own.agents
        return plain
    for a, fields in own.agents.items():
        mine = plain.agents.get(a)
        if mine is None:
            plain.agents[a] = fields
        else:
            for f, v in fields.items():
                mine[f] = mine.get(f, 0) + v
    return plain


def _segments(flat: list, nspans: int,  # type: ignore[type-arg]
              agents: bool = True) -> tuple[list[_Scan], list[Optional[int]]]:
    """The sums read.lua computed and returned itself (modes 0 and 3): 'j|f' and 'm|j' fields."""
    lists: list[list[str]] = [[] for _ in range(nspans)]
    by_index = {str(j): seg for j, seg in enumerate(lists)}
    maxima: dict[str, int] = {}
    it = iter(flat)
    for f, v in zip(it, it):
        j, _, name = f.partition("|")
        seg = by_index.get(j)
        if seg is not None:
            seg.append(name)
            seg.append(v)
        elif j == "m":
            maxima[f] = int(v)
    return [scan_flat(seg, agents) for seg in lists], _longest(maxima, nspans)


def _script_segments(flats: list, nspans: int,  # type: ignore[type-arg]
                     agents: bool) -> tuple[list[_Scan], list[Optional[int]]]:
    """A queue's sums as read.lua returned them (modes 0 and 3): its own, then (``agents``) its agents' own, added
    up (``_merged``)."""
    segments, longest = _segments(flats[0], nspans, agents)
    if not agents:
        return segments, longest
    return [_merged(p, a) for p, a in zip(segments, _segments(flats[1], nspans)[0])], longest  # type: ignore[misc]


def _queue_data(replies: list, at: int, r: _QueueReads, segments: list[_Scan],  # type: ignore[type-arg]
                longest: list[Optional[int]], agents: bool = True) -> QueueData:
    """One queue's replies from ``at`` on: day, day's wait top, [the day's agents' own counters (``agents``)], gauges,
    totals, then (real queues) its sets."""
    day, day_wait = _checked(replies[at]), _checked(replies[at + 1])
    if agents:
        day_scan = _merged(scan_flat(day), scan_flat(_checked(replies[at + 2])))
        at += 1
    else:
        day_scan = scan_flat(day, False)
    gauges, totals = _checked(replies[at + 2]), _checked(replies[at + 3])
    d = QueueData(segment_scans=segments, max_wait_ms=longest, day_scan=day_scan,
                  day_max_wait_ms=int(float(day_wait[1])) if day_wait else None,
                  gauges=_pairs(gauges), totals=_pairs(totals))
    if r.live:
        k = at + 4
        waiting: Any = replies[k]
        first = _checked(replies[k + 1])
        d.waiting = (waiting, int(float(first[1])) if first else None)
        k += 2
        d.open_since = {st: _scores(_checked(x)) for st, x in zip(OCCUPANCY_STATES, replies[k:k + len(OPEN_SETS)])}
        k += len(OPEN_SETS)
        d.windowed_members = {kind: _scores(_checked(x))
                              for kind, x in zip(WINDOWED_SETS, replies[k:k + len(WINDOWED_SETS)])}
        k += len(WINDOWED_SETS)
        d.due_members = {kind: _checked(x) for kind, x in zip(DUE_SETS, replies[k:k + len(DUE_SETS)])}  # type: ignore[misc]
    return d
