"""Event contract v1: typed events and the one decoder every path shares.

Nothing else in ccmon parses event JSON. ``decode_message`` turns the bytes of
one Kafka message (a single event or a JSON array of events) into typed events
and ``Rejected`` items; ``decode_line`` does the same for one line of JSONL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, ClassVar, Literal, Union

import msgspec

CONTRACT_VERSION = 1

# Epoch seconds accepted for ``ts``: 2000-01-01 .. 2100-01-01. Anything outside is a unit
# mistake (ms or µs sent as seconds) rather than a real time.
TS_MIN_S, TS_MAX_S = 946_684_800, 4_102_444_800
_TS_RANGE = "`ts` is outside 2000-01-01..2100-01-01; send epoch *seconds* or RFC 3339"

#: ``ts`` as typed events hold it: epoch seconds, range-checked by the decoder itself (no Python per
#: event). RFC 3339 text with an offset (``Z`` or ``+02:00``) is also accepted on input: the decoder
#: converts it to epoch seconds, to the millisecond (``_decode_text_ts``).
EpochSeconds = Annotated[float, msgspec.Meta(ge=TS_MIN_S, lt=TS_MAX_S)]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class Event(msgspec.Struct, tag_field="type", kw_only=True, frozen=True, gc=False):
    """Fields common to every event; ``ts_ms`` is the event time in epoch milliseconds.

    Events hold only strings, numbers and flat containers of them, so they cannot form reference
    cycles: ``gc=False`` keeps millions of them a second out of the cyclic collector's way.
    """

    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    ts: EpochSeconds
    source: str | None = None
    # Free-form labels for custom metrics (e.g. a "complaint" tag); bounded so they stay cheap.
    tags: Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=32)] = []
    attributes: Annotated[dict[Annotated[str, msgspec.Meta(max_length=64)], Union[str, int, float, bool]],
                          msgspec.Meta(max_length=32)] = {}

    domain: ClassVar[str] = ""
    entity_field: ClassVar[str] = ""

    @property
    def ts_ms(self) -> int:
        """The event time as integer epoch milliseconds (exact arithmetic downstream)."""
        return round(self.ts * 1000)

    @property
    def type(self) -> str:
        """The event's ``type`` tag, e.g. ``call.offered``."""
        return type(self).__struct_config__.tag  # type: ignore[return-value]

    @property
    def entity_id(self) -> str:
        """The id that keys this event on its topic (``call_id``, ``ticket_id``...)."""
        return getattr(self, self.entity_field)


Id = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
MAX_AGENT_QUEUES = 100  # queues one agent.state may name (a bound on what one event can make the worker do)

# --------------------------------------------------------------------- calls


class CallEvent(Event, frozen=True):
    """An event about one call leg ``(call_id, queue)``; topic ``<prefix>calls``."""

    call_id: Id
    queue: Name
    domain: ClassVar[str] = "calls"
    entity_field: ClassVar[str] = "call_id"


class CallOffered(CallEvent, tag="call.offered", frozen=True):
    """A call entered the queue."""

    channel: Name = "voice"


BlockReason = Literal["queue_full", "no_agents", "closed", "trunk_busy"]


class CallBlocked(CallEvent, tag="call.blocked", frozen=True):
    """A call was refused before it entered the queue."""

    reason: BlockReason


class CallAnswered(CallEvent, tag="call.answered", frozen=True):
    """An agent answered the call."""

    agent_id: Id


class CallAbandoned(CallEvent, tag="call.abandoned", frozen=True):
    """The caller hung up while waiting."""


class CallTimedOut(CallEvent, tag="call.timed_out", frozen=True):
    """The call left the queue by max wait or overflow."""


MAX_HOLD_SECONDS = 365 * 86_400  # a year: past any real call


class CallEnded(CallEvent, tag="call.ended", frozen=True):
    """Talk ended."""

    # Bounded so the core's millisecond arithmetic and state encoding (int64) cannot overflow on it.
    hold_seconds: Annotated[float, msgspec.Meta(ge=0, le=MAX_HOLD_SECONDS)] | None = None


class CallWrapupCompleted(CallEvent, tag="call.wrapup_completed", frozen=True):
    """The agent finished after-call work."""

    agent_id: Id


# -------------------------------------------------------------------- agents

AgentStateName = Literal["available", "on_call", "wrap_up", "away", "offline"]


class AgentState(Event, tag="agent.state", frozen=True):
    """An agent's new state and the queues it serves; topic ``<prefix>agents``."""

    agent_id: Id
    state: AgentStateName
    queues: Annotated[list[Name], msgspec.Meta(max_length=MAX_AGENT_QUEUES)]
    reason: str | None = None
    domain: ClassVar[str] = "agents"
    entity_field: ClassVar[str] = "agent_id"


