"""Seeded discrete-event simulator of a contact center, emitting contract-v1 events as dicts.

One heap of scheduled actions drives everything: call arrivals, answers, talk
and wrap-up ends, caller patience, agent breaks and ticket lifecycles. Actions
run in time order and each emits its events at its own time, so the output is
ordered by ``ts`` without sorting and can stream forever with bounded memory.
The same ``SimConfig`` and ``start`` always give the same events.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from bisect import bisect
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator

SOURCE = "simulator"


def _cum(weights: list[float]) -> tuple[float, ...]:
    """Normalised cumulative weights for ``bisect`` sampling."""
    total = sum(weights)
    cum = list(itertools.accumulate(w / total for w in weights))
    cum[-1] = 1.0  # random() < 1.0, so bisect never runs off the end
    return tuple(cum)


# Behaviour the brief leaves open; module constants rather than config so the
# SimConfig surface stays the documented one.
_RING_SECONDS = (2.0, 6.0)  # agent alerting time before call.answered
_HOLD_PROBABILITY = 0.2
_MEAN_HOLD_SECONDS = 20.0
_MEAN_AWAY_SECONDS = 300.0
_AWAY_REASONS = ("break", "break", "break", "training", "meeting", "coaching")
_MEAN_SURVEY_DELAY_CALL = 60.0  # post-call IVR survey
_MEAN_SURVEY_DELAY_TICKET = 1800.0  # emailed survey after solve

_SURVEY_KINDS = ("csat", "nps", "ces")
_SURVEY_KIND_CUM = _cum([60, 25, 15])
# Score distributions skewed to the happy end, as real survey data is.
_SCORE_CUM: dict[str, tuple[tuple[int, ...], tuple[float, ...]]] = {
    "csat": ((1, 2, 3, 4, 5), _cum([5, 7, 13, 35, 40])),
    "nps": (tuple(range(11)), _cum([2, 1, 1, 2, 2, 5, 7, 12, 20, 22, 26])),
    "ces": (tuple(range(1, 8)), _cum([3, 4, 6, 10, 20, 30, 27])),
}

_TICKET_CHANNELS = ("email", "chat", "web", "social", "phone")
_TICKET_CHANNEL_CUM = _cum([45, 20, 20, 5, 10])
_PRIORITIES = ("low", "normal", "high", "urgent")
_PRIORITY_CUM = _cum([20, 55, 18, 7])
# Urgent tickets are worked faster; the factor scales every agent-side delay.
_PRIORITY_SPEED = {"low": 2.0, "normal": 1.0, "high": 0.5, "urgent": 0.25}
_MEAN_TICKET_ASSIGN = 900.0
_MEAN_TICKET_AGENT_REPLY = 1800.0
_MEAN_TICKET_CUSTOMER_REPLY = 5400.0
_MEAN_TICKET_REOPEN = 7200.0
_MEAN_TICKET_CLOSE = 14400.0
_TICKET_MAX_ROUNDS = 4
_TICKET_REOPEN_PROBABILITY = 0.08


@dataclass(frozen=True)
class SimConfig:
    """Parameters of one simulated contact center; every rate and mean is per queue."""

    seed: int = 1
    queues: tuple[str, ...] = ("sales", "support", "billing")
    arrival_rate_per_hour: float = 240.0  # Poisson arrivals per queue
    agents_per_queue: int = 16  # pool of agents, each serving one queue (agent ids like "sales-a01")
    mean_talk_seconds: float = 180.0  # exponential
    mean_wrapup_seconds: float = 30.0  # exponential
    mean_patience_seconds: float = 90.0  # exponential caller patience -> call.abandoned
    queue_capacity: int = 20  # waiting calls beyond this -> call.blocked reason "queue_full"
    max_wait_seconds: float = 600.0  # -> call.timed_out
    ticket_rate_per_hour: float = 60.0  # per queue
    survey_probability: float = 0.3  # share of handled calls / solved tickets that get a survey.response
    away_probability: float = 0.05  # share of wrap-ups after which the agent goes "away" for a while
    # Scales every ticket delay (assign, replies, reopen, close, survey): below 1, tickets live shorter,
    # so the population of open and recently solved tickets settles sooner (the memory benchmark).
    ticket_time_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.queues or len(set(self.queues)) != len(self.queues):
            raise ValueError("queues must be a non-empty tuple of distinct names")
        if any(not 1 <= len(q) <= 128 for q in self.queues):
            raise ValueError("queue names must be 1-128 characters")
        for name in (
            "arrival_rate_per_hour",
            "agents_per_queue",
            "mean_talk_seconds",
            "mean_wrapup_seconds",
            "mean_patience_seconds",
            "queue_capacity",
            "max_wait_seconds",
            "ticket_rate_per_hour",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not (math.isfinite(self.ticket_time_scale) and self.ticket_time_scale > 0):
            raise ValueError(f"ticket_time_scale must be a finite number > 0, got {self.ticket_time_scale!r}")
        for name in ("survey_probability", "away_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")


# Call leg states. A leg leaves WAITING exactly once, which is what makes the
# lazily cancelled patience timer safe to ignore.
_WAITING, _RINGING, _DONE = 0, 1, 2


class _Agent:
    __slots__ = ("agent_id", "queue")

    def __init__(self, agent_id: str, queue: _Queue) -> None:
        self.agent_id = agent_id
        self.queue = queue


class _Call:
    __slots__ = ("call_id", "queue", "offered_at", "state", "agent")

    def __init__(self, call_id: str, queue: _Queue, offered_at: float) -> None:
        self.call_id = call_id
        self.queue = queue
        self.offered_at = offered_at
        self.state = _WAITING
        self.agent: _Agent | None = None


class _Queue:
    __slots__ = ("name", "agents", "agent_ids", "available", "waiting", "n_waiting", "n_staffed")

    def __init__(self, name: str, n_agents: int) -> None:
        self.name = name
        self.agents = [_Agent(f"{name}-a{i:02d}", self) for i in range(1, n_agents + 1)]
        # Tickets are worked by the same people; an unstaffed queue still needs an owner id.
        self.agent_ids = [a.agent_id for a in self.agents] or [f"{name}-a01"]
        self.available: deque[_Agent] = deque(self.agents)  # longest idle first
        self.waiting: deque[_Call] = deque()  # FIFO; may hold legs that already left (skipped)
        self.n_waiting = 0
        self.n_staffed = n_agents  # agents not away: blocked "no_agents" when zero


class _Ticket:
    __slots__ = ("ticket_id", "queue", "agent_id", "speed", "rounds")

    def __init__(self, ticket_id: str, queue: _Queue, agent_id: str, speed: float) -> None:
        self.ticket_id = ticket_id
        self.queue = queue
        self.agent_id = agent_id
        self.speed = speed
        self.rounds = 0


class _Sim:
    """The simulation state; handlers append event dicts to ``out``."""

    def __init__(self, cfg: SimConfig, start: float) -> None:
        self.cfg = cfg
        self.start = start
        rng = random.Random(cfg.seed)
        self._random = rng.random
        self._uniform = rng.uniform
        self.heap: list[tuple[float, int, Callable[[float, Any], None], Any]] = []
        self._seq = itertools.count()
        self._event_no = itertools.count(1)
        self._prefix = f"sim-{cfg.seed}-"
        self._call_no = itertools.count(1)
        self._ticket_no = itertools.count(1)
        self._survey_no = itertools.count(1)
        self._tag = f"{cfg.seed}"
        self.out: list[dict] = []
        self.queues = [_Queue(name, cfg.agents_per_queue) for name in cfg.queues]
        self._mean_arrival = 3600.0 / cfg.arrival_rate_per_hour if cfg.arrival_rate_per_hour > 0 else 0.0
        self._mean_ticket = 3600.0 / cfg.ticket_rate_per_hour if cfg.ticket_rate_per_hour > 0 else 0.0
        self._ticket_scale = cfg.ticket_time_scale

    # ------------------------------------------------------------- plumbing

    def _exp(self, mean: float) -> float:
        """An exponential draw with the given mean (0 for a zero mean)."""
        return -mean * math.log(1.0 - self._random())

    def _ticket_delay(self, mean: float) -> float:
        """An exponential ticket delay, scaled by ``ticket_time_scale``."""
        return self._exp(self._ticket_scale * mean)

    def _at(self, t: float, fn: Callable[[float, Any], None], arg: Any) -> None:
        heapq.heappush(self.heap, (t, next(self._seq), fn, arg))

    def _emit(self, type_: str, t: float, fields: dict) -> None:
        event_id = f"{self._prefix}{next(self._event_no)}"
        self.out.append({"event_id": event_id, "type": type_, "ts": round(t, 3), "source": SOURCE, **fields})

    def _agent_state(self, t: float, agent: _Agent, state: str, reason: str | None = None) -> None:
        fields = {"agent_id": agent.agent_id, "state": state, "queues": [agent.queue.name]}
        if reason is not None:
            fields["reason"] = reason
        self._emit("agent.state", t, fields)

    def _pick(self, values: tuple, cum: tuple[float, ...]) -> Any:
        return values[bisect(cum, self._random())]

    def begin(self) -> None:
        """Emit the opening agent states and schedule the first arrivals."""
        t = self.start
        for q in self.queues:
            for agent in q.agents:
                self._agent_state(t, agent, "available")
        for q in self.queues:
            if self._mean_arrival:
                self._at(t + self._exp(self._mean_arrival), self._call_arrival, q)
            if self._mean_ticket:
                self._at(t + self._exp(self._mean_ticket), self._ticket_arrival, q)

    # ---------------------------------------------------------------- calls

    def _call_arrival(self, t: float, q: _Queue) -> None:
        self._at(t + self._exp(self._mean_arrival), self._call_arrival, q)
        call_id = f"call-{self._tag}-{next(self._call_no)}"
        if q.n_staffed == 0:
            self._emit("call.blocked", t, {"call_id": call_id, "queue": q.name, "reason": "no_agents"})
            return
        if q.n_waiting == 0 and q.available:
            self._emit("call.offered", t, {"call_id": call_id, "queue": q.name, "channel": "voice"})
            self._ring(t, _Call(call_id, q, t), q.available.popleft())
            return
        if q.n_waiting >= self.cfg.queue_capacity:
            self._emit("call.blocked", t, {"call_id": call_id, "queue": q.name, "reason": "queue_full"})
            return
        self._emit("call.offered", t, {"call_id": call_id, "queue": q.name, "channel": "voice"})
        call = _Call(call_id, q, t)
        q.waiting.append(call)
        q.n_waiting += 1
        # Only the earlier of patience and max wait can fire, so schedule just that one.
        patience = self._exp(self.cfg.mean_patience_seconds)
        if patience < self.cfg.max_wait_seconds:
            self._at(t + patience, self._call_abandon, call)
        else:
            self._at(t + self.cfg.max_wait_seconds, self._call_timeout, call)

    def _leave_queue(self, call: _Call) -> bool:
        """Take a still-waiting leg out of its queue; False if it was already answered."""
        if call.state != _WAITING:
            return False
        call.state = _DONE
        q = call.queue
        q.n_waiting -= 1
        waiting = q.waiting
        while waiting and waiting[0].state != _WAITING:  # keep stale legs from piling up
            waiting.popleft()
        return True

    def _call_abandon(self, t: float, call: _Call) -> None:
        if self._leave_queue(call):
            self._emit("call.abandoned", t, {"call_id": call.call_id, "queue": call.queue.name})

    def _call_timeout(self, t: float, call: _Call) -> None:
        if self._leave_queue(call):
            self._emit("call.timed_out", t, {"call_id": call.call_id, "queue": call.queue.name})

    def _ring(self, t: float, call: _Call, agent: _Agent) -> None:
        """Reserve the agent for the call; it answers after a short alerting time."""
        call.state = _RINGING
        call.agent = agent
        self._at(t + self._uniform(*_RING_SECONDS), self._call_answer, call)

    def _call_answer(self, t: float, call: _Call) -> None:
        agent = call.agent
        assert agent is not None
        self._emit("call.answered", t, {"call_id": call.call_id, "queue": call.queue.name, "agent_id": agent.agent_id})
        self._agent_state(t, agent, "on_call")
        self._at(t + self._exp(self.cfg.mean_talk_seconds), self._call_end, (call, t))

    def _call_end(self, t: float, arg: tuple[_Call, float]) -> None:
        call, answered_at = arg
        fields: dict[str, Any] = {"call_id": call.call_id, "queue": call.queue.name}
        if self._random() < _HOLD_PROBABILITY:
            # Hold is part of talk time, so it can never exceed it.
            fields["hold_seconds"] = round(min(self._exp(_MEAN_HOLD_SECONDS), t - answered_at), 1)
        self._emit("call.ended", t, fields)
        agent = call.agent
        assert agent is not None
        self._agent_state(t, agent, "wrap_up")
        if self._random() < self.cfg.survey_probability:
            wait = answered_at - call.offered_at
            survey = (call.queue.name, agent.agent_id, "call_id", call.call_id, wait)
            self._at(t + self._exp(_MEAN_SURVEY_DELAY_CALL), self._survey, survey)
        self._at(t + self._exp(self.cfg.mean_wrapup_seconds), self._call_wrapup, call)

    def _call_wrapup(self, t: float, call: _Call) -> None:
        agent = call.agent
        assert agent is not None
        call.state = _DONE
        self._emit(
            "call.wrapup_completed", t, {"call_id": call.call_id, "queue": call.queue.name, "agent_id": agent.agent_id}
        )
        if self._random() < self.cfg.away_probability:
            reason = _AWAY_REASONS[int(self._random() * len(_AWAY_REASONS))]
            self._agent_state(t, agent, "away", reason)
            agent.queue.n_staffed -= 1
            self._at(t + self._exp(_MEAN_AWAY_SECONDS), self._agent_back, agent)
        else:
            self._agent_free(t, agent)

    def _agent_back(self, t: float, agent: _Agent) -> None:
        agent.queue.n_staffed += 1
        self._agent_free(t, agent)

    def _agent_free(self, t: float, agent: _Agent) -> None:
        """The agent is available: take the head of the queue, or join the idle pool."""
        self._agent_state(t, agent, "available")
        q = agent.queue
        waiting = q.waiting
        while waiting:
            call = waiting.popleft()
            if call.state == _WAITING:
                q.n_waiting -= 1
                self._ring(t, call, agent)
                return
        q.available.append(agent)

    # -------------------------------------------------------------- surveys

    def _survey(self, t: float, arg: tuple[str, str, str, str, float]) -> None:
        queue, agent_id, ref_field, ref_id, wait = arg
        kind = _SURVEY_KINDS[bisect(_SURVEY_KIND_CUM, self._random())]
        values, cum = _SCORE_CUM[kind]
        i = bisect(cum, self._random())
        # Long waits sour the answer: knock the score down a step or two.
        if wait > 60.0 and self._random() < min(0.6, wait / 600.0):
            i = max(0, i - 1 - int(self._random() * 2))
        self._emit(
            "survey.response",
            t,
            {
                "survey_id": f"survey-{self._tag}-{next(self._survey_no)}",
                "kind": kind,
                "score": values[i],
                "queue": queue,
                "agent_id": agent_id,
                ref_field: ref_id,
            },
        )

    # -------------------------------------------------------------- tickets

    def _ticket_arrival(self, t: float, q: _Queue) -> None:
        self._at(t + self._exp(self._mean_ticket), self._ticket_arrival, q)
        priority = self._pick(_PRIORITIES, _PRIORITY_CUM)
        ids = q.agent_ids
        ticket = _Ticket(
            f"ticket-{self._tag}-{next(self._ticket_no)}", q, ids[int(self._random() * len(ids))], _PRIORITY_SPEED[priority]
        )
        self._emit(
            "ticket.created",
            t,
            {
                "ticket_id": ticket.ticket_id,
                "queue": q.name,
                "channel": self._pick(_TICKET_CHANNELS, _TICKET_CHANNEL_CUM),
                "priority": priority,
                "customer_id": f"cust-{1 + int(self._random() * 50_000)}",
            },
        )
        self._at(t + self._ticket_delay(_MEAN_TICKET_ASSIGN * ticket.speed), self._ticket_assign, ticket)

    def _ticket_assign(self, t: float, ticket: _Ticket) -> None:
        fields = {"ticket_id": ticket.ticket_id, "agent_id": ticket.agent_id, "queue": ticket.queue.name}
        self._emit("ticket.assigned", t, fields)
        self._at(t + self._ticket_delay(_MEAN_TICKET_AGENT_REPLY * ticket.speed), self._ticket_agent_reply, ticket)

    def _ticket_agent_reply(self, t: float, ticket: _Ticket) -> None:
        self._emit("ticket.replied", t, {"ticket_id": ticket.ticket_id, "author": "agent", "public": True})
        ticket.rounds += 1
        r = self._random()
        if ticket.rounds >= _TICKET_MAX_ROUNDS or r >= 0.5:
            # The agent marks it solved right after the answering reply.
            self._at(t + self._uniform(5.0, 120.0), self._ticket_solve, ticket)
        elif r < 0.25:
            self._at(t + self._uniform(5.0, 60.0), self._ticket_pending, ticket)
        elif r < 0.44:
            self._at(t + self._ticket_delay(_MEAN_TICKET_CUSTOMER_REPLY), self._ticket_customer_reply, ticket)
        else:
            self._at(t + self._ticket_delay(_MEAN_TICKET_ASSIGN * ticket.speed), self._ticket_escalate, ticket)

    def _ticket_pending(self, t: float, ticket: _Ticket) -> None:
        self._emit("ticket.status_changed", t, {"ticket_id": ticket.ticket_id, "status": "pending"})
        self._at(t + self._ticket_delay(_MEAN_TICKET_CUSTOMER_REPLY), self._ticket_customer_reply, ticket)

    def _ticket_customer_reply(self, t: float, ticket: _Ticket) -> None:
        self._emit("ticket.replied", t, {"ticket_id": ticket.ticket_id, "author": "customer", "public": True})
        # A customer reply reopens a pending ticket; emitting "open" always keeps consumers simple.
        self._emit("ticket.status_changed", t, {"ticket_id": ticket.ticket_id, "status": "open"})
        self._at(t + self._ticket_delay(_MEAN_TICKET_AGENT_REPLY * ticket.speed), self._ticket_agent_reply, ticket)

    def _ticket_escalate(self, t: float, ticket: _Ticket) -> None:
        self._emit("ticket.escalated", t, {"ticket_id": ticket.ticket_id, "level": 2})
        ids = ticket.queue.agent_ids
        if len(ids) > 1:  # hand over to a colleague
            i = ids.index(ticket.agent_id)
            ticket.agent_id = ids[(i + 1 + int(self._random() * (len(ids) - 1))) % len(ids)]
        self._at(t + self._uniform(5.0, 300.0), self._ticket_assign, ticket)

    def _ticket_solve(self, t: float, ticket: _Ticket) -> None:
        self._emit("ticket.status_changed", t, {"ticket_id": ticket.ticket_id, "status": "solved"})
        if self._random() < self.cfg.survey_probability:
            survey = (ticket.queue.name, ticket.agent_id, "ticket_id", ticket.ticket_id, 0.0)
            self._at(t + self._ticket_delay(_MEAN_SURVEY_DELAY_TICKET), self._survey, survey)
        if self._random() < _TICKET_REOPEN_PROBABILITY:
            self._at(t + self._ticket_delay(_MEAN_TICKET_REOPEN), self._ticket_reopen, ticket)
        else:
            self._at(t + self._ticket_delay(_MEAN_TICKET_CLOSE), self._ticket_close, ticket)

    def _ticket_reopen(self, t: float, ticket: _Ticket) -> None:
        self._emit("ticket.reopened", t, {"ticket_id": ticket.ticket_id})
        ticket.rounds = _TICKET_MAX_ROUNDS - 1  # one more answer, then solve again
        self._at(t + self._ticket_delay(_MEAN_TICKET_AGENT_REPLY * ticket.speed), self._ticket_agent_reply, ticket)

    def _ticket_close(self, t: float, ticket: _Ticket) -> None:
        self._emit("ticket.status_changed", t, {"ticket_id": ticket.ticket_id, "status": "closed"})


def generate(cfg: SimConfig, start: float, duration: float | None) -> Iterator[dict]:
    """Events in non-decreasing ts order (epoch seconds floats) from `start` for `duration` seconds (None = forever, lazily)."""
    end = math.inf if duration is None else start + duration
    if not start < end:
        return
    sim = _Sim(cfg, start)
    sim.begin()
    yield from sim.out
    sim.out = []
    heap = sim.heap
    pop = heapq.heappop
    while heap:
        t, _, fn, arg = pop(heap)
        if t >= end:
            break
        fn(t, arg)
        if sim.out:
            batch = sim.out
            sim.out = []
            yield from batch
