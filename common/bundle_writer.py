"""BundleWriter: the zip every support bundle is (run, agent, collector).

Every file goes through the bundle's ``Redactor`` (text by value rules, JSON
by key names too) and through the size caps:

- ``max_file_bytes`` per file and ``max_bytes`` for the whole zip. A text file
  over its share keeps its head and, larger, its tail (the end of a log is
  where the error is) and loses its middle at line boundaries, with a marker
  line where the cut is; a binary file or a JSON document that does not fit
  is left out. Each cut or omission is listed in the manifest with why.
- Accounting is on uncompressed sizes plus each entry's zip overhead, so the
  zip is never larger than ``max_bytes`` whatever deflate achieves.

``close()`` writes ``README.txt`` and then ``manifest.json``: every file with
its size and sha256 (as stored, after redaction and cuts), the cuts, and the
redaction counts per file and rule. The manifest itself is the one file not
listed in itself.
"""

from __future__ import annotations

import datetime
import getpass
import hashlib
import io
import json
import platform
import socket
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from mltrail.common.redact import Redactor

DEFAULT_MAX_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_FILE_BYTES = 8 * 1024 * 1024
MIN_MAX_BYTES = 64 * 1024
_RESERVE = 48 * 1024  # kept for README.txt and manifest.json
_ENTRY_OVERHEAD = 128  # local header, central directory entry, data descriptor (plus name)
_TEXT_PIECE = 256 * 1024  # redaction works on pieces this large, not line by line
_DEFLATE_WORST = 1.001  # deflate grows incompressible data by at most 5 bytes per 16 KiB
HEAD_SHARE = 0.3  # of a cut text file: the rest is its tail


def mltrail_version() -> str:
    try:
        from importlib.metadata import version

        return version("mltrail")
    except Exception:  # not installed as a distribution (a source tree)
        return "unknown"