# ------------------------------------------------------------------- tickets


class TicketEvent(Event, frozen=True):
    """An event about one ticket; topic ``<prefix>tickets``."""

    ticket_id: Id
    domain: ClassVar[str] = "tickets"
    entity_field: ClassVar[str] = "ticket_id"


Priority = Literal["low", "normal", "high", "urgent"]
TicketStatus = Literal["open", "pending", "on_hold", "solved", "closed"]


class TicketCreated(TicketEvent, tag="ticket.created", frozen=True):
    """A ticket was opened."""

    queue: Name
    channel: Name
    priority: Priority = "normal"
    customer_id: Id | None = None


class TicketReplied(TicketEvent, tag="ticket.replied", frozen=True):
    """Someone replied on the ticket."""

    author: Literal["agent", "customer"]
    public: bool = True


class TicketStatusChanged(TicketEvent, tag="ticket.status_changed", frozen=True):
    """The ticket moved to a new status."""

    status: TicketStatus


class TicketAssigned(TicketEvent, tag="ticket.assigned", frozen=True):
    """The ticket was assigned to an agent, and optionally moved to a queue."""

    agent_id: Id
    queue: Name | None = None


class TicketEscalated(TicketEvent, tag="ticket.escalated", frozen=True):
    """The ticket was escalated."""

    level: str | int | None = None


class TicketReopened(TicketEvent, tag="ticket.reopened", frozen=True):
    """A solved or closed ticket was reopened."""


# ------------------------------------------------------------------- surveys

SCORE_RANGES: dict[str, tuple[int, int]] = {"csat": (1, 5), "nps": (0, 10), "ces": (1, 7)}


class SurveyResponse(Event, tag="survey.response", frozen=True):
    """A customer answered a CSAT, NPS or CES survey; topic ``<prefix>surveys``."""

    survey_id: Id
    kind: Literal["csat", "nps", "ces"]
    score: int
    queue: Name
    agent_id: Id | None = None
    ticket_id: Id | None = None
    call_id: Id | None = None
    domain: ClassVar[str] = "surveys"
    entity_field: ClassVar[str] = "survey_id"

    def __post_init__(self) -> None:
        lo, hi = SCORE_RANGES[self.kind]
        if not lo <= self.score <= hi:
            raise ValueError(f"score {self.score} is out of range for {self.kind} ({lo}-{hi})")


# --------------------------------------------------------------------- KPIs


MAX_KPI_VALUE = 1e12  # kept in millionths as a 64-bit integer (and changes between two values must fit too)


class KpiSample(Event, tag="kpi.sample", frozen=True):
    """An external system's plain gauge (a daily churn figure, say); topic ``<prefix>kpis``, key ``name``."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")]
    value: Annotated[float, msgspec.Meta(ge=-MAX_KPI_VALUE, le=MAX_KPI_VALUE)]
    queue: Name | None = None
    domain: ClassVar[str] = "kpis"
    entity_field: ClassVar[str] = "name"

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise ValueError("`value` must be a finite number")


AnyEvent = Union[
    CallOffered,
    CallBlocked,
    CallAnswered,
    CallAbandoned,
    CallTimedOut,
    CallEnded,
    CallWrapupCompleted,
    AgentState,
    TicketCreated,
    TicketReplied,
    TicketStatusChanged,
    TicketAssigned,
    TicketEscalated,
    TicketReopened,
    SurveyResponse,
    KpiSample,
]

EVENT_TYPES: dict[str, type[Event]] = {
    cls.__struct_config__.tag: cls for cls in AnyEvent.__args__  # type: ignore[attr-defined]
}
DOMAINS: tuple[str, ...] = ("calls", "agents", "tickets", "surveys", "kpis")
EVENT_TYPES_OF: dict[str, frozenset[type[Event]]] = {
    d: frozenset(cls for cls in EVENT_TYPES.values() if cls.domain == d) for d in DOMAINS
}
ENTITY_FIELD: dict[str, str] = {d: next(iter(types)).entity_field for d, types in EVENT_TYPES_OF.items()}


# ----------------------------------------------------------------- decoding


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input that is not a valid event: the original bytes and why."""

    reason: str
    detail: str
    raw: bytes


Decoded = Union[Event, Rejected]

_one = msgspec.json.Decoder(AnyEvent)
_fast = msgspec.json.Decoder(Union[list[AnyEvent], AnyEvent])
_raw_items = msgspec.json.Decoder(list[msgspec.Raw])
_top_level = msgspec.json.Decoder(dict[str, msgspec.Raw])

MAX_EVENT_BYTES = 64 * 1024


