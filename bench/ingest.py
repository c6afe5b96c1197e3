"""HTTP ingest throughput at the default limits (1 MiB bodies, 20,000 events/s per token).

Starts the embedded broker and Redis and a worker, then posts simulated events as
NDJSON from ``--clients`` concurrent clients, each with its own token (the rate
limit is per token), and reports accepted events per second end to end (every
answer waits for the broker's acknowledgement).

    .venv/bin/python bench/ingest.py --events 200000 --clients 1,4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ccmon.services import free_port, python_cmd, spawn, start_embedded, stop  # noqa: E402
from ccmon.settings import child_environment  # noqa: E402
from streams.simulator import SimConfig, generate  # noqa: E402

BODY_LIMIT = 1_048_576


def bodies(n: int) -> list[bytes]:
    """NDJSON bodies just under the default size limit."""
    out, cur, size = [], [], 0
    sim = SimConfig(seed=2, queues=tuple(f"q{i}" for i in range(20)), arrival_rate_per_hour=3000, agents_per_queue=50)
    for i, ev in enumerate(generate(sim, time.time() - 3600, 3600)):
        if i >= n:
            break
        line = json.dumps(ev).encode() + b"\n"
        if size + len(line) > BODY_LIMIT - 1024 or len(cur) >= 4000:
            out.append(b"".join(cur))
            cur, size = [], 0
        cur.append(line)
        size += len(line)
    if cur:
        out.append(b"".join(cur))
    return out


async def run(url: str, chunks: list[bytes], tokens: list[str]) -> tuple[int, float, int]:
    """Post every chunk (client i uses tokens[i]); return accepted events, seconds, 429 answers."""
    import aiohttp

    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for c in chunks:
        queue.put_nowait(c)
    accepted = limited = 0

    async def client(session: aiohttp.ClientSession, token: str) -> None:
        nonlocal accepted, limited
        while not queue.empty():
            body = queue.get_nowait()
            while True:
                async with session.post(url, data=body, headers={"Authorization": f"Bearer {token}",
                                                                 "Content-Type": "application/x-ndjson"}) as r:
                    if r.status == 429:
                        limited += 1
                        await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                        continue
                    answer = await r.json()
                    accepted += answer["accepted"]
                    break

    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        await asyncio.gather(*(client(session, t) for t in tokens))
    return accepted, time.monotonic() - started, limited


def main() -> None:
    """Run and print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--clients", default="1,4")
    args = ap.parse_args()
    chunks = bodies(args.events)
    with tempfile.TemporaryDirectory() as tmp:
        emb = start_embedded(Path(tmp))
        port = free_port()
        tokens = [f"bench-token-{i}" for i in range(8)]
        env = child_environment(kafka_bootstrap=emb.kafka_bootstrap, redis_url=emb.redis_url, http_port=str(port),
                                data_dir=str(Path(tmp) / "ccmon"), kafka_session_timeout="4",
                                ingest_tokens=",".join(tokens))
        worker = spawn(python_cmd("worker"), Path(tmp) / "worker.log", env)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                try:
                    urllib.request.urlopen(base + "/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.3)
            print("| clients | events | seconds | accepted events/s | 429 answers |")
            print("|---:|---:|---:|---:|---:|")
            for n in (int(c) for c in args.clients.split(",")):
                accepted, took, limited = asyncio.run(run(base + "/api/events", chunks, tokens[:n]))
                print(f"| {n} | {accepted:,} | {took:.1f} | {accepted / took:,.0f} | {limited} |", flush=True)
        finally:
            stop(worker)
            emb.stop()


if __name__ == "__main__":
    main()
