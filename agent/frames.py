"""The spool's on-disk format: CRC32C frames, positions and the ledger file.

A frame is ``[u32 length][u32 crc32c(payload)][payload]`` (little endian);
its payload is ``MAGIC | flags u8 | len(stream_id) u8 | first_seq u64 |
last_seq u64 | stream_id | batch``. MAGIC lets a scan find the next intact
frame after a damaged one. The ledger (``ledger.json``) holds the
acknowledged position and is replaced atomically (tmp + fsync + rename, then
the directory is fsynced).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import google_crc32c

log = logging.getLogger("mltrail.agent.spool")

MAGIC = b"MTS1"
FRAME_HEAD = struct.Struct("<II")  # payload length, crc32c of payload
PAYLOAD_HEAD = struct.Struct("<4sBBQQ")  # magic, flags, stream id length, first, last
FLAG_DROPPABLE = 1
MAX_FRAME_BYTES = 256 * 1024 * 1024  # a larger length field is corruption


class Position(NamedTuple):
    segment: int
    offset: int


@dataclass(frozen=True)
class SpoolFrame:
    start: Position
    end: Position
    stream_id: str
    first_seq: int
    last_seq: int
    droppable: bool
    batch: bytes

    @property
    def records(self) -> int:
        return self.last_seq - self.first_seq + 1

    @property
    def batch_size(self) -> int:
        """Length of the batch bytes, known from the positions even once they are dropped."""
        overhead = FRAME_HEAD.size + PAYLOAD_HEAD.size + len(self.stream_id.encode())
        return self.end.offset - self.start.offset - overhead

    def without_batch(self) -> SpoolFrame:
        """The frame's header only: what an in-flight request needs to keep."""
        return dataclasses.replace(self, batch=b"")


def encode_frame(
    stream_id: str, first_seq: int, last_seq: int, batch: bytes, droppable: bool = False
) -> bytes:
    sid = stream_id.encode()
    if not 0 < len(sid) <= 255:
        raise ValueError(f"stream id must be 1..255 bytes, got {len(sid)}")
    flags = FLAG_DROPPABLE if droppable else 0
    payload = PAYLOAD_HEAD.pack(MAGIC, flags, len(sid), first_seq, last_seq) + sid + batch
    return FRAME_HEAD.pack(len(payload), google_crc32c.value(payload)) + payload


def _decode_payload(payload: bytes, start: Position) -> SpoolFrame:
    magic, flags, sid_len, first, last = PAYLOAD_HEAD.unpack_from(payload)
    body = PAYLOAD_HEAD.size + sid_len
    if magic != MAGIC or len(payload) < body:
        raise ValueError("bad payload header")
    end = Position(start.segment, start.offset + FRAME_HEAD.size + len(payload))
    return SpoolFrame(
        start, end, payload[PAYLOAD_HEAD.size : body].decode(errors="replace"),
        first, last, bool(flags & FLAG_DROPPABLE), payload[body:],
    )


def parse_frame(data: bytes | memoryview, offset: int, segment: int = 0) -> SpoolFrame | None:
    """The intact frame at ``offset`` of ``data``, or None (torn or corrupt)."""
    if offset + FRAME_HEAD.size > len(data):
        return None
    length, crc = FRAME_HEAD.unpack_from(data, offset)
    start = offset + FRAME_HEAD.size
    if length < PAYLOAD_HEAD.size or length > MAX_FRAME_BYTES or start + length > len(data):
        return None
    payload = bytes(data[start : start + length])
    if google_crc32c.value(payload) != crc:
        return None
    try:
        return _decode_payload(payload, Position(segment, offset))
    except (ValueError, struct.error):
        return None


def find_next_frame(data: bytes, offset: int, segment: int = 0) -> int | None:
    """Offset of the first intact frame after ``offset`` (resync after damage)."""
    probe = offset + 1
    while True:
        hit = data.find(MAGIC, probe + FRAME_HEAD.size)
        if hit < 0:
            return None
        candidate = hit - FRAME_HEAD.size
        if parse_frame(data, candidate, segment) is not None:
            return candidate
        probe = candidate + 1


def damaged_headers(data: bytes, start: int, end: int) -> list[tuple[str, int, int]]:
    """(stream id, first seq, last seq) of each frame in the damaged ``data[start:end]``
    whose payload header can still be read (its CRC fails: the seqs are a best reading)."""
    found = []
    hit = data.find(MAGIC, start + FRAME_HEAD.size, end)
    while hit >= 0:
        if hit + PAYLOAD_HEAD.size <= len(data):
            _, _, sid_len, first, last = PAYLOAD_HEAD.unpack_from(data, hit)
            sid_end = hit + PAYLOAD_HEAD.size + sid_len
            if sid_len and 1 <= first <= last < first + (1 << 40) and sid_end <= len(data):
                sid = data[hit + PAYLOAD_HEAD.size : sid_end].decode(errors="replace")
                found.append((sid, first, last))
        hit = data.find(MAGIC, hit + 1, end)
    return found


def shift_frame(frame: SpoolFrame, start: Position) -> SpoolFrame:
    """``frame`` parsed at offset 0 of a buffer, placed at ``start`` in the spool."""
    length = frame.end.offset - frame.start.offset
    return SpoolFrame(start, Position(start.segment, start.offset + length), frame.stream_id,
                      frame.first_seq, frame.last_seq, frame.droppable, frame.batch)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_ledger(directory: Path) -> Position:
    """The acknowledged position; (0, 0) when there is none or it is unreadable."""
    path = directory / "ledger.json"
    try:
        data = json.loads(path.read_text())
        return Position(int(data["segment"]), int(data["offset"]))
    except FileNotFoundError:
        return Position(0, 0)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("spool ledger %s unreadable (%s): resending from the oldest segment",
                    path, exc)
        return Position(0, 0)


def write_ledger(directory: Path, position: Position) -> None:
    path = directory / "ledger.json"
    tmp = path.with_name("ledger.json.tmp")
    with open(tmp, "w") as fh:
        json.dump({"segment": position.segment, "offset": position.offset}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(directory)


def append_dead_index(dead_dir: Path, start: Position, reason: str) -> None:
    """Note a dead-lettered frame's position (fsynced: a crash must not resend it)."""
    line = json.dumps({"segment": start.segment, "offset": start.offset, "reason": reason})
    with open(dead_dir / "index.jsonl", "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_dead_index(dead_dir: Path, ack: Position) -> dict[Position, str]:
    """Dead-lettered frames at or after ``ack``: their gap records are still to be sent."""
    found: dict[Position, str] = {}
    try:
        lines = (dead_dir / "index.jsonl").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return found
    for line in lines:
        try:
            entry = json.loads(line)
            position = Position(int(entry["segment"]), int(entry["offset"]))
        except (ValueError, KeyError, TypeError):  # a torn last line
            continue
        if position >= ack:
            found[position] = str(entry.get("reason", ""))
    return found