def _reason_for(message: str) -> str:
    """Map a msgspec validation message to a short, stable reason code."""
    if "missing required field" in message:
        return "missing_field"
    if "`$.type`" in message or "`type`" in message and "Invalid value" in message:
        return "unknown_type"
    if "`ts`" in message or "$.ts" in message:
        return "invalid_ts"
    if "out of range" in message:
        return "out_of_range"
    return "invalid_field"


class _TsText(msgspec.Struct):
    """Just the ``ts`` of an event that sent it as RFC 3339 text (other fields are ignored)."""

    ts: AwareDatetime


_ts_text = msgspec.json.Decoder(_TsText)


def _decode_text_ts(raw: bytes) -> Decoded:
    """An event whose ``ts`` is RFC 3339 text: converted to epoch seconds (to the ms), then decoded as usual.

    Only the top-level ``ts`` is replaced; every other value keeps its original bytes (``msgspec.Raw``),
    so the event decodes exactly as it would have with a numeric ``ts``. Decode errors propagate.
    """
    try:
        when = _ts_text.decode(raw).ts
    except msgspec.ValidationError as exc:
        return Rejected("invalid_ts", f"{exc}; send RFC 3339 with an offset (Z or +02:00) or epoch seconds", raw)
    ms = round(when.timestamp() * 1000)
    if not TS_MIN_S * 1000 <= ms < TS_MAX_S * 1000:
        return Rejected("invalid_ts", _TS_RANGE, raw)
    fields = _top_level.decode(raw)
    fields["ts"] = msgspec.Raw(msgspec.json.encode(ms / 1000))
    return _one.decode(msgspec.json.encode(fields))


def _rejected(msg: str, raw: bytes) -> Rejected:
    if msg.startswith("Expected `object`") or msg.startswith("Expected `array | object`"):
        return Rejected("not_an_object", f"each event must be a JSON object: {msg}", raw)
    if "`$.ts`" in msg and msg.startswith(("Expected `float` >=", "Expected `float` <")):
        return Rejected("invalid_ts", f"{_TS_RANGE} ({msg})", raw)
    return Rejected(_reason_for(msg), msg, raw)


def _decode_single(raw: bytes, limit: bool = True) -> Decoded:
    """Decode bytes that must hold exactly one event object; never raises."""
    if limit and len(raw) > MAX_EVENT_BYTES:
        return Rejected("too_large", f"event is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES}", raw)
    try:
        try:
            return _one.decode(raw)
        except msgspec.ValidationError as exc:
            if not str(exc).startswith("Expected `float`, got `str` - at `$.ts`"):
                raise
        return _decode_text_ts(raw)
    except msgspec.ValidationError as exc:
        return _rejected(str(exc), raw)
    except msgspec.DecodeError as exc:
        return Rejected("invalid_json", f"not valid UTF-8 JSON: {exc}", raw)
    except RecursionError:
        return _too_deep(raw)


def _too_deep(raw: bytes) -> Rejected:
    """The reject for JSON nested past the interpreter's recursion limit (msgspec raises RecursionError)."""
    return Rejected("too_deep", "JSON nested deeper than the decoder allows; events are flat objects "
                                "(send at most a few levels of nesting)", raw)


def decode_message(raw: bytes) -> list[Decoded]:
    """Decode one Kafka message value: a single event or a JSON array of events.

    A single event may be at most ``MAX_EVENT_BYTES``; a batch is bounded by the
    broker's message size instead.
    """
    if len(raw) > MAX_EVENT_BYTES and raw.lstrip()[:1] != b"[":
        return [_decode_single(raw)]
    try:
        value = _fast.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        pass  # slow path below finds which item is bad and why
    else:
        return value if isinstance(value, list) else [value]
    stripped = raw.lstrip()
    if stripped[:1] != b"[":
        return [_decode_single(raw)]
    try:
        items = _raw_items.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return [Rejected("invalid_json", f"not a valid JSON array of events: {exc}", raw)]
    except RecursionError:
        return [_too_deep(raw)]
    return [_decode_single(bytes(item), limit=False) for item in items]


def split_message(raw: bytes) -> list[bytes]:
    """The original bytes of each event in a message (one item unless it is a JSON array)."""
    if raw.lstrip()[:1] == b"[":
        try:
            return [bytes(item) for item in _raw_items.decode(raw)]
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            pass
    return [raw]


def decode_line(line: bytes) -> Decoded:
    """Decode one JSONL line (a single event object)."""
    return _decode_single(line.strip())


def encode_event(event: Event) -> bytes:
    """Encode an event as contract JSON (``ts`` as epoch seconds)."""
    return msgspec.json.encode(event)


def event_from_dict(data: dict) -> Decoded:
    """Validate a Python mapping (e.g. from the simulator) through the same decoder."""
    return _decode_single(msgspec.json.encode(data))
