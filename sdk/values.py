"""Queued items -> mltrail.v1 Records, built on the sender thread.

A logging call appends a small tuple ``(kind, run_id, time_ns, *payload)``
to the queue; building protobuf messages is left to the background thread so
the call stays within a few microseconds. ``build_record`` dispatches on
``kind`` through an explicit table and refuses an unknown kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mltrail.proto import records_pb2

Scalar = bool | int | float | str
QueueItem = tuple[Any, ...]

# Kinds of queued items (first element of the tuple).
SCALAR = "scalar"
LIST = "list"
ROW = "row"
TABLE = "table"
IMAGE = "image"
JSON = "json"
RUN_EVENT = "run_event"
LOG = "log"
ARTIFACT = "artifact"


def to_value(value: Scalar) -> records_pb2.Value:
    kind = type(value)
    if kind is float:
        return records_pb2.Value(number=value)
    if kind is bool:
        return records_pb2.Value(flag=value)
    if kind is int:
        return records_pb2.Value(integer=value)
    return records_pb2.Value(text=str(value))


def from_value(value: records_pb2.Value) -> Scalar | None:
    kind = value.WhichOneof("kind")
    return getattr(value, kind) if kind else None


def _scalar(name: str, description: str, value: Scalar, step: int | None) -> dict[str, Any]:
    scalar = records_pb2.Scalar(value=to_value(value))
    if step is not None:
        scalar.step = step
    return {"metric": records_pb2.Metric(name=name, description=description, scalar=scalar)}


def _list(name: str, description: str, values: Sequence[Scalar]) -> dict[str, Any]:
    data = records_pb2.ValueList(values=[to_value(v) for v in values])
    return {"metric": records_pb2.Metric(name=name, description=description, list=data)}


def _row(name: str, description: str, cells: Mapping[str, Scalar]) -> dict[str, Any]:
    row = records_pb2.Row(
        cells=[records_pb2.Cell(column=k, value=to_value(v)) for k, v in cells.items()]
    )
    return {"metric": records_pb2.Metric(name=name, description=description, row=row)}


def _table(name: str, description: str, columns: Mapping[str, Sequence[Scalar]]
           ) -> dict[str, Any]:
    table = records_pb2.Table(columns=[
        records_pb2.Column(name=k, values=[to_value(v) for v in vs]) for k, vs in columns.items()
    ])
    return {"metric": records_pb2.Metric(name=name, description=description, table=table)}


def _image(name: str, description: str, artifact_path: str) -> dict[str, Any]:
    image = records_pb2.ImageRef(artifact_path=artifact_path)
    return {"metric": records_pb2.Metric(name=name, description=description, image=image)}


def _json(name: str, description: str, schema_type: str, schema_version: str, text: str
          ) -> dict[str, Any]:
    doc = records_pb2.JsonMetric(schema_type=schema_type, schema_version=schema_version, json=text)
    return {"metric": records_pb2.Metric(name=name, description=description, json=doc)}


def _run_event(event: records_pb2.RunEvent) -> dict[str, Any]:
    return {"run_event": event}


def _log(chunk: records_pb2.LogChunk) -> dict[str, Any]:
    return {"log": chunk}


def _artifact(chunk: records_pb2.ArtifactChunk) -> dict[str, Any]:
    return {"artifact": chunk}


_BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {
    SCALAR: _scalar,
    LIST: _list,
    ROW: _row,
    TABLE: _table,
    IMAGE: _image,
    JSON: _json,
    RUN_EVENT: _run_event,
    LOG: _log,
    ARTIFACT: _artifact,
}


def build_record(item: QueueItem, seq: int) -> records_pb2.Record:
    """The Record for one queued item; an unknown kind is a bug, said plainly."""
    kind, run_id, time_ns, *payload = item
    builder = _BUILDERS.get(kind)
    if builder is None:
        raise ValueError(f"unknown queued item kind {kind!r}; known: {sorted(_BUILDERS)}")
    return records_pb2.Record(seq=seq, time_unix_nano=time_ns, run_id=run_id, **builder(*payload))


def item_size(item: QueueItem) -> int:
    """A cheap estimate of an item's encoded size, to cut batches by bytes."""
    kind = item[0]
    if kind == SCALAR:
        return 64
    if kind in (ARTIFACT, LOG):
        return len(item[3].data) + 64
    if kind == LIST:
        return 16 * len(item[5]) + 64
    if kind == TABLE:
        return 16 * sum(len(v) for v in item[5].values()) + 64
    if kind == JSON:
        return len(item[7]) + 64
    return 256
