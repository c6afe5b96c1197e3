"""End-to-end figures on a real embedded broker and Redis: throughput, latency, scaling, memory.

Each function starts what it needs, prints a status line while it runs, and returns a dict of
figures. ``bench/run.py`` calls them and writes the table; each can also run alone:

    .venv/bin/python bench/e2e.py throughput --events 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec  # noqa: E402
import redis  # noqa: E402

from agents.oracle import compute  # noqa: E402
from agents.core import TOTAL  # noqa: E402
from ccmon.services import (  # noqa: E402
    Embedded, free_port, process_usage, python_cmd, spawn, start_embedded, stop,
)
from ccmon.settings import Settings, child_environment  # noqa: E402
from ccmon.store import PREFIX  # noqa: E402
from streams.events import DOMAINS, Event, event_from_dict  # noqa: E402
from streams.producer import Publisher  # noqa: E402
from streams.simulator import SimConfig, generate  # noqa: E402
from streams.topics import ensure_topics  # noqa: E402

QUEUES = tuple(f"q{i:02d}" for i in range(50))
# A large center: 50 queues, 3,000 calls/h and 600 tickets/h each, 60 agents each (3,000 agents).
MIX = dict(arrival_rate_per_hour=3000.0, agents_per_queue=60, ticket_rate_per_hour=600.0)
# Tickets stay in memory for the FCR window after they are solved; a short window keeps the
# entity population steady within a run of simulated hours (the memory figure needs that).
CONFIG_YAML = "fcr_window: 1h\n"
# The memory run needs the population steady from its first million events (~45 simulated minutes): tickets
# live 20x shorter (their delays scaled by 0.05: about 20 minutes from creation to close) and solved ones
# stay 15 minutes for FCR, so open and held tickets level off within the first half million events.
MEMORY_MIX = dict(MIX, ticket_time_scale=0.05)
MEMORY_CONFIG_YAML = "fcr_window: 15m\n"
# The memory run's steady rate: one worker sustains it while the producer shares the two cores, so the worker's
# backlog, and what it buffers of it, stays alike from the first sample to the last. ``--rate 0``: unpaced.
MEMORY_RATE = 20_000.0
WITHOUT_DIR = Path(__file__).resolve().parent / "without"  # its sitecustomize leaves a part out (--without)


def status(text: str) -> None:
    """One overwritten status line on a terminal, plain lines otherwise."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + text)
    else:
        sys.stderr.write(text + "\n")
    sys.stderr.flush()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, seconds (all its threads)."""
    return _usage(pid)[0]


def rss_mib(pid: int) -> float:
    """Resident set of a process, MiB."""
    return _usage(pid)[1]


def _usage(pid: int) -> tuple[float, float]:
    usage = process_usage(pid)
    if usage is None:
        raise RuntimeError(f"cannot read /proc/{pid}/stat: the process has exited, or this is not Linux")
    return usage


def _alerts_setting(alerts: Optional[Path]) -> dict[str, str]:
    """A worker's setting for the alerts file ``alerts`` (none: the built-in rules, as a deployment runs)."""
    return {"alerts": str(alerts)} if alerts else {}


def _sim(seed: int, mix: Optional[dict] = None) -> SimConfig:
    return SimConfig(seed=seed, queues=QUEUES, **(mix or MIX))  # type: ignore[arg-type]


def events(
    n: int, seed: int = 7, end: Optional[float] = None, mix: Optional[dict] = None
) -> Iterator[tuple[Event, bytes]]:
    """``n`` simulated events (validated, with their JSON), streamed; they start about when ``n``
    events at the average rate would end at ``end`` (the rate grows with the ticket backlog, so the
    tail can run past it: see ``events_ending_now``)."""
    sim = _sim(seed, mix)
    # ~1.3M events per simulated hour at this mix: start early enough to end close to `end`.
    span = n / 1_300_000 * 3600
    start = (end or time.time()) - span
    made = 0
    for raw in generate(sim, start, None):
        if made >= n:
            return
        ev = event_from_dict(raw)
        if isinstance(ev, Event):
            made += 1
            yield ev, msgspec.json.encode(raw)


