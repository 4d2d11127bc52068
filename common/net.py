"""Addresses and the ready file that tells a parent process where we listen."""

from __future__ import annotations

import json
import os
from pathlib import Path


def parse_hostport(value: str, what: str = "address") -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:PORT`` for IPv6); port 0 means any free port."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{what} {value!r} is not HOST:PORT (for example 127.0.0.1:7070)")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def write_ready_file(path: str | os.PathLike[str], info: dict[str, object]) -> None:
    """Write ``info`` as JSON atomically (tmp + fsync + rename)."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(info, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
