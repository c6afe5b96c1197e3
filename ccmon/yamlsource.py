"""YAML read with its node tree, so validation errors can name the line they are about."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import yaml


def compose(text: str, where: str) -> tuple[Any, yaml.Node]:
    """The parsed document and its node tree; ValueError ``WHERE:LINE: not valid YAML: …`` when it is not YAML."""
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{where}{line}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    return raw, node if node is not None else yaml.compose("{}")


def line_of(node: Optional[yaml.Node], loc: tuple[Union[str, int], ...],
            aliases: Mapping[str, str] = {}) -> Optional[int]:
    """The 1-based line of the node at a pydantic error location (the deepest that exists); ``aliases`` maps
    field names to their YAML keys (``for_`` -> ``for``)."""
    if node is None:
        return None
    for part in loc:
        key = aliases.get(part, part) if isinstance(part, str) else part
        nxt = None
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if str(k.value) == str(key)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            nxt = node.value[key]
        if nxt is None:
            break
        node = nxt
    return node.start_mark.line + 1
