"""The ``ccmon`` command line: run, worker, send, simulate, metrics, alerts."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO, Iterator, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ccmon.errors import CcmonError
from ccmon.settings import Settings, load_settings

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


@app.command("config")
def config_dump(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of NAME=value lines.")) -> None:
    """Print the effective settings (environment, _FILE secrets, defaults); secrets show as ***."""
    values = _settings().redacted()
    if as_json:
        out.print_json(json.dumps(values))
        return
    for name, value in values.items():
        out.print(f"CCMON_{name.upper()}={'' if value is None else value}", markup=False, highlight=False)


# -------------------------------------------------------------------- send


CSV_NUMBERS = {"ts": float, "score": int, "value": float, "hold_seconds": float}
CSV_LISTS = ("queues", "tags")  # cells split on ";"
CSV_BOOLS = ("public",)


def csv_row_to_json(row: dict[str, str]) -> bytes:
    """One CSV row as a contract JSON line: empty cells are absent, ``attributes.KEY`` columns nest, lists split on
    ``;``, numbers and booleans are converted (an unconvertible cell stays text, so the validator says why)."""
    event: dict[str, object] = {}
    for key, cell in row.items():
        if key is None or cell is None or cell == "":
            continue
        key = key.strip()
        value: object = cell
        if key in CSV_NUMBERS:
            try:
                value = CSV_NUMBERS[key](cell)
            except ValueError:
                value = cell
        elif key in CSV_LISTS:
            value = [part.strip() for part in cell.split(";") if part.strip()]
        elif key in CSV_BOOLS:
            value = cell.strip().lower() in ("true", "1", "yes")
        if key.startswith("attributes."):
            event.setdefault("attributes", {})[key[len("attributes."):]] = value  # type: ignore[union-attr]
        else:
            event[key] = value
    return json.dumps(event).encode()


def _event_lines(source: str, fmt: str) -> Iterator[tuple[int, bytes]]:
    """(line number, JSON bytes) of each event in a JSONL or CSV file, or standard input."""
    import csv
    import io

    binary: IO[bytes] = sys.stdin.buffer if source == "-" else open(source, "rb")
    try:
        if fmt == "csv":
            reader = csv.DictReader(io.TextIOWrapper(binary, encoding="utf-8", newline=""))
            for row in reader:
                yield reader.line_num, csv_row_to_json(row)
            return
        for n, line in enumerate(binary, 1):
            if line.strip():
                yield n, line.rstrip(b"\r\n")
    finally:
        if binary is not sys.stdin.buffer:
            binary.close()


@app.command()
def send(
    file: str = typer.Argument(..., help="A JSONL or CSV file of events, or - for standard input."),
    chunk: int = typer.Option(10_000, help="Lines validated and published per round trip."),
    fmt: Optional[str] = typer.Option(None, "--format", help="jsonl or csv (default: from the file name; jsonl)."),
    rate: Optional[float] = typer.Option(None, "--rate", help="Send at most this many events per second."),
    preserve_timing: bool = typer.Option(False, "--preserve-timing", help="Replay with the gaps between the "
                                         "events' own ts (in file order); --speed scales them."),
    speed: float = typer.Option(1.0, "--speed", help="With --preserve-timing: event seconds per wall second."),
) -> None:
    """Validate events and publish them; rejects go to the dead-letter topic. Exit 1 if any line was rejected."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from streams.deadletter import encode as encode_dl, make_dead_letter
    from streams.events import Rejected, decode_line
    from streams.producer import Publisher

    settings = _settings()
    if file != "-" and not Path(file).is_file():
        _fail(f"{file} does not exist; pass a JSONL or CSV file of events, or - to read standard input")
    fmt = (fmt or ("csv" if file.lower().endswith(".csv") else "jsonl")).lower()
    if fmt not in ("jsonl", "csv"):
        _fail(f"--format {fmt} is not known; use jsonl or csv")
    if (rate is not None and rate <= 0) or speed <= 0:
        _fail("--rate and --speed must be positive")
    try:
        publisher = Publisher(settings, _endpoint(settings, "kafka_bootstrap"))
    except CcmonError as exc:
        _fail(str(exc))
        return
    total = None
    if file != "-":
        with open(file, "rb") as fh:
            total = sum(1 for line in fh if line.strip()) - (1 if fmt == "csv" else 0)
    paced = rate is not None or preserve_timing
    reasons: Counter[str] = Counter()
    examples: list[str] = []
    sent = 0
    started = time.monotonic()
    first_ts: Optional[float] = None
    progress = Progress(TextColumn("sending"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("rejected {task.fields[rej]}"), TimeElapsedColumn(), console=err,
                        disable=not sys.stderr.isatty())
    good: list = []
    dead: list[bytes] = []

    def flush() -> None:
        nonlocal sent, good, dead
        sent += publisher.publish(good)
        if dead:
            publisher.dead_letter(dead)
        good, dead = [], []

    try:
        with progress:
            task = progress.add_task("send", total=total, rej=0)
            for done, (n, line) in enumerate(_event_lines(file, fmt)):
                item = decode_line(line)
                if isinstance(item, Rejected):
                    reasons[item.reason] += 1
                    if len(examples) < 10:
                        examples.append(f"line {n}: {item.reason}: {item.detail}")
                    dead.append(encode_dl(make_dead_letter(line, item.reason, item.detail, "send", line=n)))
                else:
                    if paced:
                        # Send what is due, then wait for this event's moment: by --rate, or by its own ts.
                        if preserve_timing:
                            first_ts = item.ts_ms / 1000 if first_ts is None else first_ts
                            due = started + max(0.0, item.ts_ms / 1000 - first_ts) / speed
                        else:
                            due = started + done / rate  # type: ignore[operator]
                        if due > time.monotonic():
                            flush()
                            time.sleep(max(0.0, due - time.monotonic()))
                    good.append((item, line))
                if len(good) + len(dead) >= chunk:
                    flush()
                progress.update(task, advance=1, rej=sum(reasons.values()))
            flush()
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
    from streams.simulator import SimConfig

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


@app.command()
def metrics(
    queue: Optional[List[str]] = typer.Option(None, "--queue", help="Only this queue (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the snapshot JSON (same as GET /api/snapshot)."),
    at: Optional[str] = typer.Option(None, "--at", help="Evaluate at this instant (epoch seconds or RFC 3339) "
                                     "instead of now: what the windows and time-driven gauges show then."),
) -> None:
    """Print the current snapshot from Redis."""
    from ccmon.store import Store
    from ccmon.web import parse_instant

    settings = _settings()
    try:
        at_ms = parse_instant(at) if at else None
    except ValueError as exc:
        _fail(str(exc))
        return
    store = Store(_endpoint(settings, "redis_url"), settings.metrics_config(), settings.redis_options())

    async def read() -> dict:
        try:
            return await store.snapshot(now_ms=at_ms, only=queue or None)
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
        out.print("no queues yet: no call or agent events have been processed")
        return
    for name, view in queues.items():
        out.print(_queue_table(name, view))
    out.print(f"generated at {snap['generated_at']}")


_ROWS = (
    ("offered", "n"), ("answered", "n"), ("answered_in_sl", "n"), ("abandoned", "n"), ("short_abandoned", "n"),
    ("timed_out", "n"), ("blocked", "n"), ("handled", "n"), ("service_level", "%"), ("abandon_rate", "%"),
    ("blocking_rate", "%"), ("asa_seconds", "s"), ("max_wait_seconds", "s"), ("aht_seconds", "s"),
    ("avg_talk_seconds", "s"), ("avg_hold_seconds", "s"), ("avg_acw_seconds", "s"),
    ("tickets_created", "n"), ("tickets_solved", "n"), ("first_response_seconds_avg", "s"), ("frt_sla", "%"),
    ("resolution_seconds_avg", "s"), ("resolution_sla", "%"), ("reopen_rate", "%"), ("escalation_rate", "%"),
    ("fcr_rate", "%"), ("csat", "%"), ("nps", "f"), ("ces_avg", "f"),
)


def _cell(value: object, kind: str) -> str:
    if value is None:
        return "—"
    if kind == "%":
        return f"{value:.1%}"
    if kind == "s":
        return f"{value:.1f}s"
    if kind == "f":
        return f"{value:.1f}"
    return str(value)


def _queue_table(name: str, view: dict) -> Table:
    """One queue's windows as a table, with the live gauges in its title."""
    now = view["now"]
    longest = _cell(now["longest_wait_seconds"], "s")
    predicted = _cell(now["predicted_service_level"], "%")
    title = (
        f"[bold]{name}[/]  waiting {now['calls_waiting']} (longest {longest})  agents: "
        f"{now['agents_available']} available, {now['agents_on_call']} on call, {now['agents_wrap_up']} wrap-up, "
        f"{now['agents_away']} away  forecast SL {predicted}, {_cell(now['agents_required'], 'n')} agents required"
        f"  tickets: {now['tickets_open']} open, {now['backlog']} backlog, {now['sla_breached_open']} breached, "
        f"{now['sla_due_soon']} due soon"
    )
    windows = [w for w in view if w not in ("now", "totals")]
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for w in windows:
        table.add_column(w, justify="right")
    for metric, kind in _ROWS:
        table.add_row(metric, *[_cell(view[w][metric], kind) for w in windows])
    occupancy = [now.get(f"occupancy_{w}") for w in windows]
    table.add_row("occupancy", *[_cell(v, "%") for v in occupancy])
    for name in view[windows[0]]["custom"] if windows else ():
        values = [view[w]["custom"][name] for w in windows]
        kind = "n" if all(isinstance(v, int) or v is None for v in values) else "%"
        table.add_row(name, *[_cell(v, kind) for v in values])
    return table


# ---------------------------------------------------------------- backfill


@app.command()
def backfill(
    yes: bool = typer.Option(False, "--yes", help="Confirm: ccmon's keys in this Redis db are deleted and rebuilt."),
    force: bool = typer.Option(False, "--force", help="Run even though a worker committed in the last 15 s."),
) -> None:
    """Rebuild Redis from the Kafka history (after losing Redis, or changing thresholds or windows). Stop workers first."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ccmon.backfill import backfill as run_backfill

    settings = _settings()
    if not yes:
        _fail("a backfill deletes ccmon's keys in Redis (alert state excepted) and rebuilds them from Kafka: stop "
              "every worker, then run `ccmon backfill --yes`")
    settings = settings.model_copy(update={"kafka_bootstrap": _endpoint(settings, "kafka_bootstrap"),
                                           "redis_url": _endpoint(settings, "redis_url")})
    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, disable=not sys.stderr.isatty())
    tasks: dict[str, object] = {}

    def progress(topic: str, done: int, total: int) -> None:
        if topic not in tasks:
            tasks[topic] = bars.add_task(topic, total=total or None)
        bars.update(tasks[topic], completed=done, total=total or None)  # type: ignore[arg-type]

    started = time.monotonic()
    try:
        with bars:
            read = asyncio.run(run_backfill(settings, progress, force=force))
    except CcmonError as exc:
        _fail(str(exc))
        return
    took = time.monotonic() - started
    out.print(f"backfill done in {took:.1f}s: " + ", ".join(f"{t}: {n} messages" for t, n in read.items()))
    out.print("start the workers again; they carry on from the rebuilt offsets")


# ------------------------------------------------------------------ alerts

alerts_app = typer.Typer(no_args_is_help=True, help="Check alert rule files and try rules on a snapshot.")
app.add_typer(alerts_app, name="alerts")


def _load_alerts(file: Optional[Path]) -> object:
    import os

    from alerts.config import AlertConfigError, load

    from ccmon.settings import SecretEnviron

    try:
        return load(file, SecretEnviron(os.environ))
    except CcmonError as exc:  # a receiver's NAME_FILE cannot be read
        _fail(str(exc))
    except AlertConfigError as exc:
        for problem in exc.problems:
            err.print("[bold red]error:[/] " + escape(problem))
        err.print(f"{len(exc.problems)} problem(s) in the alerts file")
        raise typer.Exit(1) from None


@alerts_app.command("check")
def alerts_check(file: Path = typer.Argument(..., help="The alerts YAML (what CCMON_ALERTS points at).")) -> None:
    """Validate an alerts file: every error with its line; receivers' secret variables must be set."""
    from alerts.config import AlertsConfig

    cfg = _load_alerts(file)
    assert isinstance(cfg, AlertsConfig)
    builtin = sum(1 for r in cfg.rules if r.builtin)
    out.print(f"{file}: OK: {len(cfg.rules)} rules ({builtin} built-in), {len(cfg.receivers)} receivers, "
              f"evaluated every {cfg.evaluation_interval_s:g}s")
    for r in cfg.rules:
        out.print(f"  {r.name}: {r.condition.describe()} for {r.for_s:g}s, {r.severity} -> "
                  f"{', '.join(r.receivers) or '(no receiver: /api/alerts and the alerts topic only)'}", markup=False)


@alerts_app.command("test")
def alerts_test(
    file: Optional[Path] = typer.Option(None, "--file", help="The alerts YAML (default: CCMON_ALERTS, else the "
                                        "built-in rules)."),
    snapshot: Optional[Path] = typer.Option(None, "--snapshot", help="A snapshot JSON (`ccmon metrics --json`); "
                                            "default: the live one from Redis."),
) -> None:
    """Evaluate the rules against a snapshot and print what would fire (ignoring `for`)."""
    from alerts.config import AlertsConfig
    from alerts.engine import AlertState, Rule, evaluate, queues_of

    settings = _settings()
    cfg = _load_alerts(file if file is not None else settings.alerts)
    assert isinstance(cfg, AlertsConfig)
    status: dict = {"stats": {}, "lag": {}}
    if snapshot is not None:
        try:
            snap = json.loads(snapshot.read_text())
        except (OSError, ValueError) as exc:
            _fail(f"cannot read the snapshot {snapshot}: {exc}; write one with `ccmon metrics --json > FILE`")
            return
        from ccmon.web import parse_instant

        now_ms = parse_instant(snap.get("generated_at", str(time.time())))
    else:
        from ccmon.store import Store

        store = Store(_endpoint(settings, "redis_url"), settings.metrics_config(), settings.redis_options())
        now_ms = int(time.time() * 1000)

        async def read() -> tuple[dict, dict]:
            try:
                return await store.snapshot(now_ms=now_ms), await store.status()
            finally:
                await store.close()

        try:
            snap, status = asyncio.run(read())
        except CcmonError as exc:
            _fail(str(exc))
            return
    table = Table(title=f"rules at {snap.get('generated_at', '')}", title_justify="left")
    table.add_column("rule", no_wrap=True, min_width=max((len(r.name) for r in cfg.rules), default=4))
    for col in ("queue", "value", "threshold", "would", "summary"):
        table.add_column(col)
    firing = 0
    for rule in cfg.rules:
        instant = Rule(**{**rule.__dict__, "for_s": 0})
        for queue in queues_of(rule, snap):
            state, notes = evaluate(instant, AlertState(rule.name, queue), snap, status, now_ms)
            if rule.change_s is not None:
                continue  # a change needs history; the evaluator keeps it
            fire = bool(notes)
            firing += fire
            value = "—" if state.value is None else f"{state.value:g}"
            threshold = "—" if state.threshold is None else f"{state.threshold:g}"
            table.add_row(rule.name, queue or "-", value, threshold, "[bold red]FIRE[/]" if fire else "ok",
                          escape(notes[0].summary) if notes else "")
    out.print(table)
    out.print(f"{firing} alert(s) would fire (after their `for`)")


from ccmon.ingest_cli import ingest_app
app.add_typer(ingest_app, name="ingest")


def main() -> None:
    """Console-script entry point."""
    app()
