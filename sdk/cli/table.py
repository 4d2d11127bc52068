"""Plain-text output for the read commands: aligned tables, local times, durations, and
``printable``, the one escape of stored text before a terminal sees it."""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

_RAW_IN_JSON = re.compile(r"[\x7f-\x9f]")  # what json.dumps leaves raw in a string
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def printable(text: str, keep: str = "", *, json_text: bool = False) -> str:
    """``text`` with every control character (C0, DEL, C1) but those in ``keep`` written
    out visibly (``\\x1b``, ``\\r``, ``\\x00``), so stored bytes never drive the terminal
    (an escape sequence shows as ``\\x1b[2J``, not a cleared screen). ``json_text``: the
    text is JSON from ``json.dumps(ensure_ascii=False)``, which escapes C0 itself; DEL and
    C1 become ``\\u007f``..``\\u009f``, so the JSON stays valid and means the same."""
    if json_text:
        if _RAW_IN_JSON.search(text) is None:
            return text
        return _RAW_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    pattern = _controls_but(keep)
    if pattern.search(text) is None:
        return text
    return pattern.sub(_escaped, text)


@functools.cache
def _controls_but(keep: str) -> re.Pattern[str]:
    """The control characters not in ``keep`` (a kept line break costs no callback)."""
    wanted = "".join(chr(c) for c in [*range(0x20), *range(0x7f, 0xa0)] if chr(c) not in keep)
    return re.compile(f"[{re.escape(wanted)}]")


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or f"\\x{ord(char):02x}"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell, two spaces apart; the last is not padded."""
    cells = [[printable(str(h)) for h in headers]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)


def render_fields(pairs: Sequence[tuple[str, Any]]) -> str:
    """``Key:   value`` lines, values aligned; multi-line values indented under theirs."""
    width = max((len(k) for k, _ in pairs), default=0) + 2
    lines = []
    for key, value in pairs:
        text = _cell(value, one_line=False).splitlines() or [""]
        lines.append(f"{printable(key) + ':':<{width}}{text[0]}".rstrip())
        lines.extend(f"{'':<{width}}{more}".rstrip() for more in text[1:])
    return "\n".join(lines)


def _cell(value: Any, one_line: bool = True) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else compact_json(value)
    return printable(text, "" if one_line else "\n")


def compact_json(value: Any) -> str:
    if isinstance(value, float | int | bool | str) or value is None:
        return json.dumps(value) if not isinstance(value, str) else value
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=False, default=str)


def shorten(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def local_time(unix_nano: int) -> str | None:
    """``2026-11-28 05:12:03`` in the local time zone; None when unset."""
    if not unix_nano:
        return None
    return datetime.fromtimestamp(unix_nano / 1e9).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def iso_time(unix_nano: int) -> str | None:
    """ISO 8601 with the UTC offset, for JSON; None when unset."""
    if not unix_nano:
        return None
    return datetime.fromtimestamp(unix_nano / 1e9).astimezone().isoformat(timespec="milliseconds")


def human_duration(seconds: float) -> str:
    """``850ms``, ``12.3s``, ``4m 05s``, ``2h 03m``, ``3d 04h``."""
    if seconds < 0:
        seconds = 0.0
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def run_duration(start_nano: int, end_nano: int, now_nano: int | None = None) -> str | None:
    """Start to end, or to now for a run still going; None when it never started."""
    if not start_nano:
        return None
    end = end_nano or (now_nano if now_nano is not None else time.time_ns())
    return human_duration((end - start_nano) / 1e9)


def human_size(size: int) -> str:
    """``512 B``, ``1.5 KiB``, ``3.0 MiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # not reached
