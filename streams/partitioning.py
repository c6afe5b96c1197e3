"""Kafka's default (murmur2) partitioner, so batches and checks agree with every client."""

from __future__ import annotations

from murmurhash2 import murmurhash2

# Kafka's default partitioner is MurmurHash2 with this seed (kafka-python's pure-Python ``murmur2``
# computes the same, ~17x slower; tests/unit/test_partitioning.py holds the two equal).
KAFKA_SEED = 0x9747B28C


def partition_for(entity_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a message keyed by ``entity_id``."""
    return (murmurhash2(entity_id.encode(), KAFKA_SEED) & 0x7FFFFFFF) % partitions
