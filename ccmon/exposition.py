"""Prometheus exposition: metric families built at scrape time from the Redis snapshot.

No per-event ``Gauge.set``: every worker renders the same global view from Redis,
so any number of workers can be scraped without double counting.
"""

from __future__ import annotations

from typing import Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from ccmon import __version__

WINDOW_COUNTS = ("offered", "answered", "answered_in_sl", "abandoned", "short_abandoned", "timed_out", "blocked")


class SnapshotCollector:
    """A one-shot collector over an already-read snapshot and worker status."""

    def __init__(self, snapshot: Mapping[str, object], status: Mapping[str, object]):
        self.snapshot = snapshot
        self.status = status

    def collect(self) -> Iterator[Metric]:
        """Yield every ccmon metric family."""
        calls = GaugeMetricFamily(
            "ccmon_window_calls", "Calls in the window by outcome (event time).", labels=["queue", "window", "outcome"]
        )
        sl = GaugeMetricFamily(
            "ccmon_service_level_ratio",
            "answered_in_sl / (answered + abandoned - short_abandoned); absent when the denominator is 0.",
            labels=["queue", "window"],
        )
        asa = GaugeMetricFamily(
            "ccmon_asa_seconds", "Mean wait of answered calls; absent when none were answered.", labels=["queue", "window"]
        )
        waiting = GaugeMetricFamily("ccmon_calls_waiting", "Calls offered and not yet out of the queue.", labels=["queue"])
        queues: Mapping[str, Mapping[str, Mapping[str, object]]] = self.snapshot.get("queues", {})  # type: ignore[assignment]
        for queue, view in queues.items():
            waiting.add_metric([queue], float(view["now"]["calls_waiting"]))  # type: ignore[arg-type]
            for window, w in view.items():
                if window == "now":
                    continue
                for name in WINDOW_COUNTS:
                    calls.add_metric([queue, window, name], float(w[name]))  # type: ignore[arg-type]
                if w["service_level"] is not None:
                    sl.add_metric([queue, window], float(w["service_level"]))  # type: ignore[arg-type]
                if w["asa_seconds"] is not None:
                    asa.add_metric([queue, window], float(w["asa_seconds"]))  # type: ignore[arg-type]
        yield from (calls, sl, asa, waiting)

        stats: Mapping[str, int] = self.status.get("stats", {})  # type: ignore[assignment]
        consumed = CounterMetricFamily("ccmon_events_consumed", "Events decoded from the topics (valid or not).")
        consumed.add_metric([], stats.get("consumed", 0))
        applied = CounterMetricFamily("ccmon_events_applied", "Valid events applied, by domain.", labels=["domain"])
        dups = CounterMetricFamily("ccmon_events_duplicate", "Events ignored as repeated event_id.", labels=["domain"])
        rejected = CounterMetricFamily(
            "ccmon_events_rejected", "Events sent to the dead-letter topic, by reason.", labels=["reason"]
        )
        for key, value in sorted(stats.items()):
            kind, _, label = key.partition(":")
            if kind == "applied":
                applied.add_metric([label], value)
            elif kind == "duplicates":
                dups.add_metric([label], value)
            elif kind == "rejected":
                rejected.add_metric([label], value)
        lag = GaugeMetricFamily(
            "ccmon_consumer_lag_messages", "Messages in the log not yet committed to Redis.", labels=["topic", "partition"]
        )
        for tp, value in sorted(self.status.get("lag", {}).items()):  # type: ignore[union-attr]
            topic, _, partition = tp.rpartition(":")
            lag.add_metric([topic, partition], float(value))
        last = GaugeMetricFamily("ccmon_last_commit_timestamp_seconds", "When a batch was last committed to Redis.")
        if "last_commit_ms" in stats:
            last.add_metric([], stats["last_commit_ms"] / 1000)
        info = InfoMetricFamily("ccmon_build", "ccmon build information.")
        info.add_metric([], {"version": __version__})
        yield from (consumed, applied, dups, rejected, lag, last, info)


def render(snapshot: Mapping[str, object], status: Mapping[str, object], accept: str | None) -> tuple[bytes, str]:
    """The exposition body and content type (OpenMetrics when the scraper asks for it)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, status))  # type: ignore[arg-type]
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