def events_ending_now(n: int, seed: int = 7) -> list[tuple[Event, bytes]]:
    """``n`` simulated events shifted as a whole so that the last one is stamped now.

    The simulated event rate grows as the ticket backlog builds up, so a start computed from an
    average rate can run past the wall clock; the worker refuses events from the future (`future_ts`).
    """
    sim = _sim(seed)
    raws = []
    for raw in generate(sim, 1_700_000_000.0, None):
        if len(raws) >= n:
            break
        raws.append(raw)
    shift = time.time() - max(r["ts"] for r in raws)
    out = []
    for raw in raws:
        raw["ts"] += shift
        ev = event_from_dict(raw)
        if isinstance(ev, Event):
            out.append((ev, msgspec.json.encode(raw)))
    return out


@dataclass
class Stack:
    """An embedded broker and Redis plus one topic prefix; workers it starts are stopped on close."""

    root: Path
    partitions: int = 4
    emb: Embedded = field(init=False)
    prefix: str = "b."
    group: str = "bench"
    workers: list[subprocess.Popen] = field(default_factory=list)
    config_yaml: str = CONFIG_YAML
    produced: int = 0  # events published so far by ``produce``

    def __post_init__(self) -> None:
        self.emb = start_embedded(self.root)
        (self.root / "queues.yaml").write_text(self.config_yaml)
        ensure_topics(self.settings, self.bootstrap)

    @property
    def bootstrap(self) -> str:
        """The broker's address."""
        assert self.emb.kafka_bootstrap
        return self.emb.kafka_bootstrap

    @property
    def settings(self) -> Settings:
        """Settings equal to what the workers see."""
        return Settings(kafka_bootstrap=self.bootstrap, redis_url=self.emb.redis_url, topic_prefix=self.prefix,
                        partitions=self.partitions, group_id=self.group, config=self.root / "queues.yaml")

    def environ(self, **extra: str) -> dict[str, str]:
        """The environment of a worker of this stack."""
        over = dict(kafka_bootstrap=self.bootstrap, redis_url=self.emb.redis_url or "", topic_prefix=self.prefix,
                    group_id=self.group, partitions=str(self.partitions), data_dir=str(self.root / "data"),
                    config=str(self.root / "queues.yaml"), kafka_session_timeout="4", log_level="warning",
                    # The long memory run streams simulated time that can run ahead of the wall clock.
                    max_future_seconds=str(30 * 86400))
        over.update(extra)
        return child_environment(**over)

    def redis(self) -> redis.Redis:
        """A client on the stack's Redis."""
        return redis.Redis.from_url(self.emb.redis_url or "")

    def consumed(self) -> int:
        """Events the workers have committed to Redis."""
        return int(self.redis().hget("ccmon:stats", "consumed") or 0)

    def produce(self, items: Iterator[tuple[Event, bytes]], chunk: int = 50_000, rate: Optional[float] = None) -> int:
        """Publish events in batched messages, as ccmon's producers do; at most ``rate`` events/s when given."""
        pub = Publisher(self.settings, self.bootstrap)
        n, buf, t0 = 0, [], time.monotonic()
        for item in items:
            buf.append(item)
            if len(buf) >= chunk:
                n += pub.publish(buf)
                self.produced = n
                buf = []
                if rate:
                    time.sleep(max(0.0, t0 + n / rate - time.monotonic()))
                status(f"produced {n:,} events ({n / (time.monotonic() - t0):,.0f}/s)")
        if buf:
            n += pub.publish(buf)
        self.produced = n
        pub.close()
        return n

    def start_worker(self, name: str = "worker", profile: Optional[Path] = None, without: str = "",
                     **settings: str) -> tuple[subprocess.Popen, str]:
        """Start ``ccmon worker`` (under py-spy when ``profile`` names an output) with its base URL; ``without``: a
        part of its work it leaves out (``bench/without/sitecustomize.py``)."""
        port = free_port()
        log = self.root / f"{name}-{len(self.workers)}.log"
        cmd = python_cmd("worker")
        if profile is not None:
            gil = ["--gil"] if os.environ.get("SPY_GIL") else []  # only samples holding the GIL
            rate = os.environ.get("SPY_RATE", "100")  # samples per second
            cmd = [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "--rate", rate, *gil,
                   "-o", str(profile), "--", *cmd]
        env = self.environ(http_port=str(port), **settings)
        if without:
            env["BENCH_WITHOUT"] = without
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(WITHOUT_DIR), env.get("PYTHONPATH")]))
        proc = spawn(cmd, log, env)
        self.workers.append(proc)
        return proc, f"http://127.0.0.1:{port}"

    def close(self) -> None:
        """Stop workers, then the services."""
        for w in self.workers:
            stop(w, timeout=15)
        self.emb.stop()


