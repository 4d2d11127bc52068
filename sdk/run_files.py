"""A run's files: uploads and downloads, images, and the folders v1 uploads by itself.

Artifacts travel as 1 MiB ``ArtifactChunk`` records on the run's stream,
the last one carrying the file's sha256 and size. ``datastore_name`` is
accepted on uploads and ignored (mltrail has one artifact store).
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import itertools
import os
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mltrail import validation as v
from mltrail.pipeline.values import ARTIFACT, IMAGE
from mltrail.proto import records_pb2

if TYPE_CHECKING:
    from mltrail.pipeline.link import Link

# v1's (azureml/_project/ignore_file.py): never part of a snapshot
DEFAULT_IGNORED = (".ipynb_checkpoints", "azureml-logs", ".azureml", ".git", "outputs",
                   "azureml-setup", "docs")
SNAPSHOT_MAX_BYTES = 300 * 2**20
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"


class RunFiles:
    """The file calls of ``Run`` (a mixin: ``Run`` provides the link and the id)."""

    _id: str
    _link: Link
    _enqueue: Callable[[tuple[Any, ...]], None]
    _image_counts: dict[str, itertools.count[int]]

    def log_image(self, name: str, path: str | os.PathLike[str] | IO[bytes] | None = None,
                  plot: Any = None, description: str = "") -> None:
        """An image file (any format matplotlib or Pillow reads), a binary stream, or a
        matplotlib figure (``plot``): exactly one. PNG and JPEG are kept as they are;
        other formats are converted to PNG."""
        v.check_name(name)
        description = v.check_description(description)
        data, ext = _image_bytes(path, plot)
        counter = self._image_counts.setdefault(name, itertools.count(1))
        artifact = f"images/{name.replace('/', '_')}/{next(counter)}.{ext}"
        content_type = "image/png" if ext == "png" else "image/jpeg"
        self._upload_stream(v.check_artifact_name(artifact), io.BytesIO(data), content_type)
        self._enqueue((IMAGE, self._id, time.time_ns(), name, description, artifact))

    def upload_file(self, name: str, path_or_stream: str | os.PathLike[str] | IO[bytes],
                    datastore_name: str | None = None) -> None:
        """Upload a file (or a binary stream) as artifact ``name``, in 1 MiB chunks."""
        artifact = v.check_artifact_name(name)
        if isinstance(path_or_stream, str | os.PathLike):
            if not os.path.isfile(path_or_stream):
                raise ValueError(f"path_or_stream {os.fspath(path_or_stream)!r} is not a file")
            with open(path_or_stream, "rb") as fh:
                self._upload_stream(artifact, fh)
        elif hasattr(path_or_stream, "read"):
            self._upload_stream(artifact, path_or_stream)
        else:
            raise TypeError("path_or_stream must be a path or a binary stream, "
                            f"got {type(path_or_stream).__name__}")

    def upload_files(self, names: Sequence[str], paths: Sequence[str | os.PathLike[str]],
                     return_artifacts: bool = False, timeout_seconds: float | None = None,
                     datastore_name: str | None = None) -> None:
        """Upload each of ``paths`` as the artifact of the same place in ``names``."""
        names, paths = list(names), list(paths)
        if len(names) != len(paths):
            raise ValueError(f"upload_files takes as many names as paths, got {len(names)} "
                             f"names and {len(paths)} paths")
        missing = [os.fspath(p) for p in paths if not os.path.isfile(p)]
        if missing:
            raise ValueError(f"upload_files: not files: {missing}; nothing was uploaded")
        for name, path in zip(names, paths, strict=True):
            self.upload_file(name, path)

    def upload_folder(self, name: str, path: str | os.PathLike[str],
                      datastore_name: str | None = None) -> None:
        """Upload every file under ``path`` as ``name/<relative path>``."""
        prefix = v.check_artifact_name(name)
        root = Path(path)
        if not root.is_dir():
            raise ValueError(f"path {os.fspath(path)!r} is not a directory")
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            self.upload_file(f"{prefix}/{file.relative_to(root).as_posix()}", file)

    def _upload_stream(self, artifact: str, stream: IO[bytes], content_type: str = "") -> None:
        """Chunks of 1 MiB; the last one carries the file's sha256 and size."""
        digest, offset, chunk = hashlib.sha256(), 0, stream.read(v.UPLOAD_CHUNK_BYTES)
        if isinstance(chunk, str):
            raise TypeError("path_or_stream must be opened in binary mode ('rb')")
        while True:
            following = stream.read(v.UPLOAD_CHUNK_BYTES) if chunk else b""
            digest.update(chunk)
            piece = records_pb2.ArtifactChunk(path=artifact, offset=offset, data=chunk,
                                              content_type=content_type)
            if not following:
                piece.last, piece.sha256, piece.size = True, digest.hexdigest(), offset + len(chunk)
            self._enqueue((ARTIFACT, self._id, time.time_ns(), piece))
            if piece.last:
                return
            offset += len(chunk)
            chunk = following

    def get_file_names(self) -> list[str]:
        return self._link.reader().file_names(self._id)

    def download_file(self, name: str, output_file_path: str | os.PathLike[str] | None = None,
                      _validate_checksum: bool = False) -> None:
        target = output_file_path if output_file_path is not None else Path(name).name
        self._link.reader().download_file(self._id, name, target)

    def download_files(self, prefix: str | None = None, output_directory: str | None = None,
                       output_paths: Sequence[str] | None = None, batch_size: int = 100,
                       append_prefix: bool = True, timeout_seconds: float | None = None
                       ) -> None:
        """Every file whose name starts with ``prefix`` into ``output_directory`` (or the
        current one), keeping the path under the prefix unless ``append_prefix=True``,
        which keeps the whole name; or into ``output_paths``, one per file in name order."""
        reader = self._link.reader()
        names = [n for n in reader.file_names(self._id) if n.startswith(prefix or "")]
        if output_paths is not None and len(output_paths) != len(names):
            raise ValueError(f"output_paths names {len(output_paths)} paths for {len(names)} "
                             f"files under prefix {prefix!r}")
        for index, name in enumerate(names):
            if output_paths is not None:
                target = Path(output_paths[index])
            else:
                kept = name if append_prefix or not prefix else name[len(prefix):].lstrip("/")
                target = Path(output_directory or ".") / kept
            target.parent.mkdir(parents=True, exist_ok=True)
            reader.download_file(self._id, name, target)

    def take_snapshot(self, file_or_folder_path: str | os.PathLike[str]) -> str:
        """Upload the source (a file or a folder) as ``snapshot/...``; returns the snapshot
        id. As v1: ``.amlignore`` (else ``.gitignore``) and v1's default patterns
        (``.azureml``, ``outputs``, ``.git``, ...) are left out, and at most 300 MB."""
        root = Path(file_or_folder_path)
        if root.is_file():
            files = [(root.name, root)]
        elif root.is_dir():
            files = snapshot_files(root)
        else:
            raise ValueError(f"snapshot path {os.fspath(root)!r} is neither a file nor a folder")
        size = sum(path.stat().st_size for _, path in files)
        if size > SNAPSHOT_MAX_BYTES:
            raise ValueError(f"the snapshot of {os.fspath(root)!r} is {size / 2**20:.0f} MB, over "
                             f"the {SNAPSHOT_MAX_BYTES // 2**20} MB limit; nothing was uploaded: "
                             "leave large files out with a .amlignore file")
        for name, path in files:
            self.upload_file(f"snapshot/{name}", path)
        return self._id

    def get_snapshot_id(self) -> str | None:
        names = self._link.reader().file_names(self._id)
        return self._id if any(n.startswith("snapshot/") for n in names) else None

    def restore_snapshot(self, snapshot_id: str | None = None, path: str | None = None) -> str:
        """The snapshot as ``<path>/<snapshot id>.zip`` (default: the temp directory)."""
        if snapshot_id not in (None, self._id):
            raise ValueError(f"run {self._id} has no snapshot {snapshot_id!r}; its snapshot id "
                             f"is {self._id!r}")
        reader = self._link.reader()
        names = [n for n in reader.file_names(self._id) if n.startswith("snapshot/")]
        if not names:
            raise ValueError(f"run {self._id} has no snapshot (submit takes one; "
                             "take_snapshot(path) adds one)")
        directory = Path(path if path is not None else tempfile.gettempdir())
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"{self._id}.zip"
        with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(target, "w") as archive:
            for name in names:
                local = Path(tmp) / "file"
                reader.download_file(self._id, name, local)
                archive.write(local, name.removeprefix("snapshot/"))
        return str(target)

    def _upload_run_folders(self, directory: str | os.PathLike[str]) -> None:
        """v1: files left in ``./outputs`` and ``./logs`` are uploaded when the run ends."""
        for folder in ("outputs", "logs"):
            path = Path(directory) / folder
            if path.is_dir():
                self.upload_folder(folder, path)


