"""Start the Faust worker against configured Kafka and Redis."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import sys
import time
from typing import Callable, TypeVar

import faust
from kafka.errors import KafkaError

from ccmon import gcstats
from ccmon.errors import BrokerUnavailable, ConfigError, StoreUnavailable
from ccmon.settings import Settings
from ccmon.store import Store, redact_url
from streams.topics import ensure_topics

log = logging.getLogger("ccmon.worker")
T = TypeVar("T")
MAX_WAIT_STEP = 10.0  # seconds between start-up attempts, at most


def until_up(attempt: Callable[[], T], what: str, fix: str = "") -> T:
    """``attempt()`` until the service it needs answers: wait with backoff and say so, never exit and crash-loop."""
    delay, started = 0.5, time.monotonic()
    while True:
        try:
            result = attempt()
        except (BrokerUnavailable, StoreUnavailable, KafkaError) as exc:
            print(f"ccmon worker: waiting for {what}: {exc}{fix}; retrying in {delay:g}s (Ctrl-C stops)",
                  file=sys.stderr, flush=True)
            time.sleep(delay)
            delay = min(delay * 2, MAX_WAIT_STEP)
            continue
        if delay > 0.5:
            print(f"ccmon worker: {what} is up after {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
        return result


def build_worker(settings: Settings) -> faust.Worker:
    """Check the services, create topics, reset recreated ones, and build the Faust worker."""
    from agents.workers import register_agents, reset_recreated as reset_recreated_topics
    from ccmon.alerting import register_alerts
    from ccmon.web import register_web
    from streams.app import create_app

    if not settings.kafka_bootstrap or not settings.redis_url:
        raise ConfigError(
            "the worker needs CCMON_KAFKA_BOOTSTRAP and CCMON_REDIS_URL; "
            "use `ccmon run` to start an embedded broker and Redis instead"
        )
    cfg = settings.metrics_config()
    alerts_cfg = settings.alerts_config()  # a bad alerts file stops the start, with its line numbers
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    bootstrap = settings.kafka_bootstrap
    topics = until_up(lambda: ensure_topics(settings, bootstrap), f"the Kafka broker at {bootstrap}")
    partitions = {topic: n for topic, (_tid, n) in topics.items()}

    async def reset_recreated() -> None:
        store = Store(settings.redis_url, cfg, settings.redis_options())  # type: ignore[arg-type]
        try:
            await store.ping()
            await reset_recreated_topics(store, topics)
        finally:
            await store.close()

    until_up(lambda: asyncio.run(reset_recreated()), f"Redis at {redact_url(settings.redis_url)}",
             " (check CCMON_REDIS_URL)")
    app = create_app(settings, settings.kafka_bootstrap)
    store = Store(settings.redis_url, cfg, settings.redis_options())
    register_agents(app, settings, store, cfg, partitions)
    service = register_alerts(app, settings, store, alerts_cfg)
    register_web(app, store, service, settings, partitions[settings.topic("agents")])
    return faust_worker(app, settings.log_level)


def faust_worker(app: faust.App, log_level: str) -> faust.Worker:
    """A Faust worker that logs at ``log_level`` and no lower.

    Faust's start-up spinner sets the root logger to DEBUG, so that it turns on every record. Every debug call in
    aiokafka's and Faust's per-fetch paths then built a record that the handler dropped. ccmon prints its own
    status line, so the spinner goes.
    """
    worker = faust.Worker(app, loglevel=log_level.upper(), quiet=True, redirect_stdouts=False)
    worker.spinner = None
    return worker


def tune_gc() -> None:
    """Make the cyclic GC rare: the hot path allocates millions of short-lived, acyclic objects.

    With the default threshold (700) a large batch triggers thousands of young collections, each
    also walking the live entity states; that cost ~25% of a worker's time (bench/README.md).
    Freezing moves what start-up built (modules, config) out of every later collection.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    gcstats.install()  # each collection's pause, on /metrics/worker (ccmon/gcstats.py)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 256 * 1024  # glibc's starting value; fixed here, it no longer grows


def tune_malloc(mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Keep glibc's mmap threshold fixed, so large buffers go back to the system when freed (False off glibc).

    glibc raises the threshold up to 32 MiB each time a large mmapped block is freed. After that, the
    Kafka client's and the batch path's multi-MiB buffers come from the heap, and freeing them leaves
    high-water that the heap keeps. The worker's RSS climbed with the event rate (265 -> 392 MiB over 10M
    events at ~29k events/s) while the state it holds stayed flat; with the threshold fixed, 251 -> 303 MiB
    (docs/performance.md has what is left). A fixed threshold (the trim threshold is fixed too, as setting
    either does) costs one mmap/munmap per large buffer. A periodic ``malloc_trim`` did about as well but
    took ~0.4 s per call, in 6% of the worker's py-spy samples.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc only; musl and macOS have none of these parameters
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, 2 * mmap_threshold))


def run_worker(settings: Settings) -> None:
    """Run the worker until SIGINT/SIGTERM."""
    worker = build_worker(settings)
    tune_gc()
    tune_malloc()
    from ccmon.web import access_summary

    kafka_security = "" if settings.kafka_security_protocol == "PLAINTEXT" else f" ({settings.kafka_security_protocol})"
    print(
        f"ccmon worker: kafka {settings.kafka_bootstrap}{kafka_security}, redis {redact_url(settings.redis_url or '')}, "
        + "\n".join(access_summary(settings)),
        file=sys.stderr,
        flush=True,
    )
    worker.execute_from_commandline()
