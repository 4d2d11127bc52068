"""The JSON API under /api/v1/ against a real collector and agent, as a script would use it.

Answers are compared with what tests/ui/populate.py logged through the SDK;
downsamples with a brute-force computation over the same values.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.ui import populate
from tests.ui.site import Site, site_fixture  # noqa: F401 (the site fixture)


def refused(site: Site, path: str) -> tuple[int, str]:
    with pytest.raises(urllib.error.HTTPError) as caught:
        site.api(path)
    with caught.value as error:
        body = json.loads(error.read())
        return error.code, body["error"]


def long_values() -> list[float]:
    values = [math.sin(i / 500.0) for i in range(populate.LONG)]
    values[populate.SPIKE_AT] = 25.0
    return values


def test_runs_filter_sort_page_and_columns(site: Site) -> None:
    assert site.api("experiments")["experiments"] == [
        {"name": "ui-long", "runs": 1}, {"name": "ui-vision", "runs": 5}]
    page = site.api("runs?experiment=ui-vision&columns=loss,accuracy:max&sort=loss"
                    "&where=loss%20%3C%201")
    assert [r["display_name"] for r in page["runs"]] == ["tuned", "baseline"]
    assert page["columns"] == ["loss:last", "accuracy:max"]
    tuned = page["runs"][0]
    assert tuned["metrics"]["loss:last"] == site.runs["tuned"]["loss_last"]
    assert tuned["metrics"]["accuracy:max"] == site.runs["tuned"]["accuracy_last"]
    assert site.api("runs?tag=team=audio")["total"] == 1
    assert site.api("runs?tag=team")["total"] == 3
    assert site.api("runs?status=failed")["runs"][0]["display_name"] == "broken"
    paged = site.api("runs?sort=name&limit=4&offset=4")
    assert (paged["total"], [r["display_name"] for r in paged["runs"]]) == (
        6, ["tuned", "tuned-fold-1"])


@pytest.mark.parametrize(("query", "says"), [
    ("runs?where=accuracy%20~%201", "expected NAME OP NUMBER"),
    ("runs?where=accuracy%20%3E%20high", "'high' is not a number"),
    ("runs?limit=0", "limit='0': must be at least 1"),
    ("runs?offset=-1", "offset='-1': must be at least 0"),
    ("runs?status=sleeping", "unknown run status 'sleeping'"),
])
def test_bad_queries_are_refused_naming_the_problem(site: Site, query: str, says: str) -> None:
    status, message = refused(site, query)
    assert status == 400 and says in message, message


def test_unknown_runs_paths_and_metrics_are_404_with_the_name(site: Site) -> None:
    for path in ("runs/nope", "runs/nope/metrics", "runs/nope/metrics/loss", "runs/nope/logs",
                 "runs/nope/logs/follow", "runs/nope/artifacts", "runs/nope/artifacts/a.bin"):
        status, message = refused(site, path)
        assert (status, message) == (404, "run 'nope' not found"), path
    run_id = site.runs["baseline"]["run_id"]
    assert refused(site, f"runs/{run_id}/metrics/missing") == (
        404, f"run {run_id!r} has no metric 'missing'")
    assert refused(site, f"runs/{run_id}/artifacts/outputs/none.bin")[0] == 404
    assert refused(site, "nothing/here")[0] == 404
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/app.py", "/static/nope.js"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(site.url + path).close()
        caught.value.close()
        assert caught.value.code == 404, path


def test_a_downsample_keeps_each_buckets_extremes_and_ends(site: Site) -> None:
    """At most the buckets asked for, covering every point once and in order; each sent
    as its first and last point with the min and max of the points it covers (checked
    against the values logged)."""
    run_id = site.runs["long"]["run_id"]
    values = long_values()
    answer = site.api(f"runs/{run_id}/metrics/long_loss?buckets=100")
    assert answer["downsampled"] and answer["count"] == populate.LONG
    xs, ys, mins, maxs = answer["xs"], answer["ys"], answer["mins"], answer["maxs"]
    assert len(xs) % 2 == 0 and 2 < len(xs) <= 200
    assert xs[0] == 0 and xs[-1] == populate.LONG - 1
    for first in range(0, len(xs), 2):
        lo, hi = xs[first], xs[first + 1]
        part = values[lo:hi + 1]
        assert ys[first] == part[0] and ys[first + 1] == part[-1]
        assert mins[first] == min(part) and maxs[first] == max(part)
        if first:
            assert lo == xs[first - 1] + 1  # the next bucket starts where this one ended
    assert max(maxs) == 25.0  # the spike is in its bucket's max


def test_a_range_answers_every_point_in_it(site: Site) -> None:
    run_id = site.runs["long"]["run_id"]
    values = long_values()
    answer = site.api(f"runs/{run_id}/metrics/long_loss?from=1000&to=1999")
    assert not answer["downsampled"]
    assert answer["xs"] == list(range(1000, 2000))
    assert answer["ys"] == values[1000:2000]
    assert refused(site, f"runs/{run_id}/metrics/long_loss?buckets=0")[0] == 400
    assert refused(site, f"runs/{run_id}/metrics/long_loss?x=epoch")[0] == 400


def test_non_finite_values_travel_as_json(site: Site) -> None:
    run_id = site.runs["long"]["run_id"]
    odd = {m["name"]: m for m in site.api(f"runs/{run_id}/metrics")["metrics"]}["odd"]
    assert (odd["count"], odd["last"], odd["min"], odd["max"]) == (4, "-Infinity", "-Infinity",
                                                                   "Infinity")
    series = site.api(f"runs/{run_id}/metrics/odd")
    assert series["ys"] == [None, "Infinity", 1.5, "-Infinity"]


def test_metric_kinds_keep_azure_v1_shapes(site: Site) -> None:
    run_id = site.runs["baseline"]["run_id"]
    found = {m["name"]: m for m in site.api(f"runs/{run_id}/metrics")["metrics"]}
    assert found["class_counts"]["value"] == [178, 182, 177]
    assert found["epochs"]["value"] == {"epoch": [0, 1], "loss": [0.9, 0.5],
                                        "accuracy": [0.6, 0.8]}
    assert found["confusion"]["kind"] == "confusion_matrix"
    assert found["confusion"]["value"] == populate.CONFUSION
    assert found["loss"]["count"] == 300 and found["loss"]["max"] == 1.0


def test_logs_page_search_and_follow_an_ended_run(site: Site) -> None:
    run_id = site.runs["baseline"]["run_id"]
    first = site.api(f"runs/{run_id}/logs?limit=50")
    assert len(first["lines"]) == 50 and first["positions"] == {"log": 121}
    rest = site.api(f"runs/{run_id}/logs?after=log:{first['next']['log']}&limit=1000")
    texts = [ln["text"] for ln in first["lines"] + rest["lines"]]
    assert len(texts) == 121 and texts[-1] == "done with baseline"
    assert [ln["line"] for ln in first["lines"] + rest["lines"]] == list(range(121))
    hits = site.api(f"runs/{run_id}/logs?q=EPOCH%2011%20")["lines"]
    assert [h["text"] for h in hits] == ["epoch 11 of baseline: loss 0.8197"]
    events = follow_events(site, f"runs/{run_id}/logs/follow?after=log:100")
    assert [e for e, _ in events] == ["lines", "end"]
    assert [ln["line"] for ln in events[0][1]] == list(range(100, 121))
    assert events[1][1] == {"status": "Completed"}


def follow_events(site: Site, path: str) -> list[tuple[str, Any]]:
    events = []
    with urllib.request.urlopen(f"{site.url}/api/v1/{path}", timeout=60) as answer:
        assert answer.headers["Content-Type"].startswith("text/event-stream")
        name = ""
        for raw in answer:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    return events


def test_artifacts_list_and_download(site: Site) -> None:
    run = site.runs["tuned"]
    listed = site.api(f"runs/{run['run_id']}/artifacts")["artifacts"]
    model = next(a for a in listed if a["path"] == "outputs/model.bin")
    assert model["sha256"] == run["model_sha256"]
    url = f"{site.url}/api/v1/runs/{run['run_id']}/artifacts/outputs/model.bin"
    with urllib.request.urlopen(url) as answer:
        assert answer.headers["X-Content-SHA256"] == run["model_sha256"]
        assert len(answer.read()) == model["size"]
