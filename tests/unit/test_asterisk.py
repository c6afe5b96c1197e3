"""The Asterisk queue_log adapter: the mapping to contract events, and the tailer's rotation and positions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agents.config import MetricsConfig
from agents.core import CallsCore
from agents.oracle import compute, replay
from ccmon.adapters.asterisk import ID_MAX, NAME_MAX, AsteriskMapper, fit
from ccmon.adapters.tail import HEAD_BYTES, LogTail
from streams.events import Event, Rejected, decode_line, event_from_dict

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "asterisk" / "queue_log"
T = 1795428000  # the sample's first line


def sample_lines() -> list[str]:
    """The realistic multi-queue sample, one string per line."""
    return SAMPLE.read_text().splitlines()


def map_all(lines: list[str], mapper: AsteriskMapper | None = None) -> list[dict]:
    """Every event the lines map to, in order."""
    mapper = mapper or AsteriskMapper()
    return [ev for line in lines for ev in mapper.map_line(line)]


def validated(events: list[dict]) -> list[Event]:
    """Each event through the shared validator; all must pass."""
    out = []
    for e in events:
        item = event_from_dict(e)
        assert not isinstance(item, Rejected), (e, item)
        out.append(item)
    return out


def brief(e: dict) -> tuple:
    """An event without its id, source and attributes: what it says."""
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in e.items()
                 if k not in ("event_id", "source", "attributes"))


# ------------------------------------------------------------------- mapping


def test_the_sample_maps_calls_to_the_contract() -> None:
    calls = [e for e in map_all(sample_lines()) if e["type"].startswith("call.")]
    got = [(e["type"], e["ts"] - T, e["call_id"], e["queue"], e.get("agent_id") or e.get("reason"),
            e["attributes"]["asterisk_event"]) for e in calls]
    assert got == [
        ("call.offered", 20, "1795428020.11", "sales", None, "ENTERQUEUE"),
        ("call.answered", 38, "1795428020.11", "sales", "PJSIP/1002", "CONNECT"),
        ("call.offered", 30, "1795428030.13", "support", None, "ENTERQUEUE"),
        ("call.answered", 40, "1795428030.13", "support", "PJSIP/1001", "CONNECT"),
        ("call.offered", 45, "1795428045.15", "sales", None, "ENTERQUEUE"),
        ("call.abandoned", 57, "1795428045.15", "sales", None, "ABANDON"),
        ("call.offered", 60, "1795428060.16", "billing", None, "ENTERQUEUE"),
        ("call.offered", 70, "1795428070.18", "support", None, "ENTERQUEUE"),
        ("call.timed_out", 95, "1795428070.18", "support", None, "EXITWITHKEY"),
        # the same caller moves on to another queue: a new leg of the same call
        ("call.offered", 96, "1795428070.18", "sales", None, "ENTERQUEUE"),
        ("call.blocked", 100, "1795428100.20", "billing", "queue_full", "FULL"),
        ("call.ended", 158, "1795428020.11", "sales", None, "COMPLETECALLER"),
        ("call.answered", 170, "1795428070.18", "sales", "PJSIP/1002", "CONNECT"),
        ("call.timed_out", 180, "1795428060.16", "billing", None, "EXITWITHTIMEOUT"),
        # the caller re-enters the queue it timed out of: a new leg id, so the worker counts a second offer
        ("call.offered", 181, "1795428060.16#2", "billing", None, "ENTERQUEUE"),
        ("call.answered", 190, "1795428060.16#2", "billing", "PJSIP/1003", "CONNECT"),
        ("call.ended", 250, "1795428060.16#2", "billing", None, "TRANSFER"),
        ("call.blocked", 270, "1795428270.22", "billing", "no_agents", "JOINUNAVAIL"),
        ("call.ended", 290, "1795428070.18", "sales", None, "COMPLETECALLER"),
        ("call.ended", 300, "1795428030.13", "support", None, "COMPLETEAGENT"),
        ("call.offered", 330, "1795428330.23", "support", None, "ENTERQUEUE"),
        ("call.answered", 345, "1795428330.23", "support", "Agent/2001", "CONNECT"),
        ("call.ended", 400, "1795428330.23", "support", None, "COMPLETECALLER"),
        ("call.offered", 420, "1795428420.25", "sales", None, "ENTERQUEUE"),
        # EXITEMPTY comes after ENTERQUEUE, where the contract forbids call.blocked: it is a timeout
        ("call.timed_out", 480, "1795428420.25", "sales", None, "EXITEMPTY"),
        ("call.blocked", 500, "1795428500.26", "sales", "no_agents", "JOINEMPTY"),
        ("call.offered", 540, "1795428540.28", "billing", None, "ENTERQUEUE"),
        ("call.answered", 545, "1795428540.28", "billing", "PJSIP/1003", "CONNECT"),
        ("call.ended", 605, "1795428540.28", "billing", None, "ATTENDEDTRANSFER"),
        ("call.offered", 610, "1795428610.31", "support", None, "ENTERQUEUE"),
    ]
    # Asterisk's holdtime is the wait in the queue, not hold during talk: call.ended never claims it
    assert all("hold_seconds" not in e for e in calls)
    assert {e["source"] for e in calls} == {"asterisk"}


def test_the_sample_maps_members_to_agent_states() -> None:
    agents = [e for e in map_all(sample_lines()) if e["type"] == "agent.state"]
    by_agent: dict[str, list[tuple]] = {}
    for e in agents:
        by_agent.setdefault(e["agent_id"], []).append(
            (round(e["ts"] - T, 3), e["state"], tuple(e["queues"]), e.get("reason")))
    assert by_agent["PJSIP/1001"] == [
        (5, "available", ("sales",), None),
        (5.001, "available", ("sales", "support"), None),  # same second: 1 ms later, so it sorts after
        (40, "on_call", ("sales", "support"), None),
        (200, "on_call", ("support",), None),  # paused in sales while talking: serves support only
        (300, "available", ("support",), None),
        (310, "away", ("sales", "support"), "Lunch"),  # paused everywhere: away, with the reason
        (510, "available", ("sales", "support"), None),  # UNPAUSEALL
    ]
    assert by_agent["PJSIP/1002"] == [
        (6, "available", ("sales",), None),
        (38, "on_call", ("sales",), None),
        (158, "available", ("sales",), None),
        (170, "on_call", ("sales",), None),
        (290, "available", ("sales",), None),
        (450, "offline", ("sales",), None),  # REMOVEMEMBER of its last queue: offline where it served
    ]
    # AGENTLOGIN names no queue: the first state waits for ADDMEMBER; AGENTLOGOFF is offline in its queues
    assert by_agent["Agent/2001"] == [
        (8, "available", ("support",), None),
        (345, "on_call", ("support",), None),
        (400, "available", ("support",), None),
        (530, "offline", ("support",), None),
    ]
    assert [s[1:] for s in by_agent["PJSIP/1003"]] == [
        ("available", ("billing",), None), ("on_call", ("billing",), None), ("available", ("billing",), None),
        ("away", ("billing",), "Training"), ("available", ("billing",), None), ("on_call", ("billing",), None),
        ("available", ("billing",), None),
    ]


def test_unmapped_verbs_and_malformed_lines_are_counted_not_fatal() -> None:
    mapper = AsteriskMapper()
    problems = []
    for n, line in enumerate(sample_lines() + ["", "   "], 1):
        mapper.map_line(line)
        if mapper.last_problem:
            problems.append((n, mapper.last_problem[0]))
    assert dict(mapper.skipped) == {"QUEUESTART": 1, "CONFIGRELOAD": 1, "RINGNOANSWER": 2, "DID": 1}
    assert dict(mapper.malformed) == {"too_few_fields": 1, "invalid_epoch": 1}
    assert problems == [(44, "too_few_fields"), (47, "invalid_epoch")]
    assert mapper.lines == 50  # blank lines are not counted
    assert mapper.events == len(map_all(sample_lines()))


@pytest.mark.parametrize("line, reason", [
    ("1795428000|1.1|sales|NONE", "too_few_fields"),
    ("nan|1.1|sales|NONE|ENTERQUEUE", "invalid_epoch"),
    ("-5|1.1|sales|NONE|ENTERQUEUE", "invalid_epoch"),
    ("1795428000|NONE|sales|NONE|ENTERQUEUE||x|1", "missing_call_id"),
    ("1795428000|1.1|NONE|NONE|ABANDON|1|1|3", "missing_queue"),
    ("1795428000|1.1|sales|NONE|CONNECT|3|1.2|1", "missing_agent"),
    ("1795428000|MANAGER|NONE|PJSIP/1|ADDMEMBER|", "missing_queue"),
    ("1795428000|NONE|sales|NONE|PAUSE|x", "missing_agent"),
])
def test_malformed_lines_say_why(line: str, reason: str) -> None:
    mapper = AsteriskMapper()
    assert mapper.map_line(line) == []
    assert mapper.last_problem is not None and mapper.last_problem[0] == reason
    assert mapper.map_line("1795428000|1.1|sales|NONE|ENTERQUEUE||x|1") and mapper.last_problem is None


def test_every_event_passes_the_shared_validator_and_the_cores_rules() -> None:
    events = validated(map_all(sample_lines()))
    cfg = MetricsConfig()
    _, _, outcome = replay(events, cfg, partitions=4)
    # no invalid transition (e.g. call.blocked after call.offered), no duplicate id, nothing late
    assert (outcome.invalid, outcome.duplicates, outcome.late) == (0, 0, 0)
    assert len(outcome.applied) == len(events)


def test_blocked_after_offered_would_be_invalid_which_is_why_exitempty_times_out() -> None:
    cfg = MetricsConfig()
    offered = event_from_dict({"event_id": "1", "type": "call.offered", "ts": T, "call_id": "c", "queue": "q"})
    blocked = event_from_dict({"event_id": "2", "type": "call.blocked", "ts": T + 9, "call_id": "c", "queue": "q",
                               "reason": "no_agents"})
    state, problem, _ = CallsCore.apply(None, offered, cfg)  # type: ignore[arg-type]
    assert problem == ""
    assert CallsCore.apply(state, blocked, cfg)[1] == "invalid_transition"  # type: ignore[arg-type]
    (exit_empty,) = AsteriskMapper().map_line(f"{T}|c|q|NONE|EXITEMPTY|1|1|9")
    assert exit_empty["type"] == "call.timed_out"


def test_the_oracle_over_the_sample_counts_what_happened() -> None:
    events = validated(map_all(sample_lines()))
    snap = compute(events, MetricsConfig(), (T + 700) * 1000)
    queues = snap["queues"]
    counts = {q: {k: queues[q]["1h"][k] for k in ("offered", "answered", "abandoned", "timed_out", "blocked",
                                                 "handled")} for q in ("sales", "support", "billing")}
    assert counts == {
        "sales": {"offered": 4, "answered": 2, "abandoned": 1, "timed_out": 1, "blocked": 1, "handled": 2},
        "support": {"offered": 4, "answered": 2, "abandoned": 0, "timed_out": 1, "blocked": 0, "handled": 2},
        "billing": {"offered": 3, "answered": 2, "abandoned": 0, "timed_out": 1, "blocked": 2, "handled": 2},
    }
    assert queues["support"]["now"]["calls_waiting"] == 1  # 1795428610.31 is still in the queue
    # sales: PJSIP/1001 available, PJSIP/1002 removed (offline, not staffed); support: Agent/2001 logged off
    assert [(queues[q]["now"]["agents_available"], queues[q]["now"]["agents_staffed"]) for q in
            ("sales", "support", "billing")] == [(1, 1), (1, 1), (1, 1)]


def test_event_ids_are_content_based_stable_and_unique() -> None:
    first, again = map_all(sample_lines()), map_all(sample_lines())
    ids = [e["event_id"] for e in first]
    assert ids == [e["event_id"] for e in again]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("ast:") for i in ids)


def test_the_mappers_state_survives_a_restart_at_every_line() -> None:
    lines = sample_lines()
    whole = map_all(lines)
    for cut in range(len(lines) + 1):
        first = AsteriskMapper()
        head = map_all(lines[:cut], first)
        restored = AsteriskMapper.from_state(json.loads(json.dumps(first.state())))
        assert head + map_all(lines[cut:], restored) == whole, cut


def test_a_second_connect_in_the_same_second_still_orders_after_the_first() -> None:
    mapper = AsteriskMapper()
    evs = map_all([f"{T}|MANAGER|q|PJSIP/9|ADDMEMBER|", f"{T}|NONE|q|PJSIP/9|PAUSE|Break",
                   f"{T}|NONE|q|PJSIP/9|UNPAUSE|"], mapper)
    assert [(e["state"], round(e["ts"] - T, 3)) for e in evs] == [("available", 0), ("away", 0.001),
                                                                  ("available", 0.002)]


def test_overlong_names_are_shortened_stably() -> None:
    long_agent, long_queue = "Local/" + "9" * 400 + "@from-queue", "q" * 300
    (offered,) = AsteriskMapper().map_line(f"{T}|1.1|{long_queue}|NONE|ENTERQUEUE||x|1")
    assert len(offered["queue"]) == NAME_MAX and offered["queue"] == fit(long_queue, NAME_MAX)
    evs = AsteriskMapper().map_line(f"{T}|MANAGER|sales|{long_agent}|ADDMEMBER|")
    assert len(evs[0]["agent_id"]) == ID_MAX and evs[0]["agent_id"] == fit(long_agent, ID_MAX)
    assert fit(long_agent, ID_MAX) != fit(long_agent + "x", ID_MAX)
    assert fit(" PJSIP/1001 ", ID_MAX) == "PJSIP/1001"
    validated(evs + [offered])


def test_finished_calls_are_forgotten_after_an_hour_of_log_time() -> None:
    mapper = AsteriskMapper()
    map_all([f"{T}|1.1|q|NONE|ENTERQUEUE||x|1", f"{T + 5}|1.1|q|NONE|ABANDON|1|1|5",
             f"{T + 6}|2.2|q|NONE|ENTERQUEUE||x|1"], mapper)
    assert set(mapper.calls) == {"1.1", "2.2"}
    mapper.map_line(f"{T + 3700}|3.3|q|NONE|ENTERQUEUE||x|1")
    assert set(mapper.calls) == {"2.2", "3.3"}  # 2.2 is still waiting: kept until 4 hours
    mapper.map_line(f"{T + 4 * 3600 + 100}|4.4|q|NONE|ENTERQUEUE||x|1")
    assert set(mapper.calls) == {"3.3", "4.4"}


# -------------------------------------------------------------------- tailer


def append(path: Path, *lines: str, end: str = "\n") -> None:
    """Append lines the way Asterisk does (O_APPEND)."""
    with open(path, "a") as fh:
        fh.write("".join(line + end for line in lines))


def texts(tail: LogTail, final: bool = False) -> list[str]:
    """Everything the tail has now (across a rotation), as strings."""
    out: list[str] = []
    while True:
        batch = tail.read(final)
        if not batch:
            return out
        out += [line.raw.decode() for line in batch]


def test_only_complete_lines_are_read_until_the_newline_comes(tmp_path: Path) -> None:
    log = tmp_path / "queue_log"
    append(log, "a", "b")
    with open(log, "a") as fh:
        fh.write("c-part")
    tail = LogTail(log, tmp_path / "pos")
    assert texts(tail) == ["a", "b"]
    append(log, "-rest")
    assert texts(tail) == ["c-part-rest"]
    assert tail.position[1:] == (log.stat().st_size, 3)
    with open(log, "a") as fh:
        fh.write("d")
    assert texts(tail, final=True) == ["d"]  # a one-shot read takes the unterminated last line


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    log = tmp_path / "queue_log"
    append(log, "a", "", "b\r")
    assert [(line.number, line.raw) for line in LogTail(log, tmp_path / "pos").read()] == [
        (1, b"a"), (2, b""), (3, b"b")]


def test_rename_rotation_finishes_the_old_file_then_reads_the_new_one(tmp_path: Path) -> None:
    log, rotated = tmp_path / "queue_log", tmp_path / "queue_log.1"
    append(log, "old-1", "old-2")
    tail = LogTail(log, tmp_path / "pos")
    assert texts(tail) == ["old-1", "old-2"]
    append(log, "old-3")
    log.rename(rotated)
    append(rotated, "old-4-no-newline", end="")  # Asterisk writes on until it reopens its log
    # not recreated yet: the old file is still the one being written, so its unterminated line waits
    assert texts(tail) == ["old-3"]
    append(log, "new-1", "new-2")
    batch = tail.read()  # the old file is final now: its last line counts without a newline
    assert [(line.file, line.number, line.raw) for line in batch] == [(str(rotated), 4, b"old-4-no-newline")]
    assert texts(tail) == ["new-1", "new-2"]
    assert tail.position == (str(log), log.stat().st_size, 2)
    assert any("rotated" in n for n in tail.notes)


def test_rename_rotation_with_unread_lines_in_both_files(tmp_path: Path) -> None:
    log = tmp_path / "queue_log"
    append(log, "old-1")
    tail = LogTail(log, tmp_path / "pos")
    assert texts(tail) == ["old-1"]
    append(log, "old-2", "old-3")
    log.rename(tmp_path / "queue_log.1")
    append(log, "new-1")
    first = tail.read()
    assert [(line.file, line.number, line.raw) for line in first] == [
        (str(tmp_path / "queue_log.1"), 2, b"old-2"), (str(tmp_path / "queue_log.1"), 3, b"old-3")]
    assert [(line.file, line.number, line.raw) for line in tail.read()] == [(str(log), 1, b"new-1")]


def test_copytruncate_is_read_again_from_the_start(tmp_path: Path) -> None:
    log = tmp_path / "queue_log"
    append(log, "line-1", "line-2", "line-3")
    tail = LogTail(log, tmp_path / "pos")
    assert texts(tail) == ["line-1", "line-2", "line-3"]
    os.truncate(log, 0)  # logrotate's copytruncate
    append(log, "after-1")
    assert texts(tail) == ["after-1"]
    assert tail.position[1:] == (log.stat().st_size, 1)


def test_copytruncate_refilled_past_the_position_is_recognised_by_its_start(tmp_path: Path) -> None:
    log = tmp_path / "queue_log"
    append(log, "first-a", "first-b")
    tail = LogTail(log, tmp_path / "pos")
    assert texts(tail) == ["first-a", "first-b"]
    os.truncate(log, 0)
    append(log, "second-1 is longer", "second-2", "second-3")  # bigger than before: size alone can't tell
    assert texts(tail) == ["second-1 is longer", "second-2", "second-3"]


def test_a_restart_continues_after_the_last_checkpoint_no_skip_no_repeat(tmp_path: Path) -> None:
    log, pos = tmp_path / "queue_log", tmp_path / "state" / "asterisk-queue_log.pos"
    lines = sample_lines()
    append(log, *lines[:20])
    whole = map_all(lines)
    sent: list[dict] = []

    def run() -> None:
        tail = LogTail(log, pos)
        mapper = AsteriskMapper.from_state(tail.saved.get("mapper"))
        for batch in iter(tail.read, []):
            sent.extend(ev for line in batch for ev in mapper.map_line(line.raw.decode()))
            tail.checkpoint({"mapper": mapper.state()})  # "acknowledged": save
        tail.close()

    run()
    append(log, *lines[20:35])  # written while stopped
    run()
    # a batch read but never acknowledged (crash before the checkpoint) is read again after a restart
    append(log, *lines[35:])
    crashed = LogTail(log, pos)
    assert crashed.read()
    crashed.close()
    run()
    assert sent == whole
    saved = json.loads(pos.read_text())
    assert saved["offset"] == log.stat().st_size and saved["line"] == len(lines)
    assert saved["inode"] == log.stat().st_ino and saved["path"] == str(log.resolve())
    assert [p.name for p in pos.parent.iterdir()] == [pos.name]  # the temp file was renamed into place


def test_a_restart_after_a_rename_rotation_finishes_the_rotated_file_first(tmp_path: Path) -> None:
    log, pos = tmp_path / "queue_log", tmp_path / "pos"
    append(log, "a1", "a2")
    tail = LogTail(log, pos)
    assert texts(tail) == ["a1", "a2"]
    tail.checkpoint({"k": 1})
    tail.close()
    append(log, "a3")  # written after the checkpoint, before the rotation, while we were stopped
    log.rename(tmp_path / "queue_log.1")
    append(log, "b1")
    again = LogTail(log, pos)
    assert again.saved == {"k": 1}
    assert texts(again) == ["a3", "b1"]
    assert any("rotated while stopped" in n for n in again.notes)


def test_a_restart_after_copytruncate_reads_the_file_from_its_start(tmp_path: Path) -> None:
    log, pos = tmp_path / "queue_log", tmp_path / "pos"
    append(log, "x" * (HEAD_BYTES + 10), "a2")
    tail = LogTail(log, pos)
    assert len(texts(tail)) == 2
    tail.checkpoint()
    tail.close()
    os.truncate(log, 0)
    append(log, "y" * (HEAD_BYTES + 50), "b2", "b3")  # longer than before
    assert texts(LogTail(log, pos)) == ["y" * (HEAD_BYTES + 50), "b2", "b3"]


def test_a_missing_rotated_file_is_reported_and_the_new_one_read(tmp_path: Path) -> None:
    log, pos = tmp_path / "queue_log", tmp_path / "pos"
    append(log, "a1")
    tail = LogTail(log, pos)
    texts(tail)
    tail.checkpoint()
    tail.close()
    (tmp_path / "archive").mkdir()
    log.rename(tmp_path / "archive" / "queue_log.1")  # rotated out of the directory (its inode stays in use)
    append(log, "b1")
    again = LogTail(log, pos)
    assert texts(again) == ["b1"]
    assert any("lost" in n for n in again.notes), again.notes


def test_a_deleted_and_recreated_file_with_a_reused_inode_is_read_from_its_start(tmp_path: Path) -> None:
    log, pos = tmp_path / "queue_log", tmp_path / "pos"
    append(log, "a1")
    tail = LogTail(log, pos)
    texts(tail)
    tail.checkpoint()
    tail.close()
    log.unlink()
    append(log, "b1")  # the filesystem may hand out the same inode number: the start fingerprint tells
    assert texts(LogTail(log, pos)) == ["b1"]


def test_from_end_skips_history_only_without_a_position(tmp_path: Path) -> None:
    log, pos = tmp_path / "queue_log", tmp_path / "pos"
    append(log, "old")
    tail = LogTail(log, pos, from_end=True)
    assert texts(tail) == []
    append(log, "new")
    assert texts(tail) == ["new"]


def test_a_position_of_another_file_is_refused(tmp_path: Path) -> None:
    a, b, pos = tmp_path / "a.log", tmp_path / "b.log", tmp_path / "pos"
    append(a, "1")
    append(b, "1")
    tail = LogTail(a, pos)
    texts(tail)
    tail.checkpoint()
    with pytest.raises(ValueError, match="belongs to"):
        LogTail(b, pos)


def test_the_follow_cli_is_registered_with_its_options() -> None:
    from typer.testing import CliRunner

    from ccmon.ingest_cli import default_position, ingest_app

    res = CliRunner().invoke(ingest_app, ["asterisk", "--help"])
    assert res.exit_code == 0, res.output
    for option in ("--follow", "--position", "--poll", "--from-end"):
        assert option in res.output
    assert default_position(Path("/data"), Path("/var/log/asterisk/queue_log")) == Path(
        "/data/asterisk-queue_log.pos")


def test_decode_line_accepts_the_cli_encoding() -> None:
    import msgspec

    for e in map_all(sample_lines()):
        assert isinstance(decode_line(msgspec.json.encode(e)), Event)
