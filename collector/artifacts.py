"""The artifact store: files kept content-addressed in a directory.

Layout: ``DIR/sha256/ab/abcdef...`` (the first two hex digits fan out the
directory). A file is written to a temporary name, fsynced and renamed, so a
crash leaves either nothing or the whole file, and a replay that writes the
same content again is harmless.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Generator
from pathlib import Path

from mltrail.common.errors import PermanentError


class ArtifactStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

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
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{digest}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        return digest

    def read(self, sha256: str, chunk: int) -> Generator[bytes, None, None]:
        with open(self.path_for(sha256), "rb") as fh:
            while piece := fh.read(chunk):
                yield piece
