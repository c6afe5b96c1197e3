"""``ccmon ingest asterisk --follow`` against the real stack: a queue_log written live, rotated and truncated,
a follower restarted in between, and a worker whose snapshot equals the oracle over the mapped events."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from ccmon.adapters.asterisk import AsteriskMapper
from ccmon.services import python_cmd
from tests.integration.conftest import Env, wait_for
from tests.integration.test_bad_input import read_dead_letters
from tests.integration.test_end_to_end import snapshot_and_oracle

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "asterisk" / "queue_log"
_NOT_A_CALL = {"NONE", "MANAGER", "REALTIME", ""}


def recent_log(copies: int, now: float) -> list[str]:
    """The sample queue_log repeated ``copies`` times (new uniqueids each time), ending a minute before now."""
    sample = SAMPLE.read_text().splitlines()
    first = int(sample[0].split("|", 1)[0])
    span = 660  # the sample covers 612 s
    start = int(now) - 60 - copies * span
    out = []
    for k in range(copies):
        for line in sample:
            parts = line.split("|")
            if parts[0].isdigit():
                parts[0] = str(int(parts[0]) - first + start + k * span)
            if len(parts) > 1 and parts[1] not in _NOT_A_CALL and len(parts) >= 5:
                parts[1] = f"{k}-{parts[1]}"
            out.append("|".join(parts))
    return out


def write(path: Path, lines: list[str]) -> None:
    """Append lines one by one, as Asterisk does (one write per line)."""
    for line in lines:
        with open(path, "a") as fh:
            fh.write(line + "\n")


def start_follower(env: Env, log: Path, name: str) -> tuple[subprocess.Popen, Path]:
    """``ccmon ingest asterisk LOG --follow`` as a real process, its output in a file."""
    out = env.tmp / f"{name}.out"
    proc = subprocess.Popen(python_cmd("ingest", "asterisk", str(log), "--follow", "--poll", "0.1"),
                            env=env.environ(), stdout=open(out, "wb"), stderr=subprocess.STDOUT)
    return proc, out


def caught_up(pos: Path, proc: subprocess.Popen, out: Path, file: Path, lines: int) -> None:
    """Wait until the follower's saved position is the end of ``file`` (``lines`` lines)."""
    def done() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the follower exited with {proc.returncode}:\n{out.read_text()}")
        try:
            saved = json.loads(pos.read_text())
        except (FileNotFoundError, ValueError):
            return False
        return saved["file"] == str(file) and saved["line"] == lines and saved["offset"] == file.stat().st_size

    wait_for(done, 60, f"the follower to save its position at the end of {file} ({lines} lines)")


def stop_follower(proc: subprocess.Popen, out: Path) -> str:
    """SIGTERM, as a service manager would; a follower stops cleanly with status 0 and prints its summary."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, out.read_text()
    return out.read_text()


def summary_counts(text: str) -> tuple[int, Counter[str], int]:
    """(events sent, skipped lines by verb, malformed lines) from a follower's summary."""
    sent = int(re.search(r"sent (\d+) events", text).group(1))  # type: ignore[union-attr]
    skipped = Counter({verb: int(n) for n, verb in re.findall(r"skipped (\d+) × (\S+)", text)})
    malformed = int(re.search(r"; malformed (\d+);", text).group(1))  # type: ignore[union-attr]
    return sent, skipped, malformed


