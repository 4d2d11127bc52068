"""Decoding log files of *entries*: CRI (``<time> <stream> <P|F> <msg>``) and
Docker's json-file (``{"log", "stream", "time"}`` per line).

Each file line is one entry of a stream (stdout, stderr) and may be a
*partial* piece of a longer line (CRI ``P``; Docker: ``log`` without a
trailing newline, every 16 KiB). ``EntryDecoder`` joins pieces per stream
up to the line limit (longer lines are split with the shared marker).

Cuts stay outside a partial sequence when they can: ``cut`` ends at the
last file line after which no stream has pieces waiting, so every record
holds whole lines and a restart (which starts at a cut) never sees a
continuation without its beginning. A sequence that does not end within one
read (a line far over the limit) is cut anyway: its pieces so far go out
with the split marker. Malformed file lines are kept as they are, on the
stream ``malformed_stream``, never dropped.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass

from mltrail.agent.sources.base import CUT, Chunk
from mltrail.common.lines import split_long_lines


@dataclass(frozen=True)
class Entry:
    stream: str  # "stdout" / "stderr" as the file names it
    content: bytes  # without the newline
    complete: bool  # False: a piece, the line goes on in the next entry of this stream
    time: bytes = b""  # the entry's timestamp as written (RFC 3339)


class EntryDecoder:
    """Shared by CRI and Docker; subclasses implement ``parse`` and ``may_have_partials``."""

    malformed_stream = "malformed"
    carries = True  # Docker rotates between two pieces of a line

    def __init__(self, prefix: str, limit: int) -> None:
        self.prefix = prefix
        self.limit = limit
        self.read_size = 2 * limit + 65536  # a limit-long line in pieces, with framing
        self.lines_split = 0
        self.lines_repaired = 0
        self.last_time = b""  # the newest entry time decoded (Docker's since= edge)
        self._cut_open: set[str] = set()  # streams whose line was cut before its end

    def parse(self, line: bytes) -> Entry | None:
        raise NotImplementedError

    def may_have_partials(self, data: bytes) -> bool:
        """A C-level check; True when ``data`` may hold a partial entry."""
        raise NotImplementedError

    def stream_name(self, stream: str) -> str:
        return f"{self.prefix}/{stream}" if self.prefix else stream

    # ---- cutting ---------------------------------------------------------------

    def cut(self, buf: bytes, final: bool) -> int:
        end = buf.rfind(b"\n") + 1
        if end == 0:
            return len(buf) if final or len(buf) >= self.read_size else 0
        if final or not self.may_have_partials(buf[:end]):
            return end
        safe = self._last_closed(buf, end)
        if safe == 0 and len(buf) >= self.read_size:
            return end  # a sequence longer than a read: cut it (marked as split)
        return safe

    def _last_closed(self, buf: bytes, end: int) -> int:
        """End of the last file line after which no stream has pieces waiting."""
        open_streams: set[str] = set()
        safe = 0
        pos = 0
        while pos < end:
            nl = buf.index(b"\n", pos)
            entry = self.parse(buf[pos:nl])
            pos = nl + 1
            if entry is not None:
                if entry.complete:
                    open_streams.discard(entry.stream)
                else:
                    open_streams.add(entry.stream)
            if not open_streams:
                safe = pos
        return safe

    # ---- decoding ----------------------------------------------------------------

    def decode(self, raw: bytes, final: bool) -> list[Chunk]:
        out: dict[str, list[bytes]] = {}
        pieces: dict[str, list[bytes]] = {}
        first_time = b""
        for line in raw.split(b"\n"):
            if not line:
                continue
            entry = self.parse(line)
            if entry is None:
                out.setdefault(self.malformed_stream, []).append(line)
                continue
            first_time = first_time or entry.time
            self.last_time = entry.time or self.last_time
            if not entry.complete:
                pieces.setdefault(entry.stream, []).append(entry.content)
                continue
            waiting = pieces.pop(entry.stream, None)
            if waiting:
                self.lines_repaired += 1
                waiting.append(entry.content)
                out.setdefault(entry.stream, []).append(b"".join(waiting))
            else:
                out.setdefault(entry.stream, []).append(entry.content)
        return self._chunks(out, pieces, final, _parse_time(first_time))

    def _chunks(self, out: dict[str, list[bytes]], pieces: dict[str, list[bytes]],
                final: bool, time_ns: int) -> list[Chunk]:
        chunks = []
        for stream in sorted(set(out) | set(pieces)):
            data = b"\n".join(out.get(stream, []))
            data = data + b"\n" if data or stream in out else b""
            going_on = stream in self._cut_open  # out's first line ends a line cut before
            if len(data) > self.limit:
                data, splits = split_long_lines(data, self.limit)
                self.lines_split += len(splits) - (going_on and 0 in splits)
            if stream in out:
                self._cut_open.discard(stream)
                going_on = False
            partial = False
            if stream in pieces:  # a sequence cut before its end
                rest, splits = split_long_lines(b"".join(pieces[stream]), self.limit)
                partial = final
                data += rest if final else rest + CUT
                if not going_on and (splits or not final):
                    self.lines_split += 1
                if not final:
                    self._cut_open.add(stream)
            name = stream if stream == self.malformed_stream else self.stream_name(stream)
            chunks.append(Chunk(name, data, partial=partial, time_ns=time_ns))
        return chunks


def _parse_time(stamp: bytes) -> int:
    """RFC 3339 with up to nanoseconds and Z or an offset -> ns since the epoch (0 if bad)."""
    text = stamp.decode("ascii", "replace")
    if len(text) < 20:
        return 0
    try:
        base = time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return 0
    rest = text[19:]
    frac = ""
    if rest.startswith("."):
        digits = len(rest) - len(rest[1:].lstrip("0123456789"))
        frac, rest = rest[1:digits], rest[digits:]
    offset = 0
    if rest[:1] in ("+", "-") and len(rest) >= 6:
        sign = 1 if rest[0] == "+" else -1
        offset = sign * (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60)
    seconds = calendar.timegm(base) - offset
    return seconds * 1_000_000_000 + int((frac + "000000000")[:9])

