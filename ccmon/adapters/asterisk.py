"""Asterisk ``queue_log`` lines -> contract v1 event dicts (pure: no I/O).

A queue_log line is ``epoch|uniqueid|queuename|agent|event|data1|data2|...``
(docs.asterisk.org, "Queue Logs"). ``AsteriskMapper.map_line`` turns one line
into zero or more contract event dicts; the caller validates them with
``streams.events.decode_line`` like every other path into ccmon. The mapping
and its reasons are documented in docs/ingest.md ("Asterisk queue_log").

The mapper keeps a little state between lines, all of it JSON-serialisable
(``state()`` / ``from_state()``) so a follower that restarts continues exactly
where it stopped:

- per call leg ``(uniqueid, queue)``: the call id used (a caller that re-enters
  the same queue gets a new leg id), whether the leg is finished and its agent;
- per agent: its queues (and whether it is paused in each), its pause reason,
  the calls it is on, and the last state it was given, so an ``agent.state`` is
  emitted only when what the contract can express changes.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

SOURCE = "asterisk"
STATE_VERSION = 1

# Ids and queue names the contract accepts (streams.events.Id / Name).
ID_MAX = 256
NAME_MAX = 128

# Placeholders Asterisk writes where a line has no call, queue or member.
_NO_VALUE = frozenset({"", "NONE", "REALTIME", "MANAGER"})

# Refusals logged *instead of* ENTERQUEUE -> call.blocked with the contract's reason.
BLOCKED = {"FULL": "queue_full", "JOINEMPTY": "no_agents", "JOINUNAVAIL": "no_agents"}
# Leaving the queue without an agent: the caller hung up, or Asterisk took the call out.
ABANDONED = frozenset({"ABANDON"})
TIMED_OUT = frozenset({"EXITWITHTIMEOUT", "EXITWITHKEY", "EXITEMPTY"})
# End of talk: either side hung up, or the agent transferred the caller (Asterisk 12+ logs
# BLINDTRANSFER / ATTENDEDTRANSFER where older versions log TRANSFER).
ENDED = frozenset({"COMPLETECALLER", "COMPLETEAGENT", "TRANSFER", "BLINDTRANSFER", "ATTENDEDTRANSFER"})
PAUSES = frozenset({"PAUSE", "PAUSEALL"})
UNPAUSES = frozenset({"UNPAUSE", "UNPAUSEALL"})

#: Every verb the mapper acts on; any other verb is skipped and counted in ``skipped``.
MAPPED_VERBS = frozenset(
    {"ENTERQUEUE", "CONNECT", "ADDMEMBER", "REMOVEMEMBER", "AGENTLOGIN", "AGENTLOGOFF"}
    | BLOCKED.keys() | ABANDONED | TIMED_OUT | ENDED | PAUSES | UNPAUSES
)

# How long state is kept, in queue_log seconds: a leg that never finished (a lost exit line)
# as long as the worker keeps an unfinished call (call_max_age, 4h by default); a finished
# call long enough to recognise a caller re-entering the same queue; an agent with no queue.
OPEN_CALL_SECONDS = 4 * 3600
FINISHED_CALL_SECONDS = 3600
IDLE_AGENT_SECONDS = 24 * 3600
SWEEP_EVERY_SECONDS = 60
# Far past any real epoch in seconds; a larger first field is not one (and would overflow the ms arithmetic).
# Plausible-looking epochs outside 2000-2100 still map, and the contract validator refuses them (invalid_ts).
MAX_EPOCH = 1e15


def fit(value: str, limit: int) -> str:
    """``value`` stripped, or when longer than ``limit`` a stable shortened form (prefix ~ hash)."""
    value = value.strip()
    if len(value) <= limit:
        return value
    digest = hashlib.blake2b(value.encode(), digest_size=8).hexdigest()
    return f"{value[:limit - len(digest) - 1]}~{digest}"


@dataclass
class _Leg:
    """One leg ``(uniqueid, queue)``: the call id used, its attempt number, finished or not, its agent."""

    call_id: str
    attempt: int = 1
    done: bool = False
    agent: Optional[str] = None


@dataclass
class _Call:
    """A caller's channel (``uniqueid``): its legs by queue and the time of its latest line."""

    seen: float
    legs: dict[str, _Leg] = field(default_factory=dict)