def snapshot_files(root: Path) -> list[tuple[str, Path]]:
    """The files of ``root`` a snapshot keeps, by name relative to it."""
    patterns = list(DEFAULT_IGNORED)
    for ignore_file in (".amlignore", ".gitignore"):
        if (root / ignore_file).is_file():
            text = (root / ignore_file).read_text(encoding="utf-8", errors="replace")
            patterns += [p.strip() for p in text.splitlines()
                         if p.strip() and not p.startswith(("#", "!"))]
            break
    kept = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        if not any(_ignored(name, pattern) for pattern in patterns):
            kept.append((name, path))
    return kept


def _ignored(name: str, pattern: str) -> bool:
    """A gitignore pattern: ``/x`` from the root, ``x`` anywhere, ``x/`` a directory."""
    pattern = pattern.rstrip("/")
    parts = name.split("/")
    if pattern.startswith("/"):
        pattern = pattern[1:]
        depth = pattern.count("/") + 1
        return fnmatch.fnmatch("/".join(parts[:depth]), pattern)
    if "/" in pattern:
        return fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(name, pattern + "/*")
    return any(fnmatch.fnmatch(part, pattern) for part in parts)


def _image_bytes(path: Any, plot: Any) -> tuple[bytes, str]:
    if (path is None) == (plot is None):
        raise ValueError("log_image takes exactly one of path (an image file or a binary "
                         "stream) or plot (a matplotlib figure)")
    if plot is not None:
        if not callable(getattr(plot, "savefig", None)):
            raise TypeError(f"plot must be a matplotlib figure (or pyplot), got "
                            f"{type(plot).__name__}")
        buffer = io.BytesIO()
        plot.savefig(buffer, format="png")
        return buffer.getvalue(), "png"
    if hasattr(path, "read"):
        data = path.read()
        if not isinstance(data, bytes):
            raise TypeError("path must be a binary stream ('rb'), got text")
        where = "the stream"
    else:
        if not os.path.isfile(path):
            raise ValueError(f"path {os.fspath(path)!r} is not a file")
        data, where = Path(path).read_bytes(), repr(os.fspath(path))
    if data.startswith(_PNG):
        return data, "png"
    if data.startswith(_JPEG):
        return data, "jpg"
    return _as_png(data, where), "png"


def _as_png(data: bytes, where: str) -> bytes:
    """Another image format, through Pillow (which matplotlib brings) as PNG."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ValueError(f"{where} is not a PNG or JPEG image, and Pillow (to convert other "
                         "formats) is not installed") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            out = io.BytesIO()
            image.save(out, format="PNG")
            return out.getvalue()
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{where} is not an image Pillow can read ({exc})") from None
