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


def test_the_worker_logs_at_its_level_and_builds_no_debug_records() -> None:
    # Faust's spinner set the root logger to DEBUG: every debug call on the fetch path built a record.
    import logging

    from ccmon.worker import faust_worker

    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    try:
        worker = faust_worker(create_app(settings(), "127.0.0.1:9"), "warning")
        worker._setup_logging()
        assert root.level == logging.WARNING
        assert not logging.getLogger("aiokafka.consumer.fetcher").isEnabledFor(logging.DEBUG)
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
