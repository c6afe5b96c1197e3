"""Pausing Python's cyclic garbage collector while a snapshot is built, used and dropped.

A 500-queue snapshot and its exposition allocate about a million containers that
live until the response is written. With the collector on, every few hundred
allocations make it walk the young ones, and every few of those walks the older
ones again: about a third of a scrape's CPU (bench/scrape.py). They form no
reference cycles, so reference counting frees them all, and the collector's
allocation count falls back as they go. So the pause must last until the snapshot
is dropped: resumed any earlier, the very next allocation walks everything built
meanwhile. Other tasks may run while a scrape awaits Redis; their cyclic garbage
waits for the pause to end.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def gc_paused() -> Iterator[None]:
    """Run the block with the cyclic collector off (restored after, nested or not)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
