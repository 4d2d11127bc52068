"""Where each tailed file is: one JSON file per source, written tmp + fsync + rename.

Per file (``FileCheckpoint``)::

    file bytes:  [.......... offset | pending[0].end | pending[1].end ....... size]
                  in the spool ^      may be in the spool (intent)    unread ^
    seqs:        1 ........... seq    pending[0].last_seq ...

- ``offset``/``seq``: every line before ``offset`` is in the spool, as the
  records ``1..seq`` of ``stream_id``. It only moves over spooled lines.
- ``pending``: the cut points of records about to be appended, written
  *before* the append. After a crash they are re-created with the same byte
  ranges and the same seqs, whether or not the append happened, so the
  collector (dedupe by stream id and seq) stores each line once. Without
  them a restart would cut differently (the file grew meanwhile) and a
  record would half overlap one already stored.

Identity is ``(dev, ino)`` plus a CRC32C of the first ``fp_len`` bytes
(at most ``FINGERPRINT_BYTES``), so a reused inode is not taken for the old
file; ``fp_len`` reaches as far as ``offset`` and the pending cuts do (up to
``FINGERPRINT_BYTES``), taken from the bytes they hold (fingerprint.py).
``meta`` keeps what a decoder needs to resume (Docker's last time).
``carry`` (base64) holds the pieces of a line an older file of the same
group ended in (rotation.py): they are decoded before this file's byte 0 and
belong to the first record at ``offset``; it is emptied once that record is
in the spool.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("mltrail.agent.sources")

FINGERPRINT_BYTES = 1024
_VERSION = 1


@dataclass
class FileCheckpoint:
    stream_id: str
    path: str
    dev: int
    ino: int
    fp_len: int = 0
    fp_crc: int = 0
    offset: int = 0
    seq: int = 0
    pending: list[tuple[int, int]] = field(default_factory=list)  # (end offset, last seq)
    order: int = 0  # discovery order: breaks ties between files of one stream
    meta: dict[str, Any] = field(default_factory=dict)
    carry: str = ""  # base64: an older file's line pieces, decoded before this file

    def carry_bytes(self) -> bytes:
        return base64.b64decode(self.carry) if self.carry else b""

    def set_carry(self, raw: bytes) -> None:
        self.carry = base64.b64encode(raw).decode("ascii")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileCheckpoint:
        cp = cls(**{k: v for k, v in data.items() if k in _FIELDS})
        cp.pending = [(int(end), int(seq)) for end, seq in cp.pending]
        return cp


_FIELDS = set(FileCheckpoint.__dataclass_fields__)


class CheckpointStore:
    """Loads and saves one source's file positions; counts its writes."""

    def __init__(self, path: str | os.PathLike[str], fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.writes = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def load(self) -> tuple[bool, list[FileCheckpoint]]:
        """(existed, entries); an unreadable file is kept aside and reads as empty."""
        try:
            data = json.loads(self.path.read_bytes())
            entries = [FileCheckpoint.from_json(e) for e in data["files"]]
        except FileNotFoundError:
            return False, []
        except (ValueError, KeyError, TypeError) as exc:
            aside = self.path.with_name(self.path.name + ".corrupt")
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            log.error("checkpoint %s unreadable (%s): kept as %s; files are read again from "
                      "their start (the collector skips what it has only for known streams)",
                      self.path, exc, aside)
            return True, []
        return True, entries

    def save(self, entries: list[FileCheckpoint]) -> None:
        body = json.dumps({"version": _VERSION, "files": [asdict(e) for e in entries]},
                          separators=(",", ":")).encode()
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, body)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        if self.writes == 0 and self.fsync:  # the first rename: make the name durable too
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        self.writes += 1
