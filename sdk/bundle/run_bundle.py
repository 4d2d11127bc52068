"""A run's support bundle, read through the Query client's public calls.

The collector builds it (``Query.GetRunBundle`` runs ``write_run_bundle``
against its own Query service), so ``mltrail bundle``, ``run.get_support_bundle``
and any gRPC client get the same zip. Layout::

    manifest.json            versions, who and when, every file (size, sha256), cuts, redactions
    README.txt               what is where, for the person who opens it
    run.json                 details: status, times, counts, parent, children
    tags.json properties.json error.json
    environment.json         what the SDK saw at the run's start
    metrics/index.json       name -> kind, records, files
    metrics/<name>.jsonl     one line per call: time, kind, step, value
    metrics/<name>.csv       the same as a table
    logs/index.json          stream -> lines, file
    logs/<stream>.txt        the stream's lines in the order written
    artifacts.json           path, size, sha256, content type
    artifacts/<path>         only with --with-artifacts
    agent/...                the delivering agent's bundle, when it answers
    children/<run id>/...    each child run, the same layout
"""

from __future__ import annotations

import collections
import contextlib
import csv
import io
import json
import re
import tempfile
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby
from operator import attrgetter
from typing import Any

from mltrail.common.bundle_writer import BundleWriter, TextFile, read_bundle
from mltrail.common.errors import MltrailError
from mltrail.proto import collector_pb2
from mltrail.query.client import QueryClient
from mltrail.query.metrics_view import metric_kind, metric_to_python
from mltrail.query.types import RunInfo

from .environment import PROPERTY as ENVIRONMENT_PROPERTY

MAX_DEPTH = 16  # child runs below this are listed, not bundled
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")

README = """\
mltrail support bundle of run {run_id} ({status})

Start with manifest.json ("summary": status, error, counts; "cuts": what was
shortened to fit the size cap; "redactions": how many secrets were replaced,
per file). `mltrail bundle inspect THIS.zip` prints the same summary.

run.json, tags.json, properties.json, error.json   the run as the collector has it
environment.json    Python, platform, packages, CPU/GPU, mltrail settings at the run's start
metrics/            one .jsonl and one .csv per metric (index.json maps names to files)
logs/               every log stream as plain text, lines in the order written
artifacts.json      the run's files (name, size, sha256); artifacts/ holds them
                    only when the bundle was made with --with-artifacts
agent/              the bundle of the agent that delivered the run, if it answered
children/           child runs, each laid out like this one

Secrets (tokens, passwords, keys, credentials in URLs, values of settings
and variables whose names look secret) are replaced by [REDACTED:<rule>].
No configuration file is copied in raw. A file marked as cut in the manifest
lost its middle; its head and its end are kept.
"""


@dataclass(frozen=True)
class RunBundleOptions:
    with_artifacts: bool = False
    agent_seconds: float = 2.0  # capture window of the agent's bundle
    agent_timeout: float = 10.0


def write_run_bundle(client: QueryClient, run_id: str, writer: BundleWriter,
                     options: RunBundleOptions = RunBundleOptions()) -> None:
    """Fill ``writer`` with the run, its children and its agent; raises RunNotFound."""
    info = client.get_run(run_id)
    counts = _RunWriter(client, writer, options).write(info, "", 0)
    environment = _environment(info)
    writer.summary = {
        "run_id": info.run_id, "experiment": info.experiment, "status": info.status,
        "error": info.error.summary() if info.error else "",
        "stderr_tail": counts.pop("stderr_tail", []), **counts,
    }
    writer.readme = README.format(run_id=info.run_id, status=info.status)
    _add_agent(writer, environment, options)


