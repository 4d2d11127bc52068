"""A run's state as Azure ML v1 shows it: ``get_details()`` and the ``Run`` attributes.

Some of what v1 keeps in fields of its own travels in mltrail as reserved
tags and properties (no new record kind): the description is the tag
``mltrail.description``, a new display name the tag ``mltrail.display_name``
(the collector renames the run); the workspace, the submitter and the run
definition of a submitted script are the properties ``mltrail.workspace``,
``mltrail.submitted_by`` and ``mltrail.run_definition`` (JSON). They are
shown under v1's keys and left out of ``tags`` and ``properties``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from mltrail.proto import records_pb2
from mltrail.query.types import RunError, RunInfo, status_name, user_properties

DESCRIPTION_TAG = "mltrail.description"
DISPLAY_NAME_TAG = "mltrail.display_name"  # renames the run; the collector keeps no such tag
WORKSPACE_PROPERTY = "mltrail.workspace"
SUBMITTED_BY_PROPERTY = "mltrail.submitted_by"
RUN_DEFINITION_PROPERTY = "mltrail.run_definition"
# The tag `mltrail cancel` and ScriptRun.cancel set; a script's launcher watches for it.
CANCEL_TAG = "mltrail.cancel_requested"
RESERVED_TAGS = frozenset({DESCRIPTION_TAG, CANCEL_TAG})
# v1's run types; mltrail's own names for the others (interactive, child, offline).
V1_RUN_TYPES = {"script": "azureml.scriptrun"}


def user_tags(tags: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items() if k not in RESERVED_TAGS}


def run_type(info: RunInfo) -> str:
    return V1_RUN_TYPES.get(info.run_type, info.run_type)


def v1_details(info: RunInfo, log_files: dict[str, str]) -> dict[str, Any]:
    """``Run.get_details()``: v1's keys, in v1's order."""
    # The mltrail.* properties: RunInfo.from_pb keeps them apart, an offline fold does not.
    system = {**info.properties, **info.system_properties}
    definition = system.get(RUN_DEFINITION_PROPERTY)
    details: dict[str, Any] = {
        "runId": info.run_id, "target": "local", "status": info.status,
        "startTimeUtc": iso_time(info.start_time_unix_nano),
        "endTimeUtc": iso_time(info.end_time_unix_nano),
        "properties": user_properties(info.properties), "tags": user_tags(info.tags),
        "inputDatasets": [], "outputDatasets": [],
        "runDefinition": json.loads(definition) if definition else {},
        "logFiles": log_files,
        "submittedBy": system.get(SUBMITTED_BY_PROPERTY),
        "displayName": info.display_name,
        "description": info.tags.get(DESCRIPTION_TAG),
        "parentRunId": info.parent_run_id or None,
        "runType": run_type(info),
        "workspace": system.get(WORKSPACE_PROPERTY),
    }
    if details["endTimeUtc"] is None:
        del details["endTimeUtc"]  # v1: "This key does not exist if the run is still in progress"
    if info.error is not None:
        details["error"] = error_dict(info.error)
    return details


def fold_run_info(run_id: str, records: Iterable[records_pb2.Record]) -> RunInfo:
    """A run's state from its records (an offline run's spool), as the collector folds them."""
    state: dict[str, Any] = {"run_id": run_id, "experiment": "", "display_name": "",
                             "status": 0, "start_time_unix_nano": 0, "end_time_unix_nano": 0,
                             "tags": {}, "properties": {}, "parent_run_id": "",
                             "child_run_ids": [], "error": None, "run_type": "",
                             "log_lines": 0, "metric_records": 0, "artifacts": 0}
    for record in records:
        if record.run_id != run_id:
            if (record.HasField("run_event") and record.run_event.HasField("started")
                    and record.run_event.started.parent_run_id == run_id):
                state["child_run_ids"].append(record.run_id)
        elif record.HasField("run_event"):
            _apply_event(state, record)
    return RunInfo(**{**state, "status": status_name(state["status"])})


def _apply_event(state: dict[str, Any], record: records_pb2.Record) -> None:
    event = record.run_event
    kind = event.WhichOneof("event")
    ended = state["status"] in (records_pb2.COMPLETED, records_pb2.FAILED, records_pb2.CANCELED)
    if kind == "started":
        started = event.started
        for field in ("experiment", "display_name", "parent_run_id", "run_type"):
            state[field] = getattr(started, field) or state[field]
        state["start_time_unix_nano"] = record.time_unix_nano
        if not ended:
            state["status"] = 0 if started.registered else records_pb2.RUNNING
        state["tags"].update(started.tags)
        for key, value in started.properties.items():
            state["properties"].setdefault(key, value)
    elif kind == "tags":
        tags = dict(event.tags.tags)
        state["display_name"] = tags.pop(DISPLAY_NAME_TAG, state["display_name"])
        state["tags"].update(tags)
        for key in event.tags.removed:
            state["tags"].pop(key, None)
    elif kind == "properties":
        for key, value in event.properties.properties.items():
            state["properties"].setdefault(key, value)
    elif kind == "ended" and not ended:
        state["status"] = event.ended.status
        state["end_time_unix_nano"] = record.time_unix_nano
        error = event.ended.error
        if event.ended.HasField("error"):
            state["error"] = RunError(error.code, error.message, error.type, error.traceback,
                                      error.exit_code)


def iso_time(unix_nano: int) -> str | None:
    if not unix_nano:
        return None
    seconds, nanos = divmod(unix_nano, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos // 1000:06d}Z"


def error_dict(error: Any) -> dict[str, Any]:
    """Azure v1's ``error`` entry of ``get_details``."""
    return {"error": {"code": error.code, "message": error.message, "type": error.type,
                      "traceback": error.traceback, "exitCode": error.exit_code}}
