"""The artifact store: files kept content-addressed in a directory (``file://``).

Every artifact store (this one, ``artifacts_s3.S3ArtifactStore``) has the
methods of ``ArtifactStore``: ``prepare``, ``put_stream`` (content streamed
in, verified against its sha256 and size before it is kept), ``put``,
``read`` (streamed out) and ``url``; ``open_artifacts(url)`` picks one.

Layout: ``DIR/sha256/ab/abcdef...`` (the first two hex digits fan out the
directory). A file is written to a temporary name, fsynced and renamed, so a
crash leaves either nothing or the whole file, and a replay that writes the
same content again is harmless. The directory holding the new name (and the
parent of any directory just created) is fsynced too: only then does the file
survive a power loss, as the store row committed right after says it does.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path

from mltrail.common.errors import PermanentError


class ArtifactStore:
    def __init__(self, root: str | os.PathLike[str],
                 fsync: Callable[[int], None] = os.fsync) -> None:
        self.root = Path(root)
        self.url = f"file://{self.root}"
        self._fsync = fsync

    def prepare(self) -> None:
        """Create the directory, or say clearly why it cannot be used."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise PermanentError(
                f"artifact directory {self.root} is not writable ({exc.strerror}); "
                "nothing was stored; pass --artifacts DIR with a writable directory"
            ) from None

    def path_for(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Store ``data``; returns its sha256 hex."""
        digest = hashlib.sha256(data).hexdigest()
        self.put_stream([data], digest, len(data), "artifact")
        return digest

    def put_stream(self, pieces: Iterable[bytes], sha256: str, size: int, where: str) -> None:
        """Store the bytes of ``pieces`` under ``sha256``, one piece in memory at a time;
        kept only if they are ``size`` bytes with that sha256 (else PermanentError, and
        nothing is kept). Content that is already there is not written again."""
        target = self.path_for(sha256)
        if target.exists() and target.stat().st_size == size:
            return
        self._make_dirs(target.parent)
        tmp = target.with_name(f"{sha256}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                check = Verifier(where, sha256, size)
                for piece in pieces:
                    check.update(piece)
                    fh.write(piece)
                check.finish()
                fh.flush()
                self._fsync(fh.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, target)
        self._sync_dir(target.parent)

    def _make_dirs(self, directory: Path) -> None:
        """mkdir -p, syncing the parent of each directory created so its entry lasts."""
        missing = []
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for created in reversed(missing):
            created.mkdir(exist_ok=True)
            self._sync_dir(created.parent)

    def _sync_dir(self, directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._fsync(fd)
        finally:
            os.close(fd)

    def remove(self, sha256: str) -> None:
        """Delete a stored file (no run refers to it any more); a missing one is fine."""
        self.path_for(sha256).unlink(missing_ok=True)

    def read(self, sha256: str, chunk: int) -> Generator[bytes, None, None]:
        with open(self.path_for(sha256), "rb") as fh:
            while piece := fh.read(chunk):
                yield piece


class Verifier:
    """Checks streamed content against the size and sha256 its last chunk announced."""

    def __init__(self, where: str, sha256: str, size: int) -> None:
        self._where, self._sha256, self._size = where, sha256.lower(), size
        self._digest = hashlib.sha256()
        self.total = 0

    def update(self, piece: bytes) -> None:
        self._digest.update(piece)
        self.total += len(piece)

    def finish(self) -> None:
        if self.total != self._size:
            raise PermanentError(f"{self._where}: size mismatch: expected {self._size} bytes, "
                                 f"actual {self.total}")
        actual = self._digest.hexdigest()
        if actual != self._sha256:
            raise PermanentError(f"{self._where}: sha256 mismatch: expected {self._sha256}, "
                                 f"actual {actual}")


def contiguous(where: str, rows: Iterable[tuple[int, bytes]]) -> Iterator[bytes]:
    """The data of (offset, data) rows in offset order, refusing a missing chunk."""
    expected = 0
    for offset, data in rows:
        if offset != expected:
            raise PermanentError(f"{where}: chunk at offset {expected} is missing "
                                 f"(next chunk starts at {offset})")
        expected += len(data)
        yield bytes(data)


def open_artifacts(spec: str) -> ArtifactStore:
    """The artifact store named by ``spec``: ``s3://BUCKET/PREFIX[?endpoint=URL]``,
    ``file:///DIR``, or a plain directory path."""
    if spec.startswith("s3://"):
        from mltrail.collector.artifacts_s3 import S3ArtifactStore

        return S3ArtifactStore(spec)
    if "://" in spec and not spec.startswith("file://"):
        raise PermanentError(f"artifact store {spec!r} has an unknown scheme; nothing was "
                             "started; use a directory, file:///DIR or s3://BUCKET/PREFIX")
    return ArtifactStore(spec.removeprefix("file://"))