class _RunWriter:
    def __init__(self, client: QueryClient, writer: BundleWriter, options: RunBundleOptions
                 ) -> None:
        self.client = client
        self.writer = writer
        self.options = options
        self.runs = 0

    def write(self, info: RunInfo, prefix: str, depth: int) -> dict[str, Any]:
        w = self.writer
        self.runs += 1
        details = info.to_dict()
        properties = details.pop("properties")
        system = details.pop("system_properties")
        environment = system.pop(ENVIRONMENT_PROPERTY, None)
        properties.update(system)  # any other mltrail.* property stays with the rest
        tags = details.pop("tags")
        error = details.pop("error")
        w.add_json(prefix + "run.json", details)
        w.add_json(prefix + "tags.json", tags)
        w.add_json(prefix + "properties.json", properties)
        if error:
            w.add_json(prefix + "error.json", error)
        if environment is not None:
            w.add_json(prefix + "environment.json", _parse(environment))
        metric_records = self._metrics(info.run_id, prefix)
        streams, stderr_tail = self._logs(info.run_id, prefix)
        artifacts = self._artifacts(info.run_id, prefix)
        children = self._children(info, prefix, depth)
        return {"metric_records": metric_records, "log_lines": sum(streams.values()),
                "log_streams": streams, "artifacts": artifacts, "child_runs": children,
                "stderr_tail": stderr_tail}

    def _metrics(self, run_id: str, prefix: str) -> int:
        index: dict[str, Any] = {}
        total = 0
        records = self.client.get_metric_records(run_id)
        for name, group in groupby(records, key=lambda r: r.metric.name):
            calls = list(group)
            total += len(calls)
            stem = prefix + "metrics/" + (_SAFE.sub("_", name).strip("._") or "metric")
            jsonl = self._metric_jsonl(stem + ".jsonl", calls)
            csv_name = self._metric_csv(stem + ".csv", calls)
            index[name] = {"kinds": sorted({metric_kind(r.metric) for r in calls}),
                           "records": len(calls), "files": [jsonl, csv_name]}
        self.writer.add_json(prefix + "metrics/index.json", index)
        return total

    def _metric_jsonl(self, name: str, calls: list[collector_pb2.MetricRecord]) -> str:
        with self.writer.text_file(name) as out:
            for rec in calls:
                out.write(json.dumps(_metric_row(rec), default=_json_default) + "\n")
        return out.name

    def _metric_csv(self, name: str, calls: list[collector_pb2.MetricRecord]) -> str:
        rows = list(_csv_rows(calls))
        columns = ["record", "time_unix_nano", "kind", "step"]
        for row in rows:
            columns.extend(k for k in row if k not in columns)
        buffer = io.StringIO()
        table = csv.DictWriter(buffer, columns, lineterminator="\n")
        table.writeheader()
        with self.writer.text_file(name) as out:
            for row in rows:
                table.writerow(row)
                if buffer.tell() > 1 << 16:
                    out.write(buffer.getvalue())
                    buffer.seek(0)
                    buffer.truncate()
            out.write(buffer.getvalue())
        return out.name

    def _logs(self, run_id: str, prefix: str) -> tuple[dict[str, int], list[str]]:
        files: dict[str, TextFile] = {}
        counts: dict[str, int] = {}
        stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        with contextlib.ExitStack() as open_files:  # each stream's file is placed at exit
            for lines in self.client.tail_logs(run_id).batches():
                for stream, group in groupby(lines, key=attrgetter("stream")):
                    texts = [line.text for line in group]
                    out = files.get(stream)
                    if out is None:
                        stem = _SAFE.sub("_", stream).strip("._") or "stream"
                        out = files[stream] = open_files.enter_context(
                            self.writer.text_file(f"{prefix}logs/{stem}.txt"))
                        counts[stream] = 0
                    out.write("\n".join(texts) + "\n")  # one write per run of lines
                    counts[stream] += len(texts)
                    if stream == "stderr":
                        stderr_tail.extend(texts)
        self.writer.add_json(prefix + "logs/index.json", {
            stream: {"lines": counts[stream], "file": out.name} for stream, out in files.items()})
        return counts, list(stderr_tail)  # the manifest's summary is redacted as it is written

    def _artifacts(self, run_id: str, prefix: str) -> int:
        found = self.client.list_artifacts(run_id)
        self.writer.add_json(prefix + "artifacts.json", [a.__dict__ for a in found])
        if self.options.with_artifacts:
            for artifact in found:
                self._artifact(run_id, artifact.path, artifact.size, prefix)
        return len(found)

    def _artifact(self, run_id: str, path: str, size: int, prefix: str) -> None:
        name = prefix + "artifacts/" + _inside(path)
        if size > self.writer.room(name):
            self.writer.omit(name, size, "over the size cap")  # not even downloaded
            return
        with tempfile.TemporaryDirectory() as tmp:
            target = f"{tmp}/artifact"
            self.client.download_artifact(run_id, path, target)
            with open(target, "rb") as fh:
                self.writer.add_file_object(name, fh, size)

    def _children(self, info: RunInfo, prefix: str, depth: int) -> list[str]:
        if depth >= MAX_DEPTH:
            return list(info.child_run_ids)
        for child_id in info.child_run_ids:
            try:
                child = self.client.get_run(child_id)
            except MltrailError as exc:
                self.writer.add_json(f"{prefix}children/{child_id}/unavailable.json",
                                     {"error": str(exc)})
                continue
            self.write(child, f"{prefix}children/{_SAFE.sub('_', child_id)}/", depth + 1)
        return list(info.child_run_ids)


def _inside(path: str) -> str:
    """An artifact's path as a name that stays inside the bundle when unzipped."""
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join(_SAFE.sub("_", p) for p in parts) or "artifact"


