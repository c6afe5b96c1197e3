"""Just enough PromQL reading to list the metrics a Grafana dashboard queries.

Not a parser: a scanner that drops what cannot name a metric (strings, label
matchers, range and subquery brackets, numbers and durations, Grafana
variables, comments, keywords, function names and the label lists of
by/without/on/ignoring/group_left/group_right) and keeps the identifiers left.
Shared by the static dashboard test and the live-scrape integration test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

# PromQL matches keywords and aggregation operators case-insensitively.
_AGGREGATIONS = frozenset({
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
})
# Each may be followed by a parenthesised list of label names, not metrics.
_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = _LABEL_LIST_KEYWORDS | _AGGREGATIONS | frozenset({
    "offset", "bool", "and", "or", "unless", "atan2", "inf", "nan",
})

_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_UNIT = r"(?:ms|[smhdwy])"
# Numbers and durations are one token so "5m" never leaves a stray "m" behind.
_NUMBER = re.compile(
    rf"0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?{_UNIT}?(?:\d+{_UNIT})*"
)
# $var, ${var}, ${var:format}, $__rate_interval.
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$[A-Za-z0-9_]+")
_NAME_MATCHER = re.compile(r"__name__\s*=(?!~)\s*(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`)\Z", re.S)
_QUOTED = re.compile(r"(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`)\Z", re.S)

_NAME, _IDENTIFIER, _PUNCT = "name", "ident", "punct"


def _string_end(expr: str, start: int) -> int:
    """Index just past the string literal opening at start."""
    quote = expr[start]
    i = start + 1
    while i < len(expr):
        c = expr[i]
        # Backtick strings are raw: a backslash escapes nothing in them.
        if c == "\\" and quote != "`":
            i += 2
            continue
        if c == quote:
            return i + 1
        i += 1
    raise ValueError(f"unterminated string at {start} in {expr!r}")


def _closing(expr: str, start: int, open_: str, close: str) -> int:
    """Index just past the bracket matching the one at start, skipping strings."""
    depth = 0
    i = start
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":
            i = _string_end(expr, i)
            continue
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unbalanced {open_!r} at {start} in {expr!r}")


def _split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split text at sep where it is outside strings and brackets."""
    parts: list[str] = []
    depth = 0
    last = 0
    i = 0
    while i < len(text):
        c = text[i]
        if c in "\"'`":
            i = _string_end(text, i)
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == sep and depth == 0:
            parts.append(text[last:i])
            last = i + 1
        i += 1
    parts.append(text[last:])
    return parts


def _names_in_matchers(body: str) -> list[str]:
    """Metric names a {...} block states itself: __name__="x", or a bare "x" (Prometheus 3)."""
    names = []
    for item in _split_top_level(body):
        item = item.strip()
        m = _NAME_MATCHER.match(item) or _QUOTED.match(item)
        if m:
            names.append(m.group(1)[1:-1])
    return names


def _tokens(expr: str) -> Iterator[tuple[str, str]]:
    """The identifiers and punctuation of expr, with everything else dropped."""
    i = 0
    while i < len(expr):
        c = expr[i]
        if c.isspace():
            i += 1
        elif c == "#":
            end = expr.find("\n", i)
            i = len(expr) if end < 0 else end
        elif c in "\"'`":
            i = _string_end(expr, i)
        elif c == "{":
            end = _closing(expr, i, "{", "}")
            for name in _names_in_matchers(expr[i + 1:end - 1]):
                yield _NAME, name
            i = end
        elif c == "[":
            # Ranges, subqueries and Grafana's [[var]] hold durations, never metrics.
            i = _closing(expr, i, "[", "]")
        elif c == "$":
            m = _GRAFANA_VAR.match(expr, i)
            i = m.end() if m else i + 1
        elif (c.isdigit() or c == ".") and (m := _NUMBER.match(expr, i)):
            i = m.end()
        elif m := _IDENT.match(expr, i):
            yield _IDENTIFIER, m.group()
            i = m.end()
        else:
            yield _PUNCT, c
            i += 1


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads, as written (so with any _bucket/_sum/_count)."""
    tokens = list(_tokens(expr))
    if tokens.count((_PUNCT, "(")) != tokens.count((_PUNCT, ")")):
        raise ValueError(f"unbalanced parentheses in {expr!r}")
    names: set[str] = set()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        followed_by_paren = i + 1 < len(tokens) and tokens[i + 1] == (_PUNCT, "(")
        i += 1
        if kind == _NAME:
            names.add(text)
        elif kind != _IDENTIFIER:
            continue
        elif text.lower() in _LABEL_LIST_KEYWORDS and followed_by_paren:
            depth = 0
            while i < len(tokens):
                if tokens[i] == (_PUNCT, "("):
                    depth += 1
                elif tokens[i] == (_PUNCT, ")"):
                    depth -= 1
                i += 1
                if depth == 0:
                    break
        elif text.lower() in _KEYWORDS or followed_by_paren:
            continue
        else:
            names.add(text)
    return names


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, rows and the panels collapsed inside them included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from iter_panels(panel)


def _variable_expr(query: str) -> str | None:
    """The PromQL a Grafana Prometheus variable query evaluates, or None if it reads no metric."""
    query = query.strip()
    m = re.fullmatch(r"(\w+)\s*\((.*)\)", query, re.S)
    if not m:
        return query
    func, args = m.group(1), m.group(2)
    if func == "label_values":
        parts = _split_top_level(args)
        # label_values(label) alone lists a label over every series: no metric named.
        return ",".join(parts[:-1]).strip() if len(parts) > 1 else None
    if func == "query_result":
        return args.strip()
    if func in ("label_names", "metrics"):
        return None
    return query


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) for every panel target, and ("variable <name>", expr) for query variables."""
    queries: list[tuple[str, str]] = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if expr:
                queries.append((panel.get("title", ""), expr))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        # Grafana 10+ may store the query as an object; older exports as a string.
        if isinstance(query, dict):
            query = query.get("query") or query.get("expr")
        expr = _variable_expr(query) if isinstance(query, str) and query.strip() else None
        if expr:
            queries.append((f"variable {variable.get('name', '')}", expr))
    return queries
