"""``ccmon ingest``: read a PBX's own log and publish it as contract events.

``ccmon ingest asterisk PATH [--follow]`` maps Asterisk ``queue_log`` lines
(``ccmon.adapters.asterisk``), validates every event with the shared decoder
(``streams.events.decode_line``), publishes the valid ones with ``Publisher``
and dead-letters the rest with their line numbers. The position is saved
(``ccmon.adapters.tail``) only after the broker acknowledged everything up to it.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import typer

ingest_app = typer.Typer(no_args_is_help=True, help="Read a PBX's own logs and publish them as contract events.")

STATUS_SECONDS = 10.0  # how often a follower prints its status line (when something changed)
STAGE = "asterisk"  # the dead-letter records' ``stage``


def default_position(data_dir: Path, path: Path) -> Path:
    """Where the position of ``path`` is kept unless --position says otherwise."""
    return Path(data_dir) / f"asterisk-{path.name}.pos"


@ingest_app.command("asterisk")
def asterisk(
    path: Path = typer.Argument(..., help="The queue_log file (usually /var/log/asterisk/queue_log)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep reading as Asterisk appends, through log "
                                "rotation, until SIGTERM or Ctrl-C."),
    position: Optional[Path] = typer.Option(None, "--position", help="The position file (default: "
                                            "CCMON_DATA_DIR/asterisk-<file name>.pos)."),
    poll: float = typer.Option(1.0, "--poll", min=0.01, help="Seconds between looks at the file when following."),
    from_end: bool = typer.Option(False, "--from-end", help="With no position file yet, start at the end of the "
                                  "file instead of its beginning."),
) -> None:
    """Map an Asterisk queue_log to contract events and publish them; rejects go to the dead-letter topic."""
    import msgspec
    from rich.markup import escape

    from ccmon.adapters.asterisk import AsteriskMapper
    from ccmon.adapters.tail import LogTail
    from ccmon.cli import _endpoint, _fail, _settings, err, out
    from ccmon.errors import CcmonError
    from streams.deadletter import encode as encode_dl, make_dead_letter
    from streams.events import Rejected, decode_line
    from streams.producer import Publisher

    settings = _settings()
    if not follow and not path.is_file():
        _fail(f"{path} does not exist; pass the Asterisk queue_log file (usually /var/log/asterisk/queue_log)")
    pos_path = position or default_position(settings.data_dir, path)
    try:
        tail = LogTail(path, pos_path, from_end=from_end)
        mapper = AsteriskMapper.from_state(tail.saved.get("mapper"))
    except (ValueError, KeyError, TypeError) as exc:
        _fail(f"{exc} (position file {pos_path}; delete it to start over)")
        return
    try:
        publisher = Publisher(settings, _endpoint(settings, "kafka_bootstrap"))
    except CcmonError as exc:
        _fail(str(exc))
        return

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    lines_read = sent = 0
    rejected: Counter[str] = Counter()
    examples: list[str] = []
    encode = msgspec.json.encode

    def reject(n: int, raw: bytes, reason: str, detail: str) -> bytes:
        rejected[reason] += 1
        if len(examples) < 10:
            examples.append(f"line {n}: {reason}: {detail}")
        return encode_dl(make_dead_letter(raw, reason, detail, STAGE, line=n))

    def status() -> str:
        skipped = sum(mapper.skipped.values())
        invalid = sum(rejected.values()) - rejected["malformed_line"]
        return (f"asterisk: {lines_read} lines read, {sent} events sent, {skipped} skipped (unmapped verbs), "
                f"{sum(mapper.malformed.values())} malformed, {invalid} rejected")

    last_status, shown = time.monotonic(), ""
    if follow:
        err.print(escape(f"following {path} (position {pos_path}); stop with Ctrl-C or SIGTERM"))
    try:
        while True:
            for note in tail.notes:
                err.print(escape(note))
            tail.notes.clear()
            batch = tail.read(final=not follow)
            if batch:
                good: list[tuple[Any, bytes]] = []
                dead: list[bytes] = []
                for line in batch:
                    lines_read += 1
                    events = mapper.map_line(line.raw.decode("utf-8", "replace"))
                    if mapper.last_problem is not None:
                        reason, detail = mapper.last_problem
                        # The malformed line itself is what the operator needs to see.
                        dead.append(reject(line.number, line.raw, "malformed_line", f"{reason}: {detail}"))
                    for event in events:
                        raw = encode(event)
                        item = decode_line(raw)
                        if isinstance(item, Rejected):
                            dead.append(reject(line.number, line.raw, item.reason,
                                               f"{event['type']} mapped from this line: {item.detail}"))
                        else:
                            good.append((item, raw))
                sent += publisher.publish(good)
                if dead:
                    publisher.dead_letter(dead)
                # Only now is everything up to here acknowledged: save the position with the mapper's state.
                tail.checkpoint({"mapper": mapper.state()})
                if stop.is_set():
                    break
                continue
            if not follow or stop.is_set():
                break
            if time.monotonic() - last_status >= STATUS_SECONDS:
                last_status = time.monotonic()
                line_now = status()
                if line_now != shown:
                    shown = line_now
                    err.print(escape(line_now))
            stop.wait(poll)
    except CcmonError as exc:
        _fail(f"{exc} (sent {sent} events before the failure; the position is saved up to the last acknowledged "
              f"line, so a restart continues from there)")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        publisher.close()
        tail.close()

    by_topic = ", ".join(f"{t}: {n}" for t, n in sorted(publisher.sent.items())) or "none"
    skipped = sum(mapper.skipped.values())
    malformed = sum(mapper.malformed.values())
    n_rejected = sum(rejected.values()) - rejected["malformed_line"]  # events the validator refused
    out.print(escape(f"asterisk: read {lines_read} lines from {path}: sent {sent} events ({by_topic}); skipped "
                     f"{skipped} lines with unmapped verbs; malformed {malformed}; rejected {n_rejected}"))
    for verb, n in sorted(mapper.skipped.items(), key=lambda kv: (-kv[1], kv[0])):
        out.print(escape(f"  skipped {n} × {verb}"))
    for reason, n in mapper.malformed.most_common():
        out.print(escape(f"  malformed {n} × {reason}"))
    for reason, n in rejected.most_common():
        if reason != "malformed_line":
            out.print(escape(f"  rejected {n} × {reason}"))
    for example in examples:
        out.print(escape(f"  {example}"))
    if rejected:
        out.print(escape(f"malformed and rejected lines were published to {settings.deadletter_topic} "
                         f"with their reasons"))
    file, offset, number = tail.position
    out.print(escape(f"position saved in {pos_path}: {file} line {number}, byte {offset}"))
    if rejected and not follow:
        raise typer.Exit(1)  # like `ccmon send`: a one-shot import with bad lines fails; a stopped follower does not
