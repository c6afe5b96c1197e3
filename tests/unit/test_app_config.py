"""The Faust app's configuration that ccmon sets from its own settings."""

from __future__ import annotations

from ccmon.settings import Settings
from streams.app import create_app
from streams.producer import MAX_BATCH_BYTES


def settings(**over: object) -> Settings:
    return Settings(kafka_bootstrap="127.0.0.1:9", redis_url="redis://127.0.0.1:9/0", **over)  # type: ignore[arg-type]


def test_a_stream_holds_at_most_the_stream_buffer_of_unprocessed_messages() -> None:
    s = settings(stream_buffer=10)
    assert create_app(s, "127.0.0.1:9").conf.stream_buffer_maxsize == 10


def test_by_default_a_backlog_held_per_topic_stays_within_32_mib_of_batched_messages() -> None:
    # Faust's default (4,096 messages) let a lagging worker hold up to 2 GiB of ccmon's 512 KiB messages per topic.
    s = settings()
    assert create_app(s, "127.0.0.1:9").conf.stream_buffer_maxsize * MAX_BATCH_BYTES <= 32 * 1024 * 1024
