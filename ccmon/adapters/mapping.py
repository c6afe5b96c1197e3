"""Declarative webhook mappings: a helpdesk's or contact center's webhook payload -> contract v1 events.

A mapping is a small YAML file (see docs/mappings.md): ``rules`` are tried in
order, the first whose ``when`` conditions all hold emits its events, and each
event's fields come from payload paths (``detail.via.channel``,
``items[0].id``), templates, value maps and constants. Everything here is pure:
``map_payload`` touches no network, clock or file, so a mapping is tested by
feeding it recorded payloads (deploy/mappings/samples/).

Every event ``map_payload`` returns has passed ``streams.events.event_from_dict``
(the shared contract validator); anything that could not be produced comes back
as a problem sentence instead, so one bad field never poisons a batch.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union
from urllib.parse import parse_qsl

import msgspec
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ccmon.yamlsource import compose, line_of
from ccmon.errors import ConfigError
from streams.events import EVENT_TYPES, Rejected, event_from_dict

__all__ = [
    "Condition",
    "Emit",
    "FieldSpec",
    "Mapping",
    "MappingError",
    "Rule",
    "load_mapping",
    "load_mappings",
    "map_payload",
    "parse_body",
    "parse_path",
]

Scalar = Union[bool, int, float, str]
Conversion = Literal["string", "int", "float", "bool", "epoch_ms"]
PathPart = Union[str, int]

# Fields every emit sets itself (``type``) or through its own key (``event_id``).
_RESERVED = ("type", "event_id")
_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"


class MappingError(ConfigError):
    """A mapping file is invalid; ``problems`` holds one ``WHERE:LINE: what to fix`` per entry."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


# ---------------------------------------------------------------- paths


_KEY = re.compile(r"[^.\[\]]+")
_INDEX = re.compile(r"\[(\d+)\]")


@functools.lru_cache(maxsize=4096)
def parse_path(text: str) -> tuple[PathPart, ...]:
    """Split ``a.b[0].c`` into ``("a", "b", 0, "c")``; raise ValueError on bad syntax."""
    parts: list[PathPart] = []
    pos = 0
    while True:
        key = _KEY.match(text, pos)
        if key is None:
            raise ValueError(f"invalid path {text!r}: expected a key at position {pos + 1} "
                             "(paths look like `ticket.id` or `data.items[0].id`)")
        parts.append(key.group())
        pos = key.end()
        while (index := _INDEX.match(text, pos)) is not None:
            parts.append(int(index.group(1)))
            pos = index.end()
        if pos == len(text):
            return tuple(parts)
        if text[pos] != ".":
            raise ValueError(f"invalid path {text!r}: unexpected {text[pos]!r} at position {pos + 1}")
        pos += 1


class _Missing:
    """A path that leads nowhere, and the sentence that says where it stopped."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


def _show(parts: tuple[PathPart, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(parts))


def _resolve(payload: Any, text: str) -> Any:
    """The value at path ``text``, or a ``_Missing`` (absent, null, or not a container on the way)."""
    parts = parse_path(text)
    cur = payload
    for i, part in enumerate(parts):
        here = parts[:i]
        # Twilio sends TaskAttributes/WorkerAttributes as JSON text: a path may go into it.
        if isinstance(cur, str) and cur.lstrip()[:1] in ("{", "["):
            try:
                cur = _json_loads(cur)
            except ValueError:
                return _Missing(f"`{_show(here)}` is text that is not valid JSON, so `{text}` cannot be read")
        if isinstance(part, int):
            if not isinstance(cur, list):
                return _Missing(f"`{_show(here)}` is not a list, so `{text}` cannot be read")
            if part >= len(cur):
                return _Missing(f"`{_show(here)}` has {len(cur)} item(s), so `{_show(parts[:i + 1])}` is missing")
            cur = cur[part]
        else:
            if not isinstance(cur, dict):
                where = f"`{_show(here)}`" if here else "the payload"
                return _Missing(f"{where} is not an object, so `{text}` cannot be read")
            if part not in cur:
                return _Missing(f"`{_show(parts[:i + 1])}` is missing")
            cur = cur[part]
        if cur is None:
            return _Missing(f"`{_show(parts[:i + 1])}` is null")
    return cur


# ------------------------------------------------------------ templates


_TEMPLATE_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


@functools.lru_cache(maxsize=1024)
def _parse_template(text: str) -> tuple[tuple[bool, str], ...]:
    """``"zd:{detail.id}:x"`` -> ``((False, "zd:"), (True, "detail.id"), (False, ":x"))``; ``{{``/``}}`` are braces."""
    parts: list[tuple[bool, str]] = []
    pos = 0
    for m in _TEMPLATE_TOKEN.finditer(text):
        if m.start() > pos:
            parts.append((False, text[pos:m.start()]))
        token = m.group()
        if token in ("{{", "}}"):
            parts.append((False, token[0]))
        elif m.group(1) is not None:
            parse_path(m.group(1).strip())
            parts.append((True, m.group(1).strip()))
        else:
            raise ValueError(f"invalid template {text!r}: unmatched {token!r} (write {{{{ or }}}} for a brace)")
        pos = m.end()
    if pos < len(text):
        parts.append((False, text[pos:]))
    if not any(is_path for is_path, _ in parts):
        raise ValueError(f"template {text!r} has no {{path}}; use `constants` for a fixed value")
    return tuple(parts)


# ---------------------------------------------------------- conversions


def _text(value: Any) -> str:
    """A value as text: ``true``/``false`` for booleans, ``5158`` for 5158.0, JSON for objects and lists."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _key(value: Any) -> str:
    """How conditions and ``map`` compare values: as text, ignoring case (``"true"`` matches ``true``)."""
    return _text(value).casefold()