def gc_pauses(bases: list[str]) -> dict[str, list[float]]:
    """The workers' cyclic-GC pauses so far (``ccmon_worker_gc_pause_seconds`` on ``/metrics/worker``), summed over
    ``bases``: collections, seconds, and collections over 50 ms, per generation."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {"collections": [0.0] * 3, "seconds": [0.0] * 3, "over_50ms": [0.0] * 3}
    for base in bases:
        with urllib.request.urlopen(base + "/metrics/worker", timeout=5) as r:
            text = r.read().decode()
        for fam in text_string_to_metric_families(text):
            if fam.name != "ccmon_worker_gc_pause_seconds":
                continue
            for s in fam.samples:
                g = int(s.labels["generation"])
                if s.name.endswith("_count"):
                    out["collections"][g] += s.value
                    out["over_50ms"][g] += s.value
                elif s.name.endswith("_sum"):
                    out["seconds"][g] += s.value
                elif s.name.endswith("_bucket") and s.labels["le"] == "0.05":
                    out["over_50ms"][g] -= s.value
    return out


def gc_delta(after: dict[str, list[float]], before: dict[str, list[float]]) -> dict[str, list[float]]:
    """``after - before``, per figure and generation (seconds rounded to ms)."""
    return {k: [round(a - b, 3) if k == "seconds" else int(a - b) for a, b in zip(after[k], before[k])]
            for k in after}


def raw_consumer(bootstrap: str, topics: list[str], expected: int) -> dict[str, float]:
    """The ceiling: a bare aiokafka consumer that reads every message and decodes it with ``json.loads``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def main() -> dict[str, float]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest", max_partition_fetch_bytes=4 * 1024 * 1024,
                                    fetch_max_bytes=16 * 1024 * 1024)
        await consumer.start()
        try:
            tps = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            n = msgs = 0
            first = None
            while n < expected:
                batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                if first is None and batch:
                    first = time.perf_counter()
                for records in batch.values():
                    for r in records:
                        value = json.loads(r.value)
                        n += len(value) if isinstance(value, list) else 1
                        msgs += 1
            assert first is not None
            secs = time.perf_counter() - first
            return {"events": n, "messages": msgs, "seconds": secs, "events_per_s": n / secs}
        finally:
            await consumer.stop()

    return asyncio.run(main())