def who() -> dict[str, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return {"user": user, "host": socket.gethostname()}


@dataclass
class _Entry:
    name: str
    size: int
    sha256: str
    original_size: int


@dataclass
class BundleWriter:
    """Writes one bundle to ``target`` (a binary file object). Not thread-safe."""

    target: IO[bytes]
    kind: str  # "run", "agent", "collector"
    redactor: Redactor
    max_bytes: int = DEFAULT_MAX_BYTES
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    readme: str = ""
    summary: dict[str, Any] = field(default_factory=dict)  # the manifest's "summary"
    requested_by: dict[str, str] = field(default_factory=dict)
    entries: list[_Entry] = field(default_factory=list)
    cuts: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.max_bytes < MIN_MAX_BYTES:
            raise ValueError(f"--max-bytes must be at least {MIN_MAX_BYTES} (64 KiB) to hold "
                             f"the manifest and a summary: {self.max_bytes}")
        self._zip = zipfile.ZipFile(self.target, "w", zipfile.ZIP_DEFLATED, compresslevel=6)
        self._used = 0
        self._names: set[str] = set()
        self._closed = False
        self.created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")

    # -- room ----------------------------------------------------------------

    def room(self, name: str) -> int:
        """Bytes a file called ``name`` may still take."""
        reserve = _RESERVE + 256 * len(self.entries)  # the manifest grows with the files
        left = self.max_bytes - reserve - self._used - self._overhead(name)
        return max(0, min(self.max_file_bytes, int(left / _DEFLATE_WORST)))

    @staticmethod
    def _overhead(name: str) -> int:
        return _ENTRY_OVERHEAD + 2 * len(name.encode())

    def _unique(self, name: str) -> str:
        base, n = name, 1
        while name in self._names:
            n += 1
            stem, dot, ext = base.rpartition(".")
            name = f"{stem}-{n}.{ext}" if dot and "/" not in ext else f"{base}-{n}"
        self._names.add(name)
        return name

    # -- adding files ----------------------------------------------------------

    def add_json(self, name: str, value: Any, *, redact: bool = True) -> bool:
        """A JSON document, redacted by key names and values; left out whole if too big."""
        if redact:
            value = self.redactor.structure(value, name)
        data = (json.dumps(value, indent=2, sort_keys=False, default=str) + "\n").encode()
        return self.add_bytes(name, data)

    def add_text(self, name: str, text: str, *, redact: bool = True) -> bool:
        with self.text_file(name, redact=redact) as out:
            out.write(text)
        return True

    def text_file(self, name: str, *, redact: bool = True) -> TextFile:
        """A text file written piece by piece (a log stream): ``with w.text_file(n) as f``."""
        return TextFile(self, name, redact)

    def add_bytes(self, name: str, data: bytes, *, why: str = "") -> bool:
        """Stored as is (no redaction: artifacts, already-redacted parts); left out if too big."""
        name = self._unique(name)
        if len(data) > self.room(name):
            self.omit(name, len(data), why or "over the size cap")
            return False
        self._store(name, data, len(data))
        return True

    def add_file_object(self, name: str, fh: IO[bytes], size: int, why: str = "") -> bool:
        """A binary file of ``size`` bytes copied from ``fh`` without holding it in memory."""
        name = self._unique(name)
        if size > self.room(name):
            self.omit(name, size, why or "over the size cap")
            return False
        self._copy_in(name, fh, size)
        return True

    def _copy_in(self, name: str, fh: IO[bytes], size: int) -> None:
        digest = hashlib.sha256()
        with self._zip.open(name, "w", force_zip64=size > 1 << 30) as out:
            while piece := fh.read(1 << 20):
                digest.update(piece)
                out.write(piece)
        self._record(name, size, digest.hexdigest(), size)

    def omit(self, name: str, size: int, why: str) -> None:
        """Record in the manifest that ``name`` (``size`` bytes) is left out, and why."""
        self.cuts.append({"file": name, "action": "left out", "original_bytes": size,
                          "kept_bytes": 0, "why": why})

    def _store(self, name: str, data: bytes, original: int) -> None:
        self._zip.writestr(name, data)
        self._record(name, len(data), hashlib.sha256(data).hexdigest(), original)

    def _record(self, name: str, size: int, sha256: str, original: int) -> None:
        self._used += int(size * _DEFLATE_WORST) + 1 + self._overhead(name)
        self.entries.append(_Entry(name, size, sha256, original))

    def _store_cut(self, name: str, raw: IO[bytes], size: int, lines: int,
                   redact: bool) -> None:
        """Place a spooled text file: choose what fits, redact only that, cut again if
        redaction made it longer. Redacting what is kept, not the whole stream, keeps a
        bundle of a run with gigabytes of logs as quick as one with megabytes."""
        limit = self.room(name)
        spans = [(0, size)] if size <= limit else _keep_spans(raw, size, limit)
        with tempfile.SpooledTemporaryFile(max_size=4 << 20) as kept:
            junction = None  # where the first cut is in ``kept``
            for number, (start, end) in enumerate(spans):
                if number:
                    junction = kept.tell()
                self._copy_span(name, raw, start, end, kept, redact)
            kept_size = kept.tell()
            if junction is None and kept_size <= limit:
                kept.seek(0)
                self._copy_in(name, kept, kept_size)
                return
            self._store_with_marker(name, kept, kept_size, limit, junction, size, lines)

    def _copy_span(self, name: str, raw: IO[bytes], start: int, end: int, out: IO[bytes],
                   redact: bool) -> None:
        carry = b""
        keep = ""
        for piece in _read_span(raw, start, end, _TEXT_PIECE):
            data = carry + piece
            newline = data.rfind(b"\n")
            carry, data = (data[newline + 1:], data[:newline + 1]) if newline >= 0 else (data, b"")
            if not redact:
                out.write(data)
                continue
            text = keep + data.decode("utf-8", "surrogateescape")
            begin = self.redactor.open_key_block(text)
            keep = ""
            if begin >= 0 and len(text) - begin < 4 * _TEXT_PIECE:  # a key split across pieces
                text, keep = text[:begin], text[begin:]
            out.write(self.redactor.text(text, name).encode("utf-8", "surrogateescape"))
        rest = keep + carry.decode("utf-8", "surrogateescape") if redact else ""
        if redact:
            out.write(self.redactor.text(rest, name).encode("utf-8", "surrogateescape"))
        else:
            out.write(carry)

    def _store_with_marker(self, name: str, kept: IO[bytes], size: int, limit: int,
                           junction: int | None, original: int, lines: int) -> None:
        if size + 200 <= limit and junction is not None:
            head, tail = junction, junction
        else:
            head, tail, _ = _cut_points(kept, size, limit)
            if junction is not None:  # one cut, covering the first
                head, tail = min(head, junction), max(tail, junction)
        marker = (b"\n[mltrail bundle: lines cut from the middle of this file to fit the size "
                  b"cap; see manifest.json]\n")
        digest = hashlib.sha256()
        written = kept_lines = 0
        with self._zip.open(name, "w") as out:
            for part in (_read_span(kept, 0, head), [marker], _read_span(kept, tail, size)):
                for piece in part:
                    digest.update(piece)
                    out.write(piece)
                    written += len(piece)
                    kept_lines += piece.count(b"\n")
        self._record(name, written, digest.hexdigest(), original)
        self.cuts.append({"file": name, "action": "middle cut", "original_bytes": original,
                          "kept_bytes": written, "original_lines": lines,
                          "cut_lines": max(0, lines - (kept_lines - 2)),
                          "why": "over the size cap" if limit < self.max_file_bytes
                          else f"over the per-file cap of {self.max_file_bytes} bytes"})

    # -- the end ---------------------------------------------------------------

    def manifest(self) -> dict[str, Any]:
        return {
            "bundle": self.kind,
            "format": 1,
            "created": self.created,
            "created_by": {**who(), **self.requested_by},
            "mltrail_version": mltrail_version(),
            "python_version": sys.version.split()[0],
            "platform": platform.platform(),
            "max_bytes": self.max_bytes,
            "max_file_bytes": self.max_file_bytes,
            "summary": self.redactor.structure(self.summary, "manifest.json"),
            "files": [{"name": e.name, "size": e.size, "sha256": e.sha256}
                      for e in self.entries],
            "cuts": self.cuts,
            "redactions": {
                "total": self.redactor.total(),
                "by_file": self.redactor.report(),
                "extra_patterns": len(self.redactor.extra),
            },
        }

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        readme = self.readme or f"A support bundle of mltrail ({self.kind}).\n"
        self._store(self._unique("README.txt"), readme.encode(), len(readme))
        data = json.dumps(self.manifest(), indent=2).encode() + b"\n"
        self._zip.writestr("manifest.json", data)
        self._zip.close()


class TextFile:
    """A text file of the bundle, written in pieces and spooled raw; redacted and cut
    when it is placed (``BundleWriter._store_cut``)."""

    def __init__(self, writer: BundleWriter, name: str, redact: bool) -> None:
        self._writer = writer
        self.name = writer._unique(name)
        self._redact = redact
        self._spool = tempfile.SpooledTemporaryFile(max_size=4 << 20)  # noqa: SIM115
        self._size = 0
        self.lines = 0

    def write(self, text: str) -> None:
        data = text.encode("utf-8", "surrogateescape")
        self.lines += data.count(b"\n")
        self._spool.write(data)
        self._size += len(data)

    def write_lines(self, lines: Iterable[str]) -> None:
        self.write("".join(line + "\n" for line in lines))

    def __enter__(self) -> TextFile:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self._writer._store_cut(self.name, self._spool, self._size, self.lines,
                                        self._redact)
        finally:
            self._spool.close()


def _keep_spans(raw: IO[bytes], size: int, limit: int) -> list[tuple[int, int]]:
    """Head and tail of a file too long for ``limit``, at line boundaries, never
    starting or ending inside a private key block (which redaction must see whole)."""
    head_end, tail_start, _ = _cut_points(raw, size, limit)
    raw.seek(0)
    head = raw.read(head_end)
    begin = head.rfind(b"-----BEGIN ")
    if begin >= 0 and b"PRIVATE KEY" in head[begin:begin + 60] and head.find(b"-----END ",
                                                                            begin) < 0:
        head_end = head.rfind(b"\n", 0, begin) + 1
    raw.seek(tail_start)
    tail = raw.read(size - tail_start)
    end, begin = tail.find(b"-----END "), tail.find(b"-----BEGIN ")
    if end >= 0 and (begin < 0 or end < begin):
        newline = tail.find(b"\n", end)
        tail_start = size if newline < 0 else tail_start + newline + 1
    return [(0, head_end), (tail_start, size)]


def _cut_points(spool: IO[bytes], size: int, limit: int) -> tuple[int, int, int]:
    """(head end, tail start, lines cut): head and tail at line boundaries, within ``limit``."""
    room = max(0, limit - 200)  # the marker line
    head_end = _line_end_before(spool, int(room * HEAD_SHARE))
    tail_start = _line_start_after(spool, size - (room - head_end), size)
    tail_start = max(tail_start, head_end)
    spool.seek(head_end)
    cut = 0
    left = tail_start - head_end
    while left > 0:
        piece = spool.read(min(left, 1 << 20))
        if not piece:
            break
        cut += piece.count(b"\n")
        left -= len(piece)
    return head_end, tail_start, cut


def _line_end_before(spool: IO[bytes], at: int) -> int:
    """The end of the last whole line within the first ``at`` bytes (0: none)."""
    if at <= 0:
        return 0
    spool.seek(0)
    head = spool.read(at)
    newline = head.rfind(b"\n")
    return newline + 1 if newline >= 0 else 0


def _line_start_after(spool: IO[bytes], at: int, size: int) -> int:
    """The start of the first whole line at or after ``at`` (``size``: none)."""
    at = max(0, at)
    if at == 0:
        return 0
    spool.seek(at - 1)
    rest = spool.read(size - at + 1)
    newline = rest.find(b"\n")
    return at + newline if newline >= 0 else size


def _read_span(spool: IO[bytes], start: int, end: int, size: int = 1 << 20
               ) -> Iterable[bytes]:
    spool.seek(start)
    left = end - start
    while left > 0:
        piece = spool.read(min(left, size))
        if not piece:
            return
        left -= len(piece)
        yield piece


def read_bundle(data: bytes | IO[bytes]) -> tuple[zipfile.ZipFile, dict[str, Any]]:
    """Open a bundle and its manifest; ValueError when it is not one."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data)
        manifest = json.loads(archive.read("manifest.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ValueError(f"not an mltrail support bundle ({exc})") from None
    return archive, manifest