def _metric_row(rec: collector_pb2.MetricRecord) -> dict[str, Any]:
    metric = rec.metric
    row: dict[str, Any] = {"time_unix_nano": rec.time_unix_nano, "kind": metric_kind(metric)}
    if metric.WhichOneof("data") == "scalar" and metric.scalar.HasField("step"):
        row["step"] = metric.scalar.step
    if metric.description:
        row["description"] = metric.description
    if metric.WhichOneof("data") == "json":
        row["schema_type"] = metric.json.schema_type
        row["schema_version"] = metric.json.schema_version
    row["value"] = metric_to_python(metric)
    return row


def _csv_rows(calls: Iterable[collector_pb2.MetricRecord]) -> Iterator[dict[str, Any]]:
    """One CSV row per scalar, list item, logged row, table row, image or JSON document."""
    for number, rec in enumerate(calls):
        base = _metric_row(rec)
        head = {"record": number, "time_unix_nano": base["time_unix_nano"], "kind": base["kind"],
                "step": base.get("step", "")}
        value = base["value"]
        if base["kind"] == "list":
            for i, item in enumerate(value):
                yield {**head, "index": i, "value": item}
        elif base["kind"] == "row":
            yield {**head, **{f"column:{k}": v for k, v in value.items()}}
        elif base["kind"] == "table":
            height = max((len(v) for v in value.values()), default=0)
            for i in range(height):
                yield {**head, "index": i, **{f"column:{k}": (v[i] if i < len(v) else "")
                                              for k, v in value.items()}}
        elif base["kind"] == "json":
            yield {**head, "value": json.dumps(value, default=_json_default)}
        else:
            yield {**head, "value": value}


def _json_default(value: Any) -> Any:
    return repr(value)


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return {"unparsed": text}


def _environment(info: RunInfo) -> dict[str, Any]:
    raw = info.system_properties.get(ENVIRONMENT_PROPERTY)
    parsed = _parse(raw) if raw else {}
    return parsed if isinstance(parsed, dict) else {}


def _add_agent(writer: BundleWriter, environment: dict[str, Any],
               options: RunBundleOptions) -> None:
    """The delivering agent's bundle under agent/, or why it is not there.

    The address is the one the SDK recorded (often 127.0.0.1:PORT): an agent
    that answers there from another host than the run's is another agent, and
    its bundle is left out."""
    agent = environment.get("agent") or {}
    address = agent.get("http") if isinstance(agent, dict) else None
    run_host = (environment.get("platform") or {}).get("hostname", "")
    status: dict[str, Any] = {"address": address or "", "included": False}
    if not address:
        status["why"] = "the run did not record its agent's HTTP address"
    else:
        try:
            data = fetch_support(address, options.agent_seconds, options.agent_timeout)
            host = (read_bundle(data)[1].get("created_by") or {}).get("host", "")
            if run_host and host != run_host:
                status["why"] = (f"the agent at {address} is on host {host!r}, the run was on "
                                 f"{run_host!r}: another agent; take the run's agent's bundle "
                                 "on its host with `mltrail agent bundle`")
            else:
                status["included"] = copy_bundle_into(writer, data, "agent/")
        except (OSError, ValueError) as exc:
            status["why"] = f"the agent at {address} did not answer: {exc}"
    writer.summary["agent_bundle"] = status
    writer.add_json("agent/status.json", status)


def fetch_support(address: str, seconds: float, timeout: float) -> bytes:
    """GET http://ADDRESS/-/support?seconds=N (an agent's or a collector's bundle)."""
    url = f"http://{address}/-/support?seconds={seconds:g}"
    try:
        with urllib.request.urlopen(url, timeout=timeout + seconds) as answer:
            return bytes(answer.read())
    except urllib.error.HTTPError as exc:
        said = exc.read().decode("utf-8", "replace").strip()[:300]
        raise ValueError(f"HTTP {exc.code} from {url}: {said}") from None
    except urllib.error.URLError as exc:
        raise OSError(f"{url}: {exc.reason}") from None


def copy_bundle_into(writer: BundleWriter, data: bytes, prefix: str) -> bool:
    """Another bundle's files under ``prefix``, redacted again with this bundle's rules."""
    archive, manifest = read_bundle(data)
    nested = (manifest.get("redactions") or {}).get("by_file") or {}
    for where, rules in nested.items():  # what the other side redacted before sending
        for rule, count in rules.items():
            writer.redactor.counts.setdefault(prefix + where, Counter())[rule] += int(count)
    for item in archive.infolist():
        raw = archive.read(item)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            writer.add_bytes(prefix + item.filename, raw)
            continue
        writer.add_text(prefix + item.filename, text)
    return True
