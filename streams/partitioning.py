"""Kafka's default (murmur2) partitioner, so batches and checks agree with every client."""

from __future__ import annotations

from kafka.partitioner.default import murmur2

_cache: dict[tuple[str, int], int] = {}
_CACHE_MAX = 20_000  # the working set is the entities with events in flight, a few thousand


def partition_for(entity_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a message keyed by ``entity_id``."""
    key = (entity_id, partitions)
    p = _cache.get(key)
    if p is None:
        # An entity's events arrive close together, so a small cache removes most murmur2 calls.
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        p = _cache[key] = (murmur2(entity_id.encode()) & 0x7FFFFFFF) % partitions
    return p