_TRUE = {"true", "1", "yes", "on", "y", "t"}
_FALSE = {"false", "0", "no", "off", "n", "f"}


def _convert(value: Any, kind: str) -> Any:
    """Convert a payload value for ``as:``; raise ValueError saying why it cannot be."""
    if isinstance(value, (dict, list)):
        raise ValueError(f"is {'an object' if isinstance(value, dict) else 'a list'}, not a single value")
    if kind == "string":
        return _text(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if _key(value) in _TRUE:
            return True
        if _key(value) in _FALSE:
            return False
        raise ValueError(f"{value!r} is not a boolean (true/false, 1/0, yes/no)")
    if isinstance(value, bool):  # bool is an int in Python; never let True become 1 silently
        raise ValueError(f"{value!r} is a boolean, not a number")
    if kind == "int":
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"{value!r} is not a whole number")
            return int(value)
        try:
            return int(value) if isinstance(value, int) else int(str(value).strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a whole number") from None
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number") from None
    except OverflowError:  # an integer past the float range
        raise ValueError(f"{_text(value)[:40]}… is not a finite number") from None
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    # epoch_ms: epoch milliseconds (Twilio's TimestampMs) -> the contract's epoch seconds.
    return number / 1000 if kind == "epoch_ms" else number


# ----------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        # pydantic's "Extra inputs are not permitted" does not say what *is* allowed; this does.
        if isinstance(data, dict):
            allowed = [f.alias or name for name, f in cls.model_fields.items()]
            unknown = [str(k) for k in data if k not in allowed and k not in cls.model_fields]
            if unknown:
                raise ValueError(f"unknown key(s) {', '.join(unknown)}; allowed here: {', '.join(allowed)}")
        return data


class Condition(_Model):
    """One test on a payload path; give exactly one of ``equals``, ``not_equals``, ``in``, ``not_in``, ``exists``."""

    path: str
    equals: Optional[Scalar] = None
    not_equals: Optional[Scalar] = None
    in_: Optional[list[Scalar]] = Field(None, alias="in")
    not_in: Optional[list[Scalar]] = None
    exists: Optional[bool] = None

    @field_validator("path")
    @classmethod
    def _path_ok(cls, v: str) -> str:
        parse_path(v)
        return v

    @model_validator(mode="after")
    def _one_operator(self) -> "Condition":
        given = [name for name in ("equals", "not_equals", "in_", "not_in", "exists") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("a condition needs exactly one of equals, not_equals, in, not_in, exists "
                             f"(got {', '.join(g.rstrip('_') for g in given) or 'none'})")
        return self

    def holds(self, payload: Any) -> bool:
        """Whether the payload satisfies this condition (a missing or null path never equals anything)."""
        value = _resolve(payload, self.path)
        present = not isinstance(value, _Missing)
        if self.exists is not None:
            return present == self.exists
        key = _key(value) if present else None
        if self.equals is not None:
            return present and key == _key(self.equals)
        if self.not_equals is not None:
            return not present or key != _key(self.not_equals)
        if self.in_ is not None:
            return present and key in {_key(v) for v in self.in_}
        return not present or key not in {_key(v) for v in self.not_in or ()}

    def describe(self) -> str:
        """The condition as a short sentence for problems and docs."""
        if self.exists is not None:
            return f"{self.path} {'exists' if self.exists else 'is missing'}"
        if self.equals is not None:
            return f"{self.path} = {_text(self.equals)}"
        if self.not_equals is not None:
            return f"{self.path} != {_text(self.not_equals)}"
        if self.in_ is not None:
            return f"{self.path} in [{', '.join(map(_text, self.in_))}]"
        return f"{self.path} not in [{', '.join(map(_text, self.not_in or ()))}]"


def _conditions(v: Any) -> Any:
    """``when``/``match`` take one condition or a list of them (all must hold)."""
    return [] if v is None else [v] if isinstance(v, dict) else v


class FieldSpec(_Model):
    """Where one event field comes from: a ``path`` or a ``template``, then ``map``, ``as`` and ``default``."""

    path: Optional[str] = None
    template: Optional[str] = None
    map: Optional[dict[str, Any]] = None
    as_: Optional[Conversion] = Field(None, alias="as")
    default: Any = None
    optional: bool = False

    @field_validator("path")
    @classmethod
    def _path_ok(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            parse_path(v)
        return v

    @field_validator("template")
    @classmethod
    def _template_ok(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            _parse_template(v)
        return v

    @field_validator("map", mode="before")
    @classmethod
    def _map_keys(cls, v: Any) -> Any:
        # YAML reads `true:` and `1:` as a bool and an int; keys are compared as text, ignoring case.
        if isinstance(v, dict):
            keys: dict[str, Any] = {}
            for k, value in v.items():
                if _key(k) in keys:
                    raise ValueError(f"map key {_text(k)!r} is listed twice (keys ignore case)")
                keys[_key(k)] = value
            return keys
        return v

    @model_validator(mode="after")
    def _source(self) -> "FieldSpec":
        if (self.path is None) == (self.template is None):
            raise ValueError("give exactly one of `path` or `template`")
        if self.map is not None and not self.map:
            raise ValueError("`map` is empty; remove it or list the values")
        return self

    def value(self, payload: Any) -> tuple[Any, Optional[str]]:
        """``(value, None)``, ``(_OMIT, None)`` for an optional field with no value, or ``(None, problem)``."""
        if self.template is not None:
            pieces = []
            for is_path, text in _parse_template(self.template):
                if not is_path:
                    pieces.append(text)
                    continue
                found = _resolve(payload, text)
                if isinstance(found, _Missing):
                    return self._fallback(f"template {self.template!r}: {found.reason}")
                if isinstance(found, (dict, list)):
                    return None, f"template {self.template!r}: `{text}` is an object or list, not a single value"
                pieces.append(_text(found))
            value: Any = "".join(pieces)
            source = f"template {self.template!r}"
        else:
            value = _resolve(payload, self.path or "")
            if isinstance(value, _Missing):
                return self._fallback(value.reason)
            source = f"`{self.path}`"
        if self.map is not None:
            if isinstance(value, (dict, list)) or _key(value) not in self.map:
                shown = _text(value) if not isinstance(value, (dict, list)) else "an object or list"
                return self._fallback(f"{source} is {shown!r}, which `map` does not list "
                                      f"(it lists {', '.join(sorted(self.map))})")
            value = self.map[_key(value)]
        if self.as_ is not None:
            try:
                value = _convert(value, self.as_)
            except ValueError as exc:
                return None, f"{source} cannot be read as {self.as_}: {exc}"
        return value, None

    def _fallback(self, reason: str) -> tuple[Any, Optional[str]]:
        if self.default is not None:
            return copy.deepcopy(self.default), None  # a list default must not be shared between events
        if self.optional:
            return _OMIT, None
        return None, f"{reason}, and there is no `default`"


_OMIT = object()


def _field_spec(v: Any) -> Any:
    """A bare string is shorthand for ``{path: <string>}``."""
    return {"path": v} if isinstance(v, str) else v


class Emit(_Model):
    """One contract event a rule produces: its ``type``, ``event_id`` and fields."""

    type: str
    event_id: FieldSpec
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    constants: dict[str, Any] = Field(default_factory=dict)

    @field_validator("event_id", mode="before")
    @classmethod
    def _event_id_spec(cls, v: Any) -> Any:
        if isinstance(v, str):
            raise ValueError("write `event_id: {template: \"...\"}` (or `{path: ...}`) so the id is stable per "
                             "source event; a retried webhook must produce the same id")
        return v

    @field_validator("fields", mode="before")
    @classmethod
    def _fields_shorthand(cls, v: Any) -> Any:
        return {k: _field_spec(s) for k, s in v.items()} if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _fits_the_contract(self) -> "Emit":
        cls = EVENT_TYPES.get(self.type)
        if cls is None:
            raise ValueError(f"unknown event type {self.type!r}; use one of {', '.join(EVENT_TYPES)}")
        if self.event_id.optional:
            raise ValueError("`event_id` cannot be optional")
        contract = {f.name: f for f in msgspec.structs.fields(cls) if f.name not in _RESERVED}
        problems = []
        for name in [*self.fields, *self.constants]:
            if name in _RESERVED:
                problems.append(f"`{name}` is set by the emit itself, not under fields/constants")
            elif name not in contract:
                # The contract ignores unknown keys, so a typo would vanish silently: refuse it here.
                problems.append(f"{self.type} has no field `{name}`; its fields are {', '.join(contract)}")
        for name in set(self.fields) & set(self.constants):
            problems.append(f"`{name}` is under both fields and constants")
        if "ts" in self.constants:
            problems.append("`ts` must come from the payload (under fields), not constants")
        for name, info in contract.items():
            if info.required and name not in self.fields and name not in self.constants:
                problems.append(f"{self.type} needs `{name}`; add it under fields or constants")
            elif info.required and name in self.fields and self.fields[name].optional:
                problems.append(f"`{name}` is required by {self.type}, so it cannot be optional")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def build(self, payload: Any) -> tuple[Optional[dict[str, Any]], list[str]]:
        """The event dict (validated against the contract), or None and the reasons it could not be built."""
        event: dict[str, Any] = {}
        problems: list[str] = []
        for name, spec in (("event_id", self.event_id), *self.fields.items()):
            value, problem = spec.value(payload)
            if problem is not None:
                problems.append(f"`{name}`: {problem}")
            elif value is not _OMIT:
                event[name] = value
        if problems:
            return None, problems
        event = {"event_id": event.pop("event_id"), "type": self.type, **event, **copy.deepcopy(self.constants)}
        decoded = event_from_dict(event)
        if isinstance(decoded, Rejected):
            return None, [f"the event is not valid contract v1 ({decoded.reason}): {decoded.detail}"]
        return event, []


class Rule(_Model):
    """``when`` all conditions hold, ``emit`` these events (an empty list ignores the payload on purpose)."""

    name: Optional[str] = None
    when: list[Condition] = Field(default_factory=list)
    emit: list[Emit]

    @field_validator("when", mode="before")
    @classmethod
    def _when_list(cls, v: Any) -> Any:
        return _conditions(v)

    def matches(self, payload: Any) -> bool:
        """Whether every condition holds (a rule without ``when`` matches everything)."""
        return all(c.holds(payload) for c in self.when)


class Mapping(_Model):
    """A whole mapping file: a name (the webhook URL's last segment), an optional ``match`` and ordered rules."""

    name: str = Field(pattern=_NAME_PATTERN, max_length=64)
    description: str = ""
    match: list[Condition] = Field(default_factory=list)
    rules: list[Rule] = Field(min_length=1)

    @field_validator("match", mode="before")
    @classmethod
    def _match_list(cls, v: Any) -> Any:
        return _conditions(v)


# ---------------------------------------------------------------- mapping


def _label(index: int, rule: Rule) -> str:
    return f"rule {index + 1}" + (f" ({rule.name})" if rule.name else "")


def map_payload(mapping: Mapping, payload: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Map one webhook payload to contract event dicts and the problems that kept any event from being made."""
    if not isinstance(payload, dict):
        return [], [f"{mapping.name}: the payload must be a JSON object or form fields, not {type(payload).__name__}"]
    failed = [c for c in mapping.match if not c.holds(payload)]
    if failed:
        return [], [f"{mapping.name}: this payload is not a {mapping.name} webhook "
                    f"(`match` needs {'; '.join(c.describe() for c in failed)})"]
    for index, rule in enumerate(mapping.rules):
        if not rule.matches(payload):
            continue
        events: list[dict[str, Any]] = []
        problems: list[str] = []
        for emit in rule.emit:
            event, reasons = emit.build(payload)
            if event is not None:
                events.append(event)
            problems += [f"{mapping.name}: {_label(index, rule)}: {emit.type}: {r}" for r in reasons]
        return events, problems
    return [], [f"{mapping.name}: no rule matched this payload ({_fingerprint(mapping, payload)}); "
                "add a rule for it, or a rule with `emit: []` to ignore it on purpose"]


def _fingerprint(mapping: Mapping, payload: dict[str, Any]) -> str:
    """The payload's values at the paths the rules test first, so a problem says what kind of payload it was."""
    paths = list(dict.fromkeys(rule.when[0].path for rule in mapping.rules if rule.when))[:3]
    shown = []
    for path in paths:
        value = _resolve(payload, path)
        shown.append(f"{path} is missing" if isinstance(value, _Missing) else f"{path} = {_text(value)[:80]!r}")
    return "; ".join(shown) or "no rule has conditions"


# ---------------------------------------------------------------- loading


def _line_of(node: Optional[yaml.Node], loc: tuple[Union[str, int], ...]) -> Optional[int]:
    """The line of the YAML node at a pydantic error location."""
    return line_of(node, loc, {"in_": "in", "as_": "as"})


def _parse(text: str, where: str) -> Mapping:
    try:
        raw, node = compose(text, where)
    except ValueError as exc:
        raise MappingError([str(exc)]) from None
    if not isinstance(raw, dict):
        raise MappingError([f"{where}: a mapping file is a YAML object with `name` and `rules` (see docs/mappings.md)"])
    try:
        return Mapping.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not str(p).startswith(("function-", "literal[", "union[")))
            line = _line_of(node, loc)
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "file"
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{where}{f':{line}' if line else ''}: {path}: {msg}")
        raise MappingError(problems) from None


def load_mapping(path_or_text: Union[str, Path]) -> Mapping:
    """Load and validate a mapping from a file (a ``Path``, or a one-line ``str``) or from YAML text; raise MappingError."""
    if isinstance(path_or_text, str) and "\n" in path_or_text:
        return _parse(path_or_text, "mapping")
    path = Path(path_or_text)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError([f"{path}: cannot read the mapping file: {exc.strerror or exc}"]) from None
    return _parse(text, str(path))


def load_mappings(directory: Union[str, Path]) -> dict[str, Mapping]:
    """Load every ``*.yaml``/``*.yml`` mapping in a directory (not its subdirectories), keyed by name = file stem."""
    folder = Path(directory)
    if not folder.is_dir():
        raise MappingError([f"{folder}: the mappings directory does not exist"])
    mappings: dict[str, Mapping] = {}
    problems: list[str] = []
    for file in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            mapping = load_mapping(file)
        except MappingError as exc:
            problems += exc.problems
            continue
        # The name is the URL segment (/api/webhooks/<name>): it must be findable from the file name.
        if mapping.name != file.stem:
            problems.append(f"{file}: name {mapping.name!r} must equal the file name {file.stem!r}")
        elif mapping.name in mappings:
            problems.append(f"{file}: mapping {mapping.name!r} is defined twice (.yaml and .yml)")
        else:
            mappings[mapping.name] = mapping
    if problems:
        raise MappingError(problems)
    return mappings


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (RFC 8259)")


def _json_loads(text: str) -> Any:
    """Strict JSON: ``NaN``/``Infinity`` refused, and nesting past the recursion limit a ValueError, not a crash."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def parse_body(body: bytes, content_type: Optional[str]) -> dict[str, Any]:
    """A webhook body as a payload dict: JSON, or form fields (Twilio) as a flat dict of strings; raise ValueError."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the body is not UTF-8") from None
    if media == "application/x-www-form-urlencoded":
        # A repeated form key keeps its last value: TaskRouter never repeats one.
        return dict(parse_qsl(text, keep_blank_values=True))
    if media and media != "application/json" and not media.endswith("+json"):
        raise ValueError(f"unsupported content type {media!r}; send application/json or "
                         "application/x-www-form-urlencoded")
    try:
        payload = _json_loads(text)
    except ValueError as exc:
        raise ValueError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ValueError("the JSON body must be an object")
    return payload
