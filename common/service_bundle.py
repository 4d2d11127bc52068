"""What the agent's and the collector's own bundles share: the capture window.

``capture_window(writer, registry, seconds, snapshot)`` writes ``/metrics``
and ``snapshot()`` (a JSON-ready dict of the component's state) at the start
and at the end of one window of ``seconds``, so a reader sees what moved
(a spool growing, sends failing) rather than one instant. The settings go in
as loaded, through the redactor, never as the raw file.
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from mltrail.common import log_ring
from mltrail.common.bundle_writer import DEFAULT_MAX_BYTES, BundleWriter
from mltrail.common.redact import Redactor

MAX_WINDOW_SECONDS = 60.0
DEFAULT_WINDOW_SECONDS = 2.0


def window_seconds(query: str) -> float:
    """``seconds=N`` from a query string, within 0 and 60; ValueError names a bad one."""
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == "seconds" and value:
            try:
                seconds = float(value)
            except ValueError:
                raise ValueError(f"seconds={value!r} is not a number") from None
            if not 0 <= seconds <= MAX_WINDOW_SECONDS:
                raise ValueError(f"seconds must be within 0 and {MAX_WINDOW_SECONDS:g}: {value}")
            return seconds
    return DEFAULT_WINDOW_SECONDS


def service_bundle(kind: str, settings: Any, registry: CollectorRegistry,
                   snapshot: Callable[[], dict[str, Any]], seconds: float,
                   extra: Callable[[BundleWriter], None] | None = None,
                   readme: str = "") -> bytes:
    """The whole zip of an agent's or collector's bundle."""
    out = io.BytesIO()
    writer = BundleWriter(out, kind, Redactor(), max_bytes=DEFAULT_MAX_BYTES, readme=readme)
    started = time.time()
    metrics_start = generate_latest(registry).decode()
    state_start = snapshot()
    time.sleep(seconds)  # the capture window: what moves in it is the point
    metrics_end = generate_latest(registry).decode()
    state_end = snapshot()
    writer.add_json("settings.json", dataclasses.asdict(settings))
    writer.add_text("metrics-start.txt", metrics_start)
    writer.add_text("metrics-end.txt", metrics_end)
    writer.add_json("state-start.json", state_start)
    writer.add_json("state-end.json", state_end)
    if extra is not None:
        extra(writer)
    with writer.text_file("log.txt") as log_file:
        log_file.write_lines(log_ring.recent())
    writer.summary = {"window": {"start_unix": started, "seconds": seconds},
                      **summarize(state_start, state_end)}
    writer.close()
    return out.getvalue()


def summarize(start: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    """End state, plus how each number in ``start["numbers"]`` moved in the window."""
    numbers_start, numbers_end = start.get("numbers", {}), end.get("numbers", {})
    moved = {k: numbers_end[k] - v for k, v in numbers_start.items()
             if isinstance(v, int | float) and isinstance(numbers_end.get(k), int | float)}
    return {**{k: v for k, v in end.items() if k != "numbers"}, "numbers": numbers_end,
            "changed_in_window": {k: v for k, v in moved.items() if v}}


def registry_numbers(registry: CollectorRegistry, prefix: str = "mltrail_") -> dict[str, float]:
    """Counter and gauge samples as ``name{label=value}`` -> value (no histogram buckets)."""
    numbers: dict[str, float] = {}
    for family in registry.collect():
        if family.type not in ("counter", "gauge"):
            continue
        for sample in family.samples:
            if not sample.name.startswith(prefix) or sample.name.endswith("_created"):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            numbers[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return numbers


def support_route(build: Callable[[Any, float], bytes], component: Any
                  ) -> Callable[[str, str], tuple[int, str, bytes]]:
    """An HTTP route for ``/-/support?seconds=N`` answering the component's bundle."""

    def route(path: str, query: str) -> tuple[int, str, bytes]:
        try:
            seconds = window_seconds(query)
        except ValueError as exc:
            return 400, "text/plain; charset=utf-8", f"{exc}\n".encode()
        return 200, "application/zip", build(component, seconds)

    return route
