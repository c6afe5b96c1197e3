"""The dead-letter record: what was rejected, why, and where it came from."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Optional

import msgspec


class DeadLetter(msgspec.Struct, omit_defaults=True):
    """One rejected input as published on ``<prefix>deadletter`` (JSON)."""

    reason: str
    detail: str
    stage: str  # "worker" (consumed from a topic) or "send" (refused by `ccmon send`)
    rejected_at: float
    source_topic: Optional[str] = None
    partition: Optional[int] = None
    offset: Optional[int] = None
    index: Optional[int] = None  # position inside a batch message
    line: Optional[int] = None  # line number for file input
    original: Optional[str] = None  # the original bytes when they are UTF-8
    original_base64: Optional[str] = None  # otherwise, base64
    original_size: Optional[int] = None  # set when the original was cut to MAX_ORIGINAL_BYTES: its full size...
    original_sha256: Optional[str] = None  # ...and its SHA-256, to find it in the source


# An original kept whole could exceed what a producer may send (1 MiB by default), and a dead letter that cannot be
# published would stall its partition forever; longer ones keep this much, with their size and hash.
MAX_ORIGINAL_BYTES = 256 * 1024


def make_dead_letter(raw: bytes, reason: str, detail: str, stage: str, **where: Optional[int | str]) -> DeadLetter:
    """Build a dead-letter record carrying the original bytes unchanged (the first MAX_ORIGINAL_BYTES of longer ones)."""
    cut: dict[str, object] = {}
    if len(raw) > MAX_ORIGINAL_BYTES:
        cut = {"original_size": len(raw), "original_sha256": hashlib.sha256(raw).hexdigest()}
        detail = f"{detail} (the original is {len(raw)} bytes; its first {MAX_ORIGINAL_BYTES} are kept here)"
        raw = raw[:MAX_ORIGINAL_BYTES]
    try:
        text, b64 = raw.decode("utf-8"), None
    except UnicodeDecodeError:
        text, b64 = None, base64.b64encode(raw).decode()
    return DeadLetter(
        reason=reason, detail=detail, stage=stage, rejected_at=round(time.time(), 3),
        original=text, original_base64=b64, **cut, **where,  # type: ignore[arg-type]
    )


def original_bytes(dl: DeadLetter) -> bytes:
    """The rejected input exactly as it arrived."""
    if dl.original_base64 is not None:
        return base64.b64decode(dl.original_base64)
    return (dl.original or "").encode()


encode = msgspec.json.encode
decode = msgspec.json.Decoder(DeadLetter).decode
