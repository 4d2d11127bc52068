"""The artifact store: files kept content-addressed in a directory.

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
from collections.abc import Callable, Generator
from pathlib import Path

from mltrail.common.errors import PermanentError


class ArtifactStore:
    def __init__(self, root: str | os.PathLike[str],
                 fsync: Callable[[int], None] = os.fsync) -> None:
        self.root = Path(root)
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
        target = self.path_for(digest)
        if target.exists() and target.stat().st_size == len(data):
            return digest
        self._make_dirs(target.parent)
        tmp = target.with_name(f"{digest}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            self._fsync(fh.fileno())
        os.replace(tmp, target)
        self._sync_dir(target.parent)
        return digest

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
