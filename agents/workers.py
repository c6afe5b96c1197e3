"""The Faust agents: one per domain topic, each a thin loop over ``Pipeline.process``."""

from __future__ import annotations

import logging
from typing import Any

import faust
from faust.types import TP

from agents.config import MetricsConfig
from agents.pipeline import Message, Pipeline
from ccmon.errors import BrokerUnavailable
from ccmon.settings import Settings
from ccmon.store import Store
from streams.events import DOMAINS

log = logging.getLogger("ccmon.agents")


def register_agents(
    app: faust.App, settings: Settings, store: Store, cfg: MetricsConfig, partitions: dict[str, int]
) -> dict[str, Pipeline]:
    """Declare one agent per domain topic; return the pipelines by topic name."""
    dlq = app.topic(settings.deadletter_topic, value_serializer="raw", key_serializer="raw")

    async def send_dead_letters(records: list[bytes]) -> None:
        try:
            pending = [await dlq.send(value=r) for r in records]
            for fut in pending:
                await fut  # wait for the broker's ack: a dead letter must never vanish
        except Exception as exc:  # noqa: BLE001 - any producer failure means "broker unavailable, retry"
            raise BrokerUnavailable(
                f"could not publish {len(records)} dead letters to {settings.deadletter_topic}: {exc}"
            ) from exc

    pipelines: dict[str, Pipeline] = {}
    for domain in DOMAINS:
        name = settings.topic(domain)
        topic = app.topic(name, value_serializer="raw", key_serializer="raw", partitions=partitions[name])

        def highwater(p: int, _name: str = name) -> int | None:
            try:
                return app.consumer.highwater(TP(_name, p))
            except Exception:  # noqa: BLE001 - unknown until the first fetch; lag is then just not reported
                return None

        pipeline = Pipeline(
            domain, name, partitions[name], store, cfg, send_dead_letters, highwater, settings.topic_prefix,
            settings.max_future_seconds, settings.commit_bytes,
        )
        pipelines[name] = pipeline

        async def agent(stream: Any, _pipeline: Pipeline = pipeline) -> None:
            async for events in stream.noack_take(settings.batch_size, within=settings.batch_seconds):
                await _pipeline.process(
                    [Message(e.message.topic, e.message.partition, e.message.offset, e.value) for e in events]
                )
                # Ack only after the Redis commit, so Kafka's committed offset never runs ahead of Redis.
                for e in events:
                    await stream.ack(e)

        app.agent(topic, name=f"ccmon.{domain}")(agent)

    @app.on_partitions_revoked.connect
    async def _revoked(sender: Any, revoked: set[TP], **_: Any) -> None:
        for tp in revoked:
            if tp.topic in pipelines:
                pipelines[tp.topic].forget([tp.partition])

    return pipelines
