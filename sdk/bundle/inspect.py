"""``mltrail bundle inspect FILE.zip``: the summary a maintainer reads first."""

from __future__ import annotations

from typing import Any

from mltrail.common.bundle_writer import read_bundle


def summary_lines(path: str) -> list[str]:
    """Lines for a person: what the bundle is, the run's state, its error and last
    stderr lines, counts, the agent's health, and what was redacted or cut."""
    try:
        with open(path, "rb") as fh:
            _, manifest = read_bundle(fh.read())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    s: dict[str, Any] = manifest.get("summary") or {}
    by = manifest.get("created_by") or {}
    files = manifest.get("files") or []
    out = [
        f"{manifest.get('bundle', '?')} bundle, made {manifest.get('created', '?')} by "
        f"{by.get('user', '?')}@{by.get('host', '?')}"
        + (f" via {by['via']}" if by.get("via") else "")
        + f" (mltrail {manifest.get('mltrail_version', '?')}, "
          f"Python {manifest.get('python_version', '?')})",
        f"{len(files)} files, {sum(int(f.get('size', 0)) for f in files):,} bytes "
        f"(cap {int(manifest.get('max_bytes', 0)):,})",
    ]
    if manifest.get("bundle") == "run":
        out += _run_lines(s)
    else:
        out += _service_lines(s)
    out += _redaction_lines(manifest) + _cut_lines(manifest)
    return out


def _run_lines(s: dict[str, Any]) -> list[str]:
    out = [f"run {s.get('run_id', '?')} ({s.get('experiment', '?')}): {s.get('status', '?')}"]
    if s.get("error"):
        out.append(f"error: {s['error']}")
    streams = s.get("log_streams") or {}
    out.append(f"metric records {s.get('metric_records', 0):,}, log lines "
               f"{s.get('log_lines', 0):,} in {len(streams)} streams "
               f"({', '.join(f'{k} {v:,}' for k, v in streams.items()) or 'none'}), "
               f"artifacts {s.get('artifacts', 0)}, child runs {len(s.get('child_runs') or [])}")
    tail = s.get("stderr_tail") or []
    if tail:
        out.append(f"last {len(tail)} lines of stderr:")
        out += [f"  | {line}" for line in tail]
    agent = s.get("agent_bundle") or {}
    if agent.get("included"):
        out.append(f"agent {agent.get('address')}: bundle included under agent/")
    else:
        out.append(f"agent: not included ({agent.get('why', 'unknown')})")
    return out


def _service_lines(s: dict[str, Any]) -> list[str]:
    health = s.get("health") or {}
    out = [f"health: {'healthy' if health.get('healthy') else 'UNHEALTHY'} "
           f"({health.get('message', '')})"]
    collector = s.get("collector")
    if isinstance(collector, dict):
        out.append(f"collector {collector.get('address')}: connected "
                   f"{collector.get('connected')}, probe: {collector.get('probe')}")
    numbers = s.get("numbers") or {}
    for key in ("spool_bytes", "spool_pending_bytes", "spool_segments", "failed_sends"):
        if key in numbers:
            out.append(f"{key}: {numbers[key]:,}")
    window = (s.get("window") or {}).get("seconds", 0)
    moved = s.get("changed_in_window") or {}
    if moved:
        out.append(f"changed in the {window:g} s window:")
        out += [f"  {k}: {v:+,}" for k, v in sorted(moved.items())]
    errors = s.get("send_errors") or []
    if errors:
        out.append(f"last send errors ({len(errors)}):")
        out += [f"  {e.get('event')}: {e.get('message')}" for e in errors[-5:]]
    return out


def _redaction_lines(manifest: dict[str, Any]) -> list[str]:
    redactions = manifest.get("redactions") or {}
    total = redactions.get("total", 0)
    if not total:
        return ["redacted: nothing matched the secret rules"]
    parts = []
    for where, rules in (redactions.get("by_file") or {}).items():
        parts.append(f"{where} ({', '.join(f'{r} {n}' for r, n in rules.items())})")
    return [f"redacted {total} values: " + "; ".join(parts)]


def _cut_lines(manifest: dict[str, Any]) -> list[str]:
    cuts = manifest.get("cuts") or []
    if not cuts:
        return ["cut: nothing"]
    return [f"cut {len(cuts)} files to fit:"] + [
        f"  {c['file']}: {c['action']}, kept {c['kept_bytes']:,} of {c['original_bytes']:,} "
        f"bytes ({c['why']})" for c in cuts]