def test_a_followed_queue_log_through_rotations_and_a_restart_equals_the_oracle(env: Env) -> None:
    lines = recent_log(6, time.time())
    mapper = AsteriskMapper()
    events = [e for line in lines for e in mapper.map_line(line)]
    assert len(events) > 300 and sum(mapper.malformed.values()) == 12
    env.start_worker()
    logs = env.tmp / "asterisk"
    logs.mkdir()
    log = logs / "queue_log"
    pos = env.tmp / "data" / "asterisk-queue_log.pos"  # the default: CCMON_DATA_DIR/asterisk-<name>.pos

    # Run 1: the follower starts before the file exists; lines arrive one by one; then a rename rotation
    # right behind a burst, so the old file still has unread lines when the new one appears.
    first, first_out = start_follower(env, log, "follow-1")
    wait_for(lambda: "following" in first_out.read_text(), 60, "the follower to start")
    write(log, lines[:80])
    caught_up(pos, first, first_out, log, 80)  # it has the file open: what follows is a rotation it sees
    write(log, lines[80:100])
    log.rename(logs / "queue_log.1")
    write(log, lines[100:150])
    caught_up(pos, first, first_out, log, 50)
    text1 = stop_follower(first, first_out)

    # While stopped: more lines, then logrotate shifts the files (queue_log -> queue_log.1 -> queue_log.2)
    # and Asterisk starts a new file. The restart finishes the rotated file from its position first.
    write(log, lines[150:170])
    (logs / "queue_log.1").rename(logs / "queue_log.2")
    log.rename(logs / "queue_log.1")
    write(log, lines[170:200])
    second, second_out = start_follower(env, log, "follow-2")
    caught_up(pos, second, second_out, log, 30)

    # copytruncate: the file is copied away and truncated in place; Asterisk keeps appending to it.
    shutil.copyfile(log, logs / "queue_log.0")
    os.truncate(log, 0)
    write(log, lines[200:])
    caught_up(pos, second, second_out, log, len(lines) - 200)
    text2 = stop_follower(second, second_out)

    env.wait_consumed(len(events), timeout=120)
    snap, expected = snapshot_and_oracle(env, events)
    assert snap["queues"].keys() == {"sales", "support", "billing"}
    assert snap == expected

    # Every line was mapped exactly once across the two runs: the summaries add up.
    sent1, skipped1, malformed1 = summary_counts(text1)
    sent2, skipped2, malformed2 = summary_counts(text2)
    assert sent1 + sent2 == len(events), (text1, text2)
    assert malformed1 + malformed2 == 12
    assert skipped1 + skipped2 == mapper.skipped == Counter(
        {"RINGNOANSWER": 12, "QUEUESTART": 6, "CONFIGRELOAD": 6, "DID": 6})
    assert "rotated" in text1 and "rotated while stopped" in text2 and "truncated" in text2

    # The malformed lines went to the dead-letter topic with their reason and line number.
    letters = read_dead_letters(env, 12)
    assert {(d.reason, d.stage) for d in letters} == {("malformed_line", "asterisk")}
    assert Counter(d.detail.split(":", 1)[0] for d in letters) == {"too_few_fields": 6, "invalid_epoch": 6}
    assert all(d.line and d.original in lines for d in letters)  # the queue_log line itself, and where it was


def test_a_one_shot_import_reports_and_exits_1_on_bad_lines(env: Env) -> None:
    lines = recent_log(1, time.time())
    log = env.tmp / "queue_log"
    log.write_text("\n".join(lines) + "\n")
    mapper = AsteriskMapper()
    events = [e for line in lines for e in mapper.map_line(line)]
    env.start_worker()
    res = env.ccmon("ingest", "asterisk", str(log))
    text = res.stdout.decode()
    assert res.returncode == 1, text + res.stderr.decode()  # like `ccmon send`: bad lines fail a one-shot run
    assert f"sent {len(events)} events" in text and "malformed 2" in text
    assert "line 44: malformed_line: too_few_fields" in text and "line 47: malformed_line: invalid_epoch" in text
    assert "skipped 2 × RINGNOANSWER" in text and "skipped 1 × CONFIGRELOAD" in text
    env.wait_consumed(len(events))
    # Run again: the position says everything was read, so nothing is sent twice.
    again = env.ccmon("ingest", "asterisk", str(log))
    assert again.returncode == 0 and "sent 0 events" in again.stdout.decode(), again.stdout.decode()
    snap, expected = snapshot_and_oracle(env, events)
    assert snap == expected


def test_a_missing_file_is_explained(env: Env) -> None:
    res = env.ccmon("ingest", "asterisk", str(env.tmp / "nope" / "queue_log"))
    assert res.returncode == 2 and "does not exist" in res.stderr.decode()
