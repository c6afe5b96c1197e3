"""What a worker does at full speed without one part of its work: ``bench/e2e.py throughput --without PART``.

Python imports this module at start-up when its folder is on ``PYTHONPATH``, which only that benchmark run sets
(with ``BENCH_WITHOUT``); for that worker it takes the place of any ``sitecustomize`` the interpreter has. The
figures bound what making the part faster could buy. They are not ccmon's figures: the run's counts are knowingly
wrong, and the benchmark does not compare them with the oracle.

``BENCH_WITHOUT=core``: no domain core. Every event is decoded, partition-checked and accepted as applied, and
changes nothing: no deltas, no entity states. Offsets, stats and latencies are committed as usual.

``BENCH_WITHOUT=writes``: the cores run, but nothing they produce is encoded or written: entity states are not
encoded, and each commit holds no counter deltas or states (offsets, stats and latencies still go to Redis).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

_WITHOUT = os.environ.get("BENCH_WITHOUT", "")

if _WITHOUT:
    from agents import pipeline
    from agents.core import BatchResult, Deltas
    from ccmon.store import Commit, Store

    if _WITHOUT == "core":
        def _accept_all(core: object, part: object, events: Sequence, cfg: object,
                        result: Optional[BatchResult] = None) -> BatchResult:
            res = result or BatchResult()
            res.applied_ts.extend(round(ev.ts * 1000) for ev in events)
            res.applied += len(events)
            for ev in events:
                queue = getattr(ev, "queue", None)
                if queue:
                    res.queues.add(queue)
            return res

        pipeline.apply_batch = _accept_all  # type: ignore[assignment]
    elif _WITHOUT == "writes":
        _commit = Store.commit

        async def _commit_bare(self: Store, c: Commit) -> None:
            c.deltas, c.states = Deltas(), {}
            await _commit(self, c)

        pipeline.encode_state = lambda state: b""  # type: ignore[assignment]
        Store.commit = _commit_bare  # type: ignore[method-assign]
    else:
        raise SystemExit(f"BENCH_WITHOUT={_WITHOUT!r} is not a part this benchmark can leave out: use core or writes")
