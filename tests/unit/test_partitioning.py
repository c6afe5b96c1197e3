"""ccmon's partitioner must pick the partition Kafka's default partitioner picks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2

from streams.partitioning import partition_for


@settings(max_examples=3000, deadline=None)
@given(st.text(max_size=80), st.integers(1, 64))
def test_partition_equals_kafka_python_murmur2(key: str, partitions: int) -> None:
    assert partition_for(key, partitions) == (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def test_java_client_compatibility() -> None:
    # The partitions Kafka's Java client picks among 1000 for these keys (kafka-python's compatibility table).
    keys = {"": 681, "a": 524, "ab": 434, "abc": 107, "123456789": 566, "\x00 ": 742}
    assert {k: partition_for(k, 1000) for k in keys} == keys
