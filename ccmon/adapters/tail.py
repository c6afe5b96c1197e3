"""Follow a growing log file through rotation, with a durable position.

``LogTail.read()`` returns the complete lines that are new since the last call,
from one file at a time; the caller processes them, has them acknowledged (by
Kafka), and only then calls ``checkpoint(extra)``, which writes the position
file atomically (temp file, fsync, ``os.replace``). A restart therefore resumes
exactly after the last acknowledged line: nothing skipped, nothing repeated
(a repeat after a crash between the ack and the checkpoint is harmless anyway,
because the Asterisk mapper's event ids are derived from the line content).

Rotation:

- rename (logrotate's default; ``queue_log`` -> ``queue_log.1`` + a new file):
  the path now names another inode. The old file, still open, is read to its
  end, then the new file from its start. A restart that finds the path rotated
  looks for the old inode next to it (``queue_log.1``...) and finishes it first.
- copytruncate: the same inode shrinks below the position, or its first bytes
  (a fingerprint of up to 1 KiB kept with the position) changed because it was
  truncated and refilled between two looks: it is read again from the start.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Optional

POSITION_VERSION = 1
HEAD_BYTES = 1024  # how much of the file's start is fingerprinted to recognise a truncated-and-refilled file
READ_BYTES = 4 * 1024 * 1024  # per read() call: bounds a batch when catching up on a big file


@dataclass
class Line:
    """One complete line: where it came from (file and 1-based line number) and its bytes without the newline."""

    file: str
    number: int
    raw: bytes


def _head_digest(fh: BinaryIO, length: int) -> str:
    fh.seek(0)
    return hashlib.blake2b(fh.read(length), digest_size=16).hexdigest()


class LogTail:
    """A file reader that survives rename and copytruncate rotation and persists its position."""

    def __init__(self, path: Path, position_path: Path, *, from_end: bool = False) -> None:
        self.path = Path(path)
        self.position_path = Path(position_path)
        self.notes: list[str] = []  # what happened that an operator should know (rotations, losses)
        self.saved: dict[str, Any] = {}  # the caller's part of the loaded position ("extra")
        self._fh: Optional[BinaryIO] = None
        self._name = str(self.path)
        self._ident: Optional[tuple[int, int]] = None  # (st_dev, st_ino) of the open file
        self._offset = 0
        self._line = 0
        self._head_len = 0
        self._head = ""
        self._draining = False  # the open file was rotated away: read it to the end, then switch
        self._load(from_end)

    # ------------------------------------------------------------- position

    def _load(self, from_end: bool) -> None:
        pos = self._read_position()
        if pos is None:
            if self._open(self.path) and from_end:
                assert self._fh is not None
                self._fh.seek(0, os.SEEK_END)
                self._skip_to(self._fh.tell())
            return
        self.saved = pos.get("extra") or {}
        ident = (int(pos["dev"]), int(pos["inode"]))
        offset, line = int(pos["offset"]), int(pos["line"])
        head_len, head = int(pos["head_len"]), str(pos["head"])
        target = self._same_file(self.path, ident)
        if target is None:
            target = self._rotated(ident)
            if target is not None:
                self._draining = True
                self.notes.append(f"{self.path} was rotated while stopped; finishing {target} first")
        if target is None:
            if self.path.exists():
                self.notes.append(f"{self.path} was replaced while stopped and the old file is gone: lines written "
                                  f"to it after the saved position are lost; reading the new file from its start")
            self._open(self.path)
            return
        if not self._open(target):
            return
        assert self._fh is not None
        size = os.fstat(self._fh.fileno()).st_size
        if size < offset or (head_len and _head_digest(self._fh, head_len) != head):
            self.notes.append(f"{target} was truncated (copytruncate) while stopped; reading it from its start")
            self._fh.seek(0)
            return
        self._offset, self._line, self._head_len, self._head = offset, line, head_len, head
        self._fh.seek(offset)

    def _read_position(self) -> Optional[dict[str, Any]]:
        try:
            pos = json.loads(self.position_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the position file {self.position_path}: {exc}; "
                             f"delete it to start from the beginning of {self.path}") from None
        if pos.get("version") != POSITION_VERSION:
            raise ValueError(f"the position file {self.position_path} has version {pos.get('version')!r}, "
                             f"not {POSITION_VERSION}; delete it to start from the beginning")
        if pos.get("path") != str(self.path.resolve()):
            raise ValueError(f"the position file {self.position_path} belongs to {pos.get('path')}, "
                             f"not {self.path.resolve()}; pass another --position")
        return pos

    @staticmethod
    def _same_file(path: Path, ident: tuple[int, int]) -> Optional[Path]:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return path if (st.st_dev, st.st_ino) == ident else None

    def _rotated(self, ident: tuple[int, int]) -> Optional[Path]:
        """The rotated-away file with this identity next to the path (``queue_log.1``, ``queue_log-2026...``)."""
        try:
            entries = list(os.scandir(self.path.parent))
        except OSError:
            return None
        for entry in sorted(entries, key=lambda e: e.name):
            if not entry.name.startswith(self.path.name) or entry.name == self.path.name:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == ident:
                return Path(entry.path)
        return None

    def checkpoint(self, extra: Optional[dict[str, Any]] = None) -> None:
        """Durably record that every line ``read()`` returned so far is done (with the caller's ``extra`` state)."""
        if self._ident is None:
            return  # nothing opened yet: nothing read
        pos = {
            "version": POSITION_VERSION, "path": str(self.path.resolve()), "file": self._name,
            "dev": self._ident[0], "inode": self._ident[1], "offset": self._offset, "line": self._line,
            "head_len": self._head_len, "head": self._head, "saved_at": round(time.time(), 3),
            "extra": extra or {},
        }
        self.position_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.position_path.name + ".", suffix=".tmp",
                                   dir=self.position_path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(pos, fh, separators=(",", ":"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.position_path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        try:  # make the rename itself durable
            dfd = os.open(self.position_path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass

    # ---------------------------------------------------------------- files

    def _open(self, path: Path) -> bool:
        self.close()
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            return False
        st = os.fstat(fh.fileno())
        self._fh, self._name, self._ident = fh, str(path), (st.st_dev, st.st_ino)
        self._offset = self._line = self._head_len = 0
        self._head = ""
        return True

    def _skip_to(self, offset: int) -> None:
        self._offset = offset
        self._update_head()

    def _update_head(self) -> None:
        if self._head_len < HEAD_BYTES and self._offset > self._head_len and self._fh is not None:
            length = min(self._offset, HEAD_BYTES)
            here = self._fh.tell()
            self._head, self._head_len = _head_digest(self._fh, length), length
            self._fh.seek(here)

    def _truncated(self) -> bool:
        """The open file shrank below the position, or its start is no longer what was read."""
        assert self._fh is not None
        if os.fstat(self._fh.fileno()).st_size < self._offset:
            return True
        if self._head_len:
            here = self._fh.tell()
            changed = _head_digest(self._fh, self._head_len) != self._head
            self._fh.seek(here)
            return changed
        return False

    def _path_rotated(self) -> bool:
        """The path now names another file than the one open (a new file after a rename)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False  # renamed away and not recreated yet: keep reading the old one
        return (st.st_dev, st.st_ino) != self._ident

    # ----------------------------------------------------------------- read

    def read(self, final: bool = False) -> list[Line]:
        """The complete lines new since the last call, from one file; ``final``: also an unterminated last line."""
        if self._fh is None:
            if not self._open(self.path):
                return []
        if not self._draining and self._path_rotated():
            self._draining = True  # finish the old file before switching (it may still have unread lines)
            assert self._ident is not None
            moved = self._rotated(self._ident)
            self._name = str(moved) if moved is not None else f"{self._name} (rotated)"
        if not self._draining and self._truncated():
            self.notes.append(f"{self._name} was truncated (copytruncate); reading it from its start")
            assert self._fh is not None
            self._fh.seek(0)
            self._offset = self._line = self._head_len = 0
            self._head = ""
        lines = self._read_lines(final=final or self._draining)
        if self._draining and not lines:
            old = self._name
            self._draining = False
            if self._open(self.path):
                self.notes.append(f"{old} was rotated; now reading {self.path}")
            return self.read(final) if self._fh is not None else []
        return lines

    def _read_lines(self, final: bool) -> list[Line]:
        assert self._fh is not None
        self._fh.seek(self._offset)
        data = self._fh.read(READ_BYTES)
        if not data:
            return []
        end = data.rfind(b"\n") + 1  # through the last newline: an unterminated line may still be being written
        if final and len(data) < READ_BYTES:
            end = len(data)  # the writer is done with this file: its last line counts even without a newline
        elif end == 0:
            if len(data) < READ_BYTES:
                return []
            end = len(data)  # one line longer than a whole read: take it in pieces rather than stall
        chunk = data[:end]
        pieces = chunk.split(b"\n")
        if chunk.endswith(b"\n"):
            pieces.pop()  # split() leaves an empty piece after the last newline
        out = []
        for raw in pieces:
            self._line += 1
            out.append(Line(self._name, self._line, raw.rstrip(b"\r")))
        self._offset += end
        self._update_head()
        return out

    def at_end(self) -> bool:
        """Nothing left to read right now (no new bytes, no pending rotation)."""
        if self._fh is None:
            return not self.path.exists()
        return not self._draining and not self._path_rotated() and os.fstat(self._fh.fileno()).st_size <= self._offset

    @property
    def position(self) -> tuple[str, int, int]:
        """(file, byte offset, line number) of the next line to read."""
        return self._name, self._offset, self._line

    def close(self) -> None:
        """Close the open file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