@dataclass
class _Agent:
    """A queue member as far as the log tells: queues (paused or not), pause reason, calls, last emitted state."""

    seen: float
    queues: dict[str, bool] = field(default_factory=dict)  # queue -> paused there
    logged_in: bool = True
    reason: Optional[str] = None
    calls: dict[str, str] = field(default_factory=dict)  # call id -> queue, between CONNECT and its end
    last: Optional[tuple[str, tuple[str, ...], Optional[str]]] = None  # (state, queues, reason) last emitted
    last_ms: int = 0  # ts of the last agent.state emitted, so the next one sorts after it


class AsteriskMapper:
    """Maps queue_log lines to contract event dicts; counts skipped verbs and malformed lines."""

    def __init__(self) -> None:
        self.calls: dict[str, _Call] = {}
        self.agents: dict[str, _Agent] = {}
        self.swept = 0.0
        # Counters of this run (not part of ``state()``).
        self.lines = 0
        self.events = 0
        self.skipped: Counter[str] = Counter()  # verb -> lines
        self.malformed: Counter[str] = Counter()  # reason -> lines
        #: (reason, detail) when the last line given to ``map_line`` was malformed, else None.
        self.last_problem: Optional[tuple[str, str]] = None
        self._line_id = ""
        self._n = 0

    # ------------------------------------------------------------------ lines

    def map_line(self, line: str) -> list[dict[str, Any]]:
        """The contract events (as dicts) one queue_log line means; [] for blank, skipped or malformed lines."""
        self.last_problem = None
        text = line.rstrip("\r\n")
        if not text.strip():
            return []
        self.lines += 1
        parts = text.split("|")
        if len(parts) < 5:
            return self._malformed("too_few_fields", f"expected epoch|uniqueid|queue|agent|event[|data...], "
                                                     f"found {len(parts)} field(s)")
        epoch, uniqueid, queue, agent, verb, *data = parts
        verb = verb.strip()
        try:
            ts = float(epoch)
        except ValueError:
            return self._malformed("invalid_epoch", f"the first field {epoch[:40]!r} is not epoch seconds")
        if not 0 < ts < MAX_EPOCH:  # also NaN and infinities
            return self._malformed("invalid_epoch", f"the first field {epoch[:40]!r} is not epoch seconds")
        if verb not in MAPPED_VERBS:
            self.skipped[verb or "(empty)"] += 1
            return []
        # Content-based ids: the same line always yields the same ids, so re-reading never double counts.
        self._line_id = "ast:" + hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=10).hexdigest()
        self._n = 0
        if ts - self.swept >= SWEEP_EVERY_SECONDS:
            self._sweep(ts)
        queue_name = None if queue.strip() in _NO_VALUE else fit(queue, NAME_MAX)
        member = None if agent.strip() in _NO_VALUE else fit(agent, ID_MAX)
        uid = None if uniqueid.strip() in _NO_VALUE else fit(uniqueid, ID_MAX - 8)  # room for a "#n" attempt
        out = self._call_line(ts, uid, queue_name, member, verb) if verb not in (
            {"ADDMEMBER", "REMOVEMEMBER", "AGENTLOGIN", "AGENTLOGOFF"} | PAUSES | UNPAUSES
        ) else self._agent_line(ts, queue_name, member, verb, data)
        self.events += len(out)
        return out

    def _malformed(self, reason: str, detail: str) -> list[dict[str, Any]]:
        self.malformed[reason] += 1
        self.last_problem = (reason, detail)
        return []

    def _id(self) -> str:
        self._n += 1
        return f"{self._line_id}:{self._n}"

    # ------------------------------------------------------------------ calls

    def _call_line(self, ts: float, uid: Optional[str], queue: Optional[str], member: Optional[str],
                   verb: str) -> list[dict[str, Any]]:
        if uid is None:
            return self._malformed("missing_call_id", f"{verb} needs the caller's uniqueid in the second field")
        if queue is None:
            return self._malformed("missing_queue", f"{verb} needs a queue name in the third field")
        if verb == "CONNECT" and member is None:
            return self._malformed("missing_agent", "CONNECT needs the member in the fourth field")
        call = self.calls.get(uid)
        if call is None:
            call = self.calls[uid] = _Call(seen=ts)
        call.seen = max(call.seen, ts)
        if verb == "ENTERQUEUE" or verb in BLOCKED:
            leg = self._new_leg(call, uid, queue)
            if verb == "ENTERQUEUE":
                return [self._call_event("call.offered", ts, leg.call_id, queue, verb, channel="voice")]
            leg.done = True
            return [self._call_event("call.blocked", ts, leg.call_id, queue, verb, reason=BLOCKED[verb])]
        leg = call.legs.get(queue)
        if leg is None:  # its ENTERQUEUE came before this file (or position) began
            leg = call.legs[queue] = _Leg(call_id=uid)
        if verb == "CONNECT":
            assert member is not None
            leg.agent = member
            out = [self._call_event("call.answered", ts, leg.call_id, queue, verb, agent_id=member)]
            agent = self._agent(member, ts)
            agent.logged_in = True
            agent.queues.setdefault(queue, False)
            agent.calls[leg.call_id] = queue
            return out + self._agent_state(agent, member, ts)
        leg.done = True
        if verb in ABANDONED:
            return [self._call_event("call.abandoned", ts, leg.call_id, queue, verb)]
        if verb in TIMED_OUT:
            return [self._call_event("call.timed_out", ts, leg.call_id, queue, verb)]
        # ENDED. Asterisk's holdtime is the caller's wait in the queue, not hold during the call,
        # so call.ended carries no hold_seconds.
        out = [self._call_event("call.ended", ts, leg.call_id, queue, verb)]
        who = leg.agent or member
        if who is not None and who in self.agents:
            agent = self._agent(who, ts)
            if agent.calls.pop(leg.call_id, None) is not None:
                out += self._agent_state(agent, who, ts)
        return out

    @staticmethod
    def _new_leg(call: _Call, uid: str, queue: str) -> _Leg:
        """A new leg; a caller back in a queue it already was in gets a new id (the old leg is closed)."""
        prev = call.legs.get(queue)
        attempt = prev.attempt + 1 if prev is not None else 1
        leg = call.legs[queue] = _Leg(call_id=uid if attempt == 1 else f"{uid}#{attempt}", attempt=attempt)
        return leg

    def _call_event(self, type_: str, ts: float, call_id: str, queue: str, verb: str, **fields: Any) -> dict[str, Any]:
        return {"event_id": self._id(), "type": type_, "ts": _ts(ts), "source": SOURCE, "call_id": call_id,
                "queue": queue, **fields, "attributes": {"asterisk_event": verb}}

    # ----------------------------------------------------------------- agents

    def _agent_line(self, ts: float, queue: Optional[str], member: Optional[str], verb: str,
                    data: list[str]) -> list[dict[str, Any]]:
        if member is None:
            return self._malformed("missing_agent", f"{verb} needs the member in the fourth field")
        if queue is None and verb in ("ADDMEMBER", "REMOVEMEMBER"):
            return self._malformed("missing_queue", f"{verb} needs a queue name in the third field")
        agent = self._agent(member, ts)
        if verb == "ADDMEMBER":
            agent.queues[queue] = False  # type: ignore[index]
            agent.logged_in = True
        elif verb == "REMOVEMEMBER":
            agent.queues.pop(queue, None)  # type: ignore[arg-type]
        elif verb == "AGENTLOGIN":
            agent.logged_in = True
            if queue is not None:
                agent.queues.setdefault(queue, False)
        elif verb == "AGENTLOGOFF":
            agent.logged_in = False
            agent.calls.clear()
        else:
            paused = verb in PAUSES
            # A queue line pauses that queue; PAUSEALL (or a line with no queue) every queue of the member.
            targets = [queue] if queue is not None and verb in ("PAUSE", "UNPAUSE") else list(agent.queues)
            for q in targets:
                agent.queues[q] = paused
            if paused:
                agent.reason = (data[0].strip() if data else "")[:128] or None
        return self._agent_state(agent, member, ts)

    def _agent(self, member: str, ts: float) -> _Agent:
        agent = self.agents.get(member)
        if agent is None:
            agent = self.agents[member] = _Agent(seen=ts)
        agent.seen = max(agent.seen, ts)
        return agent

    @staticmethod
    def derived(agent: _Agent) -> tuple[str, tuple[str, ...], Optional[str]]:
        """The contract state an agent is in: (state, queues it serves, reason)."""
        serving = tuple(sorted(q for q, paused in agent.queues.items() if not paused))
        if agent.calls:
            return "on_call", tuple(sorted(set(serving) | set(agent.calls.values()))), None
        if not agent.logged_in or not agent.queues:
            # Shown as offline where it last served, so the queue's offline gauge counts it.
            queues = tuple(sorted(agent.queues)) or (agent.last[1] if agent.last else ())
            return "offline", queues, None
        if not serving:
            return "away", tuple(sorted(agent.queues)), agent.reason
        return "available", serving, None

    def _agent_state(self, agent: _Agent, member: str, ts: float) -> list[dict[str, Any]]:
        now = self.derived(agent)
        if now == agent.last or not now[1]:
            # Unchanged, or no queue known yet (an AGENTLOGIN before any queue line): a state that
            # names no queue moves no gauge, so it waits for the first queue line about the agent.
            return []
        agent.last = now
        # The core orders an agent's changes by (ts, event_id); with whole-second epochs two changes in
        # one second would sort by hash, so each change is put at least 1 ms after the previous one.
        ms = max(round(ts * 1000), agent.last_ms + 1)
        agent.last_ms = ms
        state, queues, reason = now
        event: dict[str, Any] = {"event_id": self._id(), "type": "agent.state", "ts": ms / 1000, "source": SOURCE,
                                 "agent_id": member, "state": state, "queues": list(queues)}
        if reason is not None:
            event["reason"] = reason
        return [event]

    # ------------------------------------------------------------------ state

    def _sweep(self, ts: float) -> None:
        """Forget finished calls, calls whose end never came, and idle agents with no queue."""
        self.swept = ts
        for uid, call in list(self.calls.items()):
            done = all(leg.done for leg in call.legs.values())
            if call.seen < ts - (FINISHED_CALL_SECONDS if done else OPEN_CALL_SECONDS):
                del self.calls[uid]
                for leg in call.legs.values():
                    if leg.agent is not None and leg.agent in self.agents:
                        self.agents[leg.agent].calls.pop(leg.call_id, None)
        for name, agent in list(self.agents.items()):
            if not agent.queues and not agent.calls and agent.seen < ts - IDLE_AGENT_SECONDS:
                del self.agents[name]

    def state(self) -> dict[str, Any]:
        """Everything needed to continue mapping after a restart, as plain JSON data."""
        return {
            "version": STATE_VERSION,
            "swept": self.swept,
            "calls": {uid: {"seen": c.seen, "legs": {q: [leg.call_id, leg.attempt, leg.done, leg.agent]
                                                      for q, leg in c.legs.items()}}
                      for uid, c in self.calls.items()},
            "agents": {name: {"seen": a.seen, "queues": a.queues, "logged_in": a.logged_in, "reason": a.reason,
                              "calls": a.calls, "last": None if a.last is None else [a.last[0], list(a.last[1]),
                                                                                       a.last[2]],
                              "last_ms": a.last_ms}
                       for name, a in self.agents.items()},
        }

    @classmethod
    def from_state(cls, data: Optional[dict[str, Any]]) -> "AsteriskMapper":
        """A mapper that continues from ``state()`` (a fresh one for None)."""
        mapper = cls()
        if not data:
            return mapper
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"mapper state version {data.get('version')!r} is not {STATE_VERSION}")
        mapper.swept = float(data["swept"])
        for uid, c in data["calls"].items():
            mapper.calls[uid] = _Call(seen=float(c["seen"]), legs={
                q: _Leg(call_id=cid, attempt=int(n), done=bool(done), agent=agent)
                for q, (cid, n, done, agent) in c["legs"].items()
            })
        for name, a in data["agents"].items():
            last = a["last"]
            mapper.agents[name] = _Agent(
                seen=float(a["seen"]), queues={q: bool(p) for q, p in a["queues"].items()},
                logged_in=bool(a["logged_in"]), reason=a["reason"], calls=dict(a["calls"]),
                last=None if last is None else (last[0], tuple(last[1]), last[2]), last_ms=int(a["last_ms"]),
            )
        return mapper


def _ts(epoch: float) -> float | int:
    """Epoch seconds as written (Asterisk writes whole seconds)."""
    return int(epoch) if epoch.is_integer() else epoch