def wait_assigned(stack: Stack, bases: list[str], procs: list[subprocess.Popen], timeout: float = 90) -> float:
    """Wait until every worker holds partitions (its consumer starts fetching then); the monotonic time."""
    deadline = time.monotonic() + timeout
    pending = set(bases)
    while pending:
        for base in list(pending):
            try:
                with urllib.request.urlopen(base + "/health", timeout=1) as r:
                    if json.load(r).get("consuming"):
                        pending.discard(base)
            except OSError:
                pass
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"a worker exited with {p.returncode} while joining; see {stack.root}/*.log")
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers did not join within {timeout:.0f}s; see {stack.root}/*.log")
        time.sleep(0.005)
    return time.monotonic()


def wait_committed(stack: Stack, expected: int, timeout: float, what: str,
                   procs: list[subprocess.Popen], first: Optional[float] = None) -> tuple[float, float]:
    """Poll Redis until ``expected`` events are committed; (first consumed, last committed) monotonic times."""
    r = stack.redis()
    deadline = time.monotonic() + timeout
    last_print = 0.0
    while True:
        got = int(r.hget("ccmon:stats", "consumed") or 0)
        now = time.monotonic()
        if got and first is None:
            first = now
        if got >= expected:
            assert first is not None
            return first, now
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"a worker exited with {p.returncode} during {what}; see {stack.root}/*.log")
        if now > deadline:
            raise RuntimeError(f"{what}: only {got:,} of {expected:,} events committed after {timeout:.0f}s")
        if now - last_print > 1:
            status(f"{what}: {got:,}/{expected:,} committed")
            last_print = now
        time.sleep(0.005)


class Screens:
    """``n`` wallboard screens held open on a worker (``/wallboard/stream``), as a contact center runs one all day;
    each reads every update the worker sends. ``arrivals``, per screen: (monotonic time, age) of each update, its age
    being how long before it arrived the worker started building it (its ``server_time``)."""

    def __init__(self, base: str, n: int):
        self.arrivals: list[list[tuple[float, float]]] = [[] for _ in range(n)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._read, args=(base, self.arrivals[i]), daemon=True)
                         for i in range(n)]
        for t in self._threads:
            t.start()

    def _read(self, base: str, arrivals: list[tuple[float, float]]) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(base + "/wallboard/stream", timeout=30) as r:
                    for line in r:
                        if line.startswith(b"data: "):
                            built = _SERVER_TIME.search(line)
                            arrivals.append((time.monotonic(), time.time() - float(built[1]) if built else math.nan))
                        if self._stop.is_set():
                            return
            except OSError:
                time.sleep(0.2)  # the worker is not serving yet, or went away: screens reconnect as browsers do

    def close(self, since: float) -> dict[str, float]:
        """Stop reading (the threads end at their next line). Over the updates that arrived from ``since``
        (monotonic) on, all screens: how many per screen, the gaps between them and their ages (median, longest)."""
        self._stop.set()
        got = [[(t, age) for t, age in times if t >= since] for times in self.arrivals]
        gaps = sorted(b[0] - a[0] for times in got for a, b in zip(times, times[1:]))
        ages = sorted(age for times in got for _, age in times)
        return {"updates_per_screen": sum(map(len, got)) / len(got),
                "gap_p50_s": _percentile(gaps, 0.5) if gaps else math.nan, "gap_max_s": max(gaps, default=math.nan),
                "age_p50_s": _percentile(ages, 0.5) if ages else math.nan, "age_max_s": max(ages, default=math.nan)}


_SERVER_TIME = re.compile(rb'"server_time":([0-9.]+)')


def oracle_check(stack: Stack, items: list[Event]) -> int:
    """Compare the worker's snapshot with the oracle's at one instant; raise on any difference."""
    res = subprocess.run(python_cmd("metrics", "--json"), env=stack.environ(), capture_output=True, timeout=300)
    if res.returncode:
        raise RuntimeError(f"ccmon metrics failed: {res.stderr.decode()[-2000:]}")
    snap = json.loads(res.stdout)
    from datetime import datetime

    now_ms = round(datetime.fromisoformat(snap["generated_at"].replace("Z", "+00:00")).timestamp() * 1000)
    expected = compute(items, stack.settings.metrics_config(), now_ms, stack.partitions)
    if snap != expected:
        diff = [q for q in set(snap["queues"]) | set(expected["queues"])  # type: ignore[index]
                if snap["queues"].get(q) != expected["queues"].get(q)]  # type: ignore[index,union-attr]
        raise AssertionError(f"the worker's snapshot differs from the oracle in {len(diff)} queue(s): {diff[:5]}")
    return len(snap["queues"])


def throughput(n: int, workers: int = 1, check: bool = True, root: Optional[Path] = None,
               extra: Optional[dict[str, str]] = None, profile: Optional[Path] = None,
               screens: int = 0, without: str = "") -> dict[str, float]:
    """Pre-produce ``n`` events; time the raw consumer, then ``workers`` ccmon workers over the same topics.

    ``screens``: that many wallboard screens stay open on the first worker through the run (:class:`Screens`).
    ``without``: the workers leave that part of their work out (``bench/without/sitecustomize.py``), and the
    snapshot is not checked."""
    with tempfile.TemporaryDirectory(prefix="ccmon-bench-") as tmp:
        stack = Stack(Path(root or tmp))
        try:
            items = events_ending_now(n)
            produced = stack.produce(iter(items))
            status(f"produced {produced:,} events; raw consumer baseline…")
            topics = [stack.settings.topic(d) for d in DOMAINS]
            raw = raw_consumer(stack.bootstrap, topics, produced)
            started = [stack.start_worker(f"w{i}", profile, without, **(extra or {})) for i in range(workers)]
            procs = [p for p, _ in started]
            # The clock starts when the first worker holds partitions: its first fetch follows at once.
            assigned = wait_assigned(stack, [b for _, b in started[:1]], procs)
            bases = [b for _, b in started]
            screen = Screens(bases[0], screens) if screens else None
            gc0 = gc_pauses(bases)
            cpu0 = sum(cpu_seconds(p.pid) for p in procs)
            first, last = wait_committed(stack, produced, 600, f"{workers} worker(s)", procs, assigned)
            secs = last - first
            updates = screen.close(first) if screen is not None else {}
            cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu0
            gc = gc_delta(gc_pauses(bases), gc0)
            st = {k.decode(): int(v) for k, v in stack.redis().hgetall("ccmon:stats").items()}
            batches = st.get("batches", 0)
            # Commit durations ride in the next commit, so the last one is missing: a mean over the rest.
            commit_s = st.get("h:commit_us:sum", 0) / 1e6
            if profile is not None:
                import signal

                for p in procs:
                    p.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
                    p.wait(60)
            out = {"events": produced, "workers": workers, "seconds": secs, "events_per_s": produced / secs,
                   "raw_events_per_s": raw["events_per_s"], "raw_messages": raw["messages"],
                   "ratio_to_raw": produced / secs / raw["events_per_s"], "batches": batches, "redis_commit_seconds": commit_s,
                   "worker_cpu_seconds": cpu, "worker_cpu_us_per_event": cpu / produced * 1e6,
                   "worker_rss_mib": max(rss_mib(p.pid) for p in procs if p.poll() is None) if profile is None else 0}
            if screens:
                out["screens"] = {"screens": screens, **updates}
            out["gc"] = gc  # the cyclic GC's pauses in the worker(s) over the run, and their share of its CPU
            out["gc_share_of_cpu"] = sum(gc["seconds"]) / cpu if cpu else 0.0
            if without:
                # The part left out writes no counter: a lifetime hash in Redis means the worker did the whole work.
                held = sum(1 for _ in stack.redis().scan_iter(match=f"{PREFIX}{TOTAL}:*", count=1000))
                if held:
                    raise SystemExit(f"the worker kept its {without} (Redis holds {held} lifetime counter hashes): "
                                     f"{WITHOUT_DIR / 'sitecustomize.py'} was not loaded; check that PYTHONPATH "
                                     "reaches the worker")
                out["without"] = without
            elif check:
                status("comparing the snapshot with the oracle…")
                out["oracle_queues"] = oracle_check(stack, [e for e, _ in items])
            return out
        finally:
            stack.close()


def _probe(i: int, ts: float) -> tuple[Event, bytes]:
    raw = {"type": "call.blocked", "event_id": f"probe-{i}", "ts": ts, "call_id": f"probe-{i}", "queue": "probe",
           "reason": "queue_full"}
    ev = event_from_dict(raw)
    assert isinstance(ev, Event), ev
    return ev, msgspec.json.encode(raw)


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


_STAMP = 4102444800.654321  # a ts no simulated event has: its text in the encoded event marks where the send time goes


def _stampable(traffic: Iterable[tuple[Event, bytes]]) -> list[tuple[Event, bytes, bytes]]:
    """Each event encoded up to and after its ``ts``, built before the clock starts: the sending loop then only
    splices the send time in, so the benchmark's own producer leaves the machine's two cores to the worker."""
    out = []
    mark = msgspec.json.encode(_STAMP)
    for i, (ev, original) in enumerate(traffic):
        raw = msgspec.json.decode(original)
        raw["ts"] = _STAMP
        head, _, tail = msgspec.json.encode(raw).partition(mark)
        out.append((ev, head, tail))
        if i % 50_000 == 0:
            status(f"latency: {i:,} events of traffic prepared")
    return out


def _broker_reader(bootstrap: str, topics: list[str], seen: dict[int, float], stop: threading.Event,
                   ready: threading.Event) -> None:
    """Time each probe as it arrives from the broker: a bare aiokafka consumer (no group) at the log ends, with the
    worker's fetch wait. Its figures are the floor the broker and Kafka client set, with no ccmon in the path."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.app import FETCH_MAX_WAIT_MS

    async def main() -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                    fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
        await consumer.start()
        try:
            consumer.assign([TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())])
            await consumer.seek_to_end()
            ready.set()
            while not stop.is_set():
                got = await consumer.getmany(timeout_ms=100)
                at = time.time()
                for records in got.values():
                    for r in records:
                        for m in _PROBE_ID.finditer(r.value):
                            seen.setdefault(int(m.group(1)), at)
        finally:
            await consumer.stop()

    asyncio.run(main())


_PROBE_ID = re.compile(rb'"event_id":"probe-(\d+)"')


def latency(rate: float = 10_000, seconds: float = 30, poll: float = 0.01,
            profile: Optional[Path] = None, broker_only: bool = False,
            alerts: Optional[Path] = None, screens: int = 0) -> dict[str, Any]:
    """Event ``ts`` to visibility in ``/api/snapshot`` at a steady ``rate`` of simulated traffic.

    Every 100 ms one ``call.blocked`` probe (queue ``probe``, ts = the moment it is sent) rides along
    with the traffic; a poller reads ``/api/snapshot?queue=probe`` every ``poll`` seconds, and a probe's
    latency is the first poll that shows it minus its ts. Traffic is re-stamped to the send time.

    ``broker_only``: the same traffic with no worker; a bare consumer times each probe as the broker hands it
    out (:func:`_broker_reader`). That is the floor under the worker's figure.

    ``alerts``: the worker's alerts file (``CCMON_ALERTS``); by default the built-in rules, as a deployment runs.

    ``screens``: that many wallboard screens stay open on the worker while traffic is sent (:class:`Screens`).
    """
    with tempfile.TemporaryDirectory(prefix="ccmon-bench-") as tmp:
        stack = Stack(Path(tmp))
        screen: Optional[Screens] = None
        try:
            sent: dict[int, float] = {}
            seen: dict[int, float] = {}
            stop_poll = threading.Event()
            who = {"broker": stack.emb.procs[0].pid, "redis": stack.emb.procs[-1].pid, "harness": os.getpid()}
            if broker_only:
                ready = threading.Event()
                topics = [stack.settings.topic(d) for d in DOMAINS]
                t = threading.Thread(target=_broker_reader, args=(stack.bootstrap, topics, seen, stop_poll, ready),
                                     daemon=True)
                t.start()
                if not ready.wait(30):
                    raise RuntimeError("the broker-only reader did not start within 30 s")
            else:
                proc, base = stack.start_worker("latency", profile, **_alerts_setting(alerts))
                who["worker"] = proc.pid
                wait_assigned(stack, [base], [proc])
                screen = Screens(base, screens) if screens else None

                def poller() -> None:
                    # One kept-alive connection, as a browser polling the page would use: a new TCP connection per
                    # poll would cost the worker (and this machine's two cores) more than the snapshot itself.
                    conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=5)
                    while not stop_poll.is_set():
                        try:
                            conn.request("GET", "/api/snapshot?queue=probe")
                            with conn.getresponse() as r:
                                snap = json.load(r)
                        except (OSError, http.client.HTTPException):
                            conn.close()
                            time.sleep(poll)
                            continue
                        at = time.time()
                        q = snap.get("queues", {}).get("probe")
                        blocked = q["totals"]["blocked"] if q else 0
                        for i in range(blocked):
                            seen.setdefault(i, at)
                        time.sleep(poll)

                t = threading.Thread(target=poller, daemon=True)
                t.start()
            traffic = iter(_stampable(events(int(rate * seconds) + 1000)))
            pub = Publisher(stack.settings, stack.bootstrap)
            step = 0.02
            cpu_at_start = {k: cpu_seconds(pid) for k, pid in who.items()}
            gc0 = None if broker_only else gc_pauses([base])
            start, mono_start = time.time(), time.monotonic()
            n = probes = 0
            next_probe = start
            while time.time() - start < seconds:
                tick = time.time()
                due = int((tick - start) * rate) - n
                batch = []
                stamp = b"%.6f" % tick
                for _ in range(max(0, due)):
                    ev, head, tail = next(traffic)
                    batch.append((ev, head + stamp + tail))
                if tick >= next_probe:
                    sent[probes] = tick
                    batch.append(_probe(probes, tick))
                    probes += 1
                    next_probe += 0.1
                n += max(0, due)
                if batch:
                    pub.publish(batch)  # type: ignore[arg-type]
                status(f"latency{' (broker only)' if broker_only else ''}: {n:,} events sent "
                       f"({n / max(1e-9, time.time() - start):,.0f}/s), {len(seen)}/{probes} probes seen")
                time.sleep(max(0.0, step - (time.time() - tick)))
            # Each process's share of one core while traffic was sent: this machine has two for all four.
            cpu = {k: round((cpu_seconds(pid) - cpu_at_start[k]) / (time.time() - start) * 100) for k, pid in who.items()}
            gc = None if gc0 is None else gc_delta(gc_pauses([base]), gc0)  # the worker's GC pauses while sending
            updates = screen.close(mono_start) if screen is not None else None
            deadline = time.time() + 30
            while len(seen) < probes and time.time() < deadline:
                time.sleep(0.05)
            stop_poll.set()
            pub.close()
            if profile is not None and not broker_only:
                import signal

                proc.send_signal(signal.SIGINT)
                proc.wait(60)
            lat = [(seen[i] - sent[i]) * 1000 for i in sent if i in seen]
            if len(lat) < probes:
                raise RuntimeError(f"only {len(lat)} of {probes} probes became visible")
            elapsed = time.time() - start
            # p50 per 10 s of sending: a figure that grows along the run means a cost grows with the run.
            by10 = [[(seen[i] - t) * 1000 for i, t in sent.items() if int((t - start) // 10) == k and i in seen]
                    for k in range(int(math.ceil(seconds / 10)))]
            return {"rate_target": rate, "rate_sent": n / seconds, "probes": probes, "broker_only": broker_only,
                    "p50_ms": _percentile(lat, 0.5), "p99_ms": _percentile(lat, 0.99), "max_ms": max(lat),
                    "p50_ms_per_10s": [round(_percentile(b, 0.5)) for b in by10 if b],
                    "poll_ms": poll * 1000, "seconds": elapsed, "cpu_percent": cpu,
                    **({"gc": gc} if gc is not None else {}),
                    **({"screens": {"screens": screens, **updates}} if updates is not None else {})}
        finally:
            if screen is not None:
                screen.close(0.0)
            stack.close()


def memory(total: int, every: int = 1_000_000, rate: Optional[float] = MEMORY_RATE,
           alerts: Optional[Path] = None) -> dict[str, object]:
    """A worker's resident set as it consumes ``total`` events at a steady entity population.

    Events are produced while the worker consumes (as in production), at ``rate`` events/s (None: as fast as the
    producer can); RSS is read each time another ``every`` events are committed. ``alerts``: the worker's alerts
    file (``CCMON_ALERTS``); by default the built-in rules.
    """
    with tempfile.TemporaryDirectory(prefix="ccmon-bench-") as tmp:
        stack = Stack(Path(tmp), config_yaml=MEMORY_CONFIG_YAML)
        try:
            proc, base = stack.start_worker("memory", **_alerts_setting(alerts))
            wait_assigned(stack, [base], [proc])
            producer = threading.Thread(target=stack.produce, args=(events(total, mix=MEMORY_MIX), 10_000, rate),
                                        daemon=True)
            producer.start()
            samples: list[tuple[int, float, dict[str, int], int]] = []  # (events, RSS MiB, held per domain, backlog)
            r = stack.redis()
            state_keys = {d: [f"ccmon:state:{stack.settings.topic(d)}:{p}" for p in range(stack.partitions)]
                          for d in ("calls", "tickets", "agents")}
            mark = every
            while mark <= total:
                got = int(r.hget("ccmon:stats", "consumed") or 0)
                if proc.poll() is not None:
                    raise RuntimeError(f"the worker exited with {proc.returncode}; see {stack.root}/*.log")
                if got >= mark:
                    held = {d: sum(r.hlen(k) for k in keys) for d, keys in state_keys.items()}
                    # Published but not yet committed: what the worker may hold in its fetch and stream buffers.
                    backlog = max(0, stack.produced - got)
                    samples.append((mark, rss_mib(proc.pid), held, backlog))
                    status(f"memory: {mark:,} events committed, worker RSS {samples[-1][1]:.0f} MiB, backlog "
                           f"{backlog:,} events, held " + ", ".join(f"{n:,} {d}" for d, n in held.items()))
                    mark += every
                else:
                    time.sleep(0.05)
            producer.join()
            states = {}
            for domain, keys in state_keys.items():
                sizes = [len(v) for k in keys for v in r.hvals(k)]
                states[domain] = (len(sizes), sum(sizes) / max(1, len(sizes)))
            first, last = samples[0][1], samples[-1][1]
            return {"samples": samples, "growth": last / first - 1, "states": states, "rate": rate}
        finally:
            stack.close()


def main() -> None:
    """Run one scenario and print its figures as JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("scenario", choices=["throughput", "latency", "memory"])
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--rate", type=float, default=MEMORY_RATE, help="memory: events/s produced (0: unpaced)")
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--screens", type=int, default=0,
                    help="throughput, latency: wallboard screens held open on the worker through the run")
    ap.add_argument("--broker-only", action="store_true",
                    help="latency: no worker; time the probes as the broker hands them out (the floor)")
    ap.add_argument("--profile", type=Path, help="record the worker with py-spy into this file (raw format)")
    ap.add_argument("--without", choices=["core", "writes"],
                    help="throughput: the worker leaves out its domain cores, or the encoding and writing of what "
                         "they produce (what making that part faster could buy; counts are then wrong, not checked)")
    ap.add_argument("--alerts", type=Path,
                    help="latency, memory: the worker's alerts file (default: the built-in rules); a file saying "
                         "`builtin_rules: false` turns the evaluator off")
    args = ap.parse_args()
    if args.scenario == "throughput":
        print(json.dumps(throughput(args.events, args.workers, check=not args.no_check, profile=args.profile,
                                    screens=args.screens, without=args.without or ""), indent=2))
    elif args.scenario == "latency":
        print(json.dumps(latency(seconds=args.seconds, profile=args.profile, broker_only=args.broker_only,
                                 alerts=args.alerts, screens=args.screens), indent=2))
    else:
        print(json.dumps(memory(args.events, max(1, args.events // 10), args.rate or None, args.alerts), indent=2))


if __name__ == "__main__":
    main()
