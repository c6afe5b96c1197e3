"""Wallboard soak: browser memory over a long run, and the worker's CPU with 100 screens connected.

Starts the embedded broker and Redis, a worker and live simulated traffic, then:

1. opens the TV wallboard in headless Chromium (Debian's) and samples the page's
   JS heap (``performance.memory``, after a forced GC through the DevTools
   protocol) and the DOM node count every ``--sample`` seconds for ``--minutes``;
2. measures the worker's CPU over ``--cpu-seconds`` with no screen, then with
   ``--screens`` Server-Sent Events clients on loopback reading every message.

    .venv/bin/python bench/wallboard_soak.py --minutes 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ccmon.services import free_port, python_cmd, spawn, start_embedded, stop  # noqa: E402
from ccmon.settings import child_environment  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_http(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not answer within {timeout:.0f}s")


async def screens(url: str, n: int, seconds: float) -> int:
    """Hold ``n`` SSE connections for ``seconds``; return the messages they received."""
    import aiohttp

    received = 0

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal received
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=None)) as resp:
            async for line in resp.content:
                if line.startswith(b"event: snapshot"):
                    received += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = [asyncio.create_task(one(session)) for _ in range(n)]
        await asyncio.sleep(seconds)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return received


def main() -> None:
    """Run the soak and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--sample", type=float, default=60, help="seconds between memory samples")
    ap.add_argument("--screens", type=int, default=100)
    ap.add_argument("--cpu-seconds", type=float, default=60)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        emb = start_embedded(data)
        port = free_port()
        env = child_environment(kafka_bootstrap=emb.kafka_bootstrap, redis_url=emb.redis_url, http_port=str(port),
                                data_dir=str(data / "ccmon"), kafka_session_timeout="4")
        worker = spawn(python_cmd("worker"), data / "worker.log", env)
        sim = None
        driver = None
        try:
            base = f"http://127.0.0.1:{port}"
            wait_http(base + "/health")
            sim = spawn(python_cmd("simulate", "--rate", "900", "--agents", "60", "--queues",
                                   ",".join(f"queue-{i:02d}" for i in range(12))), data / "sim.log", env)
            time.sleep(10)

            idle0, t0 = cpu_seconds(worker.pid), time.monotonic()
            time.sleep(args.cpu_seconds)
            idle = (cpu_seconds(worker.pid) - idle0) / (time.monotonic() - t0)
            busy0, t0 = cpu_seconds(worker.pid), time.monotonic()
            got = asyncio.run(screens(base + "/wallboard/stream", args.screens, args.cpu_seconds))
            busy = (cpu_seconds(worker.pid) - busy0) / (time.monotonic() - t0)
            print(f"worker CPU with live traffic: {idle:.1%} of a core with no screen, {busy:.1%} with "
                  f"{args.screens} screens (+{busy - idle:.1%}); the screens received {got} messages "
                  f"({got / args.screens / args.cpu_seconds:.2f}/s each)", flush=True)

            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from tests.integration.test_wallboard import chrome

            driver = chrome()
            driver.get(base + "/wallboard?tv=1")
            print("| minute | JS heap used MiB | DOM nodes | messages |", flush=True)
            print("|---:|---:|---:|---:|", flush=True)
            started = time.monotonic()
            while True:
                driver.execute_cdp_cmd("HeapProfiler.collectGarbage", {})
                heap = driver.execute_script("return performance.memory.usedJSHeapSize") / 2**20
                nodes = driver.execute_script("return document.getElementsByTagName('*').length")
                messages = driver.execute_script("return (window.ccmon || {}).messages || 0")
                minute = (time.monotonic() - started) / 60
                print(f"| {minute:.1f} | {heap:.2f} | {nodes} | {messages} |", flush=True)
                if minute >= args.minutes:
                    break
                time.sleep(args.sample)
        finally:
            if driver is not None:
                driver.quit()
            for proc in (sim, worker):
                if proc is not None:
                    stop(proc)
            emb.stop()


if __name__ == "__main__":
    main()
