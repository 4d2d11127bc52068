"""Asking the collector for a run's bundle: what ``run.get_support_bundle`` and
``mltrail bundle RUN`` share."""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mltrail.common.errors import PermanentError


def requester(via: str) -> dict[str, str]:
    """Who asks for a bundle, for its manifest."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return {"user": user, "host": socket.gethostname(), "via": via}


def save_run_bundle(reader: Any, run_id: str, path: str | os.PathLike[str], *,
                    with_artifacts: bool = False, max_bytes: int | None = None,
                    redact: Iterable[str] = (), via: str = "run.get_support_bundle") -> Path:
    """Write the run's bundle to ``path`` through ``reader`` (the run's way back)."""
    client = getattr(reader, "client", None)
    if client is None or not hasattr(client, "download_run_bundle"):
        raise PermanentError(
            f"run {run_id!r} is offline: no collector holds it, so none can build its bundle; "
            f"upload it with `mltrail sync`, then ask again")
    if max_bytes is not None and max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive: {max_bytes}")
    with client:
        return Path(client.download_run_bundle(
            run_id, path, with_artifacts=with_artifacts, max_bytes=max_bytes or 0,
            redact=list(redact), requested_by=requester(via)))
