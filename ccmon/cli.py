"""The ``ccmon`` command line: run, worker, send, simulate, metrics."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import IO, Iterator, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from ccmon.errors import CcmonError
from ccmon.settings import Settings, child_environment, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="ccmon: a real-time contact-center monitor.")
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _settings() -> Settings:
    try:
        return load_settings()
    except CcmonError as exc:
        _fail(str(exc))
        raise  # unreachable


def _endpoints_path(settings: Settings) -> Path:
    return settings.data_dir / "endpoints.json"


def _endpoint(settings: Settings, name: str) -> str:
    """A configured endpoint, else the one a running ``ccmon run`` wrote to its data dir."""
    value = getattr(settings, name)
    if value:
        return value
    path = _endpoints_path(settings)
    if path.exists():
        found = json.loads(path.read_text()).get(name)
        if found:
            return found
    var = "CCMON_" + name.upper()
    _fail(f"{var} is not set and no `ccmon run` is running here ({path} is missing); start `ccmon run` or set {var}")
    raise AssertionError


# ------------------------------------------------------------------ worker


@app.command()
def worker() -> None:
    """Run the bare Faust worker against CCMON_KAFKA_BOOTSTRAP and CCMON_REDIS_URL."""
    from ccmon.worker import run_worker

    settings = _settings()
    try:
        run_worker(settings)
    except CcmonError as exc:
        _fail(str(exc))


# --------------------------------------------------------------------- run


@app.command()
def run(
    demo: bool = typer.Option(False, "--demo", help="Also run the traffic simulator in real time."),
    demo_rate: float = typer.Option(900.0, help="Demo calls offered per hour per queue."),
) -> None:
    """Run the worker, plus an embedded broker and Redis when none are configured."""
    from ccmon.supervisor import Supervisor

    settings = _settings()
    try:
        Supervisor(settings, demo=demo, demo_rate=demo_rate, console=err).run()
    except CcmonError as exc:
        _fail(str(exc))


# -------------------------------------------------------------------- send


def _lines(source: str) -> Iterator[tuple[int, bytes]]:
    stream: IO[bytes] = sys.stdin.buffer if source == "-" else open(source, "rb")
    try:
        for n, line in enumerate(stream, 1):
            if line.strip():
                yield n, line.rstrip(b"\r\n")
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


@app.command()
def send(
    file: str = typer.Argument(..., help="A JSONL file of events, or - for standard input."),
    chunk: int = typer.Option(10_000, help="Lines validated and published per round trip."),
) -> None:
    """Validate JSONL events and publish them; rejects go to the dead-letter topic. Exit 1 if any line was rejected."""
    from streams.deadletter import encode as encode_dl, make_dead_letter
    from streams.events import Rejected, decode_line
    from streams.producer import Publisher

    settings = _settings()
    if file != "-" and not Path(file).is_file():
        _fail(f"{file} does not exist; pass a JSONL file of events, or - to read standard input")
    try:
        publisher = Publisher(settings, _endpoint(settings, "kafka_bootstrap"))
    except CcmonError as exc:
        _fail(str(exc))
        return
    reasons: Counter[str] = Counter()
    examples: list[str] = []
    sent = 0
    started = time.monotonic()
    try:
        lines = _lines(file)
        while True:
            block = list(itertools.islice(lines, chunk))
            if not block:
                break
            good, dead = [], []
            for n, line in block:
                item = decode_line(line)
                if isinstance(item, Rejected):
                    reasons[item.reason] += 1
                    if len(examples) < 10:
                        examples.append(f"line {n}: {item.reason}: {item.detail}")
                    dead.append(encode_dl(make_dead_letter(line, item.reason, item.detail, "send", line=n)))
                else:
                    good.append((item, line))
            sent += publisher.publish(good)
            if dead:
                publisher.dead_letter(dead)
            if sys.stderr.isatty():
                err.print(f"sent {sent}, rejected {sum(reasons.values())}…", end="\r")
    except CcmonError as exc:
        _fail(f"{exc} (sent {sent} before the failure)")
    finally:
        publisher.close()
    rejected = sum(reasons.values())
    took = time.monotonic() - started
    by_topic = ", ".join(f"{t}: {n}" for t, n in sorted(publisher.sent.items())) or "none"
    out.print(f"sent {sent} events ({by_topic}) in {took:.2f}s; rejected {rejected}")
    for reason, n in reasons.most_common():
        out.print(f"  rejected {n} × {reason}")
    for line in examples:
        out.print(f"  {line}")
    if rejected:
        out.print(f"rejected lines were published to {settings.deadletter_topic} with their reasons")
        raise typer.Exit(1)


# ---------------------------------------------------------------- simulate


@app.command()
def simulate(
    out_file: Optional[Path] = typer.Option(None, "--out", help="Write JSONL as fast as possible instead of publishing."),
    speed: float = typer.Option(1.0, help="Real-time mode: simulated seconds per wall-clock second."),
    duration: Optional[float] = typer.Option(None, help="Simulated seconds (default: 1 day with --out, forever live)."),
    start: Optional[float] = typer.Option(None, help="Epoch seconds of the first event (default: now)."),
    seed: int = typer.Option(1, help="Random seed; the same seed gives the same events."),
    queues: str = typer.Option("sales,support,billing", help="Comma-separated queue names."),
    rate: float = typer.Option(240.0, help="Calls offered per hour per queue."),
    agents: int = typer.Option(16, help="Agents per queue."),
    ticket_rate: float = typer.Option(60.0, help="Tickets created per hour per queue."),
) -> None:
    """Generate realistic seeded traffic: to a JSONL file (--out), or live to the broker."""
    from streams.simulator import SimConfig, generate

    cfg = SimConfig(
        seed=seed, queues=tuple(q for q in queues.split(",") if q), arrival_rate_per_hour=rate,
        agents_per_queue=agents, ticket_rate_per_hour=ticket_rate,
    )
    t0 = time.time() if start is None else start
    if out_file is not None:
        _simulate_to_file(cfg, t0, 86400.0 if duration is None else duration, out_file)
    else:
        _simulate_live(cfg, t0, duration, speed)


def _simulate_to_file(cfg: object, t0: float, duration: float, path: Path) -> None:
    import msgspec

    from streams.simulator import generate

    enc = msgspec.json.Encoder()
    n = 0
    started = time.monotonic()
    with open(path, "wb") as fh:
        for ev in generate(cfg, t0, duration):  # type: ignore[arg-type]
            fh.write(enc.encode(ev) + b"\n")
            n += 1
            if n % 100_000 == 0 and sys.stderr.isatty():
                err.print(f"wrote {n} events…", end="\r")
    took = time.monotonic() - started
    out.print(f"wrote {n} events to {path} in {took:.1f}s ({n / max(took, 1e-9):,.0f} events/s)")


def _simulate_live(cfg: object, t0: float, duration: Optional[float], speed: float) -> None:
    import msgspec

    from streams.events import Rejected, decode_line
    from streams.simulator import generate

    settings = _settings()
    from streams.producer import Publisher

    publisher = Publisher(settings, _endpoint(settings, "kafka_bootstrap"))
    enc = msgspec.json.Encoder()
    wall0 = time.time()
    pending: list = []
    sent = 0
    last_report = 0.0
    try:
        for ev in generate(cfg, t0, duration):  # type: ignore[arg-type]
            due = wall0 + (ev["ts"] - t0) / speed
            delay = due - time.time()
            if delay > 0:
                if pending:
                    sent += publisher.publish(pending)
                    pending = []
                time.sleep(min(delay, 1.0))
                while time.time() < due:
                    time.sleep(min(due - time.time(), 1.0))
            raw = enc.encode(ev)
            item = decode_line(raw)
            if isinstance(item, Rejected):  # the simulator must only emit valid events
                raise CcmonError(f"simulator produced an invalid event ({item.reason}: {item.detail})")
            pending.append((item, raw))
            if len(pending) >= 500:
                sent += publisher.publish(pending)
                pending = []
            if time.time() - last_report >= 5:
                last_report = time.time()
                err.print(f"simulate: {sent} events sent")
    except KeyboardInterrupt:
        pass
    finally:
        if pending:
            sent += publisher.publish(pending)
        publisher.close()
    out.print(f"simulate: {sent} events sent")


# ----------------------------------------------------------------- metrics


def _fmt(v: object) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.1%}" if v <= 1.0 else f"{v:.1f}"
    return str(v)


@app.command()
def metrics(
    queue: Optional[List[str]] = typer.Option(None, "--queue", help="Only this queue (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the snapshot JSON (same as GET /api/snapshot)."),
) -> None:
    """Print the current snapshot from Redis."""
    from ccmon.store import Store

    settings = _settings()
    store = Store(_endpoint(settings, "redis_url"), settings.metrics_config())

    async def read() -> dict:
        try:
            return await store.snapshot(only=queue or None)
        finally:
            await store.close()

    try:
        snap = asyncio.run(read())
    except CcmonError as exc:
        _fail(str(exc))
        return
    if as_json:
        sys.stdout.write(json.dumps(snap, indent=2) + "\n")
        return
    queues = snap["queues"]
    if not queues:
        out.print("no queues yet: no call events have been processed")
        return
    windows = [w for w in next(iter(queues.values())) if w != "now"]
    for name, view in queues.items():
        table = Table(title=f"{name}   calls waiting: {view['now']['calls_waiting']}", title_justify="left")
        table.add_column("metric")
        for w in windows:
            table.add_column(w, justify="right")
        for metric in ("offered", "answered", "answered_in_sl", "abandoned", "short_abandoned", "timed_out",
                       "blocked", "asa_seconds", "service_level"):
            values = [view[w][metric] for w in windows]
            if metric == "asa_seconds":
                cells = ["—" if v is None else f"{v:.1f}s" for v in values]
            elif metric == "service_level":
                cells = ["—" if v is None else f"{v:.1%}" for v in values]
            else:
                cells = [str(v) for v in values]
            table.add_row(metric, *cells)
        out.print(table)
    out.print(f"generated at {snap['generated_at']}")


def main() -> None:
    """Console-script entry point."""
    app()
