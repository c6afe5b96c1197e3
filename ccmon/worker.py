"""Start the Faust worker against configured Kafka and Redis."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys

import faust

from ccmon.errors import ConfigError
from ccmon.settings import Settings
from ccmon.store import Store, redact_url
from streams.topics import ensure_topics

log = logging.getLogger("ccmon.worker")


def build_worker(settings: Settings) -> faust.Worker:
    """Check the services, create topics, reset recreated ones, and build the Faust worker."""
    from agents.workers import register_agents
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
    topics = ensure_topics(settings, settings.kafka_bootstrap)
    partitions = {topic: n for topic, (_tid, n) in topics.items()}

    async def reset_recreated() -> None:
        store = Store(settings.redis_url, cfg)  # type: ignore[arg-type]
        try:
            await store.ping()
            for topic, (tid, n) in topics.items():
                if await store.reset_if_recreated(topic, tid, n):
                    log.error(
                        "topic %s was recreated (new id %s; e.g. the memory-only broker restarted): "
                        "its stored offsets and entity states were reset; counters already in Redis are kept",
                        topic, tid,
                    )
        finally:
            await store.close()

    asyncio.run(reset_recreated())
    app = create_app(settings, settings.kafka_bootstrap)
    store = Store(settings.redis_url, cfg)
    register_agents(app, settings, store, cfg, partitions)
    service = register_alerts(app, settings, store, alerts_cfg)
    register_web(app, store, service, settings, partitions[settings.topic("agents")])
    return faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True, redirect_stdouts=False)


def tune_gc() -> None:
    """Make the cyclic GC rare: the hot path allocates millions of short-lived, acyclic objects.

    With the default threshold (700) a large batch triggers thousands of young collections, each
    also walking the live entity states; that cost ~25% of a worker's time (bench/README.md).
    Freezing moves what start-up built (modules, config) out of every later collection.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def run_worker(settings: Settings) -> None:
    """Run the worker until SIGINT/SIGTERM."""
    worker = build_worker(settings)
    tune_gc()
    print(
        f"ccmon worker: kafka {settings.kafka_bootstrap}, redis {redact_url(settings.redis_url or '')}, "
        f"http://{settings.http_host}:{settings.http_port} (/wallboard, /api/snapshot, /api/alerts, /metrics, /health)",
        file=sys.stderr,
        flush=True,
    )
    worker.execute_from_commandline()
