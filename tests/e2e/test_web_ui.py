"""The web UI in a real browser (Debian's Chromium) against a real collector and agent.

Runs are logged by the real SDK (tests/ui/populate.py); each test drives the
page as a user would and compares what it shows with what was logged. Any
JavaScript error fails the test. Screenshots go to $MLTRAIL_SCREENSHOTS
(the README's come from there) or to the test's temp directory.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.procs import MLTRAIL
from tests.ui.browser import Browser, available
from tests.ui.site import Site, site_fixture  # noqa: F401 (the site fixture)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        import selenium  # noqa: F401
    except ImportError:
        selenium_ok = False
    else:
        selenium_ok = True
    require(available() and selenium_ok, "Chromium, chromedriver and selenium")
    opened = Browser()
    yield opened
    opened.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Browser]:
    browser.errors()  # what earlier tests left in the log is theirs
    yield browser
    browser.check()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = Path(os.environ.get("MLTRAIL_SCREENSHOTS") or tmp_path_factory.mktemp("shots"))
    target.mkdir(parents=True, exist_ok=True)
    return target


def names(page: Browser) -> list[str]:
    """The runs table's names, read in one script (the table may be redrawn meanwhile)."""
    found: list[str] = page.js(
        "return [...document.querySelectorAll('#runs-table tbody tr td:nth-child(2) a')]"
        ".map(a => a.textContent)")
    return found


def chart(page: Browser, key: str) -> dict[str, Any]:
    found: dict[str, Any] = page.wait(lambda: page.js(
        "const u = window.__mltrailCharts[arguments[0]];"
        "return u && {data: u.data, series: u.series.length};", key), 30, f"chart {key}")
    return found


def test_runs_table_filters_sorts_and_keeps_the_view_in_the_url(
        page: Browser, site: Site, shots: Path) -> None:
    page.open(f"{site.url}/#/runs?columns=loss,accuracy:max")
    assert page.text("#runs-count") == "1–6 of 6"
    assert set(names(page)) == {"baseline", "tuned", "broken", "long", "baseline-fold-1",
                                "tuned-fold-1"}
    page.screenshot(str(shots / "runs.png"))

    page.find("#runs-filters select[name=experiment]").send_keys("ui-vision")
    page.find("#runs-filters input[name=where]").send_keys("loss < 0.1")
    page.find("#runs-filters button[type=submit]").click()
    page.wait(lambda: names(page) == ["tuned"], 30, "the metric filter")
    assert "where=loss" in page.js("return location.hash")

    page.go("#/runs?columns=loss&sort=-loss")
    assert names(page)[:3] == ["broken", "baseline", "tuned"]  # 3.0, 0.14, 0.06; then no loss
    page.find("th[data-sort='loss:last']").click()  # descending -> ascending
    page.wait(lambda: names(page)[:3] == ["tuned", "baseline", "broken"], 30, "the new sort")
    shared = page.js("return location.href")
    page.open(shared)  # the URL alone gives the same view
    assert names(page)[:3] == ["tuned", "baseline", "broken"]

    page.go("#/runs?status=Failed")
    assert names(page) == ["broken"]
    page.go("#/runs?tag=team%3Dvision&sort=name")
    assert names(page) == ["baseline", "tuned"]
    page.go("#/runs?limit=2&sort=name")
    assert page.text("#runs-count") == "1–2 of 6"
    page.find(".pager button:nth-of-type(2)").click()
    page.wait(lambda: page.text("#runs-count") == "3–4 of 6", 30, "the next page")
    assert names(page) == ["broken", "long"]


def test_a_run_page_shows_every_metric_kind(page: Browser, site: Site, shots: Path) -> None:
    run = site.runs["baseline"]
    page.open(f"{site.url}/#/run/{run['run_id']}")
    charts = {c.get_attribute("data-metric") for c in page.find_all(".card.chart")}
    assert charts == {"accuracy", "learning_rate", "loss"}
    kinds = {c.get_attribute("data-metric"): c.get_attribute("data-kind")
             for c in page.find_all(".card.other")}
    assert kinds == {"class_counts": "list", "epochs": "row", "per_class": "table",
                     "loss_curve": "image", "confusion": "confusion_matrix",
                     "accuracy_table": "accuracy_table", "residuals": "residuals",
                     "predictions": "predictions"}
    assert "182" in page.text(".card[data-metric=class_counts]")
    assert len(page.find_all(".card[data-metric=epochs] tbody tr")) == 2
    assert "0.97" in page.text(".card[data-metric=per_class]")
    page.wait(lambda: page.js("const i = document.querySelector("
                              "'.card[data-metric=loss_curve] img'); return i && i.complete "
                              "&& i.naturalWidth > 0"), 30, "the image to load")
    assert "41" in page.text(".card[data-metric=confusion] table.confusion")
    for drawn in ("accuracy_table", "residuals", "predictions"):
        page.wait(lambda d=drawn: page.find_all(f".card[data-metric={d}] canvas"), 30,
                  f"{drawn} to be drawn")
    page.screenshot(str(shots / "run.png"))

    page.go(f"#/run/{run['run_id']}?tab=overview")
    assert "framework" in page.text("#run-body") and "lr" in page.text("#run-body")
    assert "baseline-fold-1" in page.text("#run-body")
    page.go(f"#/run/{site.runs['failed']['run_id']}?tab=overview")
    assert "bad data in shard 3" in page.text("#run-error")


def test_chart_points_match_the_stored_values_and_zoom_fetches_detail(
        page: Browser, site: Site, shots: Path) -> None:
    run = site.runs["baseline"]
    page.open(f"{site.url}/#/run/{run['run_id']}")
    drawn = chart(page, f"{run['run_id']}/loss")
    xs, ys = drawn["data"][0], drawn["data"][1]
    assert (xs[0], xs[-1], len(xs)) == (0, 299, 300)
    assert ys[0] == pytest.approx(run["loss_first"], rel=1e-12)
    assert ys[-1] == pytest.approx(run["loss_last"], rel=1e-12)

    long = site.runs["long"]
    page.go(f"#/run/{long['run_id']}")
    assert page.find(".card[data-metric=long_loss]").get_attribute("data-downsampled") == "1"
    drawn = chart(page, f"{long['run_id']}/long_loss")
    xs, ys, maxs = drawn["data"][0], drawn["data"][1], drawn["data"][2]
    assert len(xs) < long["count"] / 10  # a downsample, not every point
    assert (xs[0], xs[-1]) == (0, long["count"] - 1)
    assert ys[0] == pytest.approx(long["first"], rel=1e-12)
    assert ys[-1] == pytest.approx(long["last"], rel=1e-12)
    assert max(m for m in maxs if m is not None) == long["max"]  # the spike is kept
    page.screenshot(str(shots / "long-series.png"))

    # Drag-select steps 31,000 to 31,600 (the spike at 31,337): detail for that range only.
    page.js("const u = window.__mltrailCharts[arguments[0]];"
            "const l = u.valToPos(31000, 'x'), r = u.valToPos(31600, 'x');"
            "u.setSelect({left: l, width: r - l, top: 0, height: u.bbox.height}, true);",
            f"{long['run_id']}/long_loss")
    card = ".card[data-metric=long_loss] .plot"
    page.wait(lambda: page.find(card).get_attribute("data-zoomed") == "1", 30, "the zoom")
    drawn = chart(page, f"{long['run_id']}/long_loss")
    xs, ys = drawn["data"][0], drawn["data"][1]
    assert xs[0] >= 30_990 and xs[-1] <= 31_610 and 31_337 in xs
    assert ys[xs.index(31_337)] == long["max"]


def test_compare_overlays_runs_and_marks_differences(
        page: Browser, site: Site, shots: Path) -> None:
    page.open(f"{site.url}/#/runs?experiment=ui-vision&sort=name")
    for row in page.find_all("#runs-table tbody tr"):
        if row.get_attribute("data-run") in (site.runs["baseline"]["run_id"],
                                             site.runs["tuned"]["run_id"]):
            row.find_element("css selector", "input.pick").click()
    page.find("#compare-button").click()
    page.wait(lambda: page.js("return document.body.dataset.view") == "compare"
              and page.js("return document.body.dataset.ready") == "1", 30, "compare")
    drawn = chart(page, "compare/loss")
    assert drawn["series"] == 3  # x and one line per run
    rows = {r.find_element("css selector", "th").text: r.get_attribute("class")
            for r in page.find_all("#compare-table tbody tr")}
    assert rows["tag lr"] == "differs" and rows["tag team"] == ""
    assert rows["loss (last)"] == "differs"
    page.screenshot(str(shots / "compare.png"))


LIVE_SCRIPT = """
import os, sys, time
def wait(name):
    while not os.path.exists(name):
        time.sleep(0.01)
print("started", flush=True)
for i in range(300):  # more than the pane shows, so scrolling up is scrolling away from the end
    print(f"epoch {i}", flush=True)
wait("go")
print("marker: the line the page must show", flush=True)
wait("more")
for i in range(200):
    print(f"more {i}", flush=True)
wait("stop")
"""


def test_live_logs_follow_a_running_script(page: Browser, site: Site, tmp_path: Path,
                                           shots: Path) -> None:
    (tmp_path / "live.py").write_text(LIVE_SCRIPT)
    proc = subprocess.Popen([*MLTRAIL, "run", "--experiment", "ui-live", "--", sys.executable,
                             "live.py"], cwd=tmp_path, env=site.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run_id = page.wait(lambda: _only_run(site, "ui-live"), 60, "the live run")
        page.open(f"{site.url}/#/run/{run_id}?tab=logs")
        page.wait(lambda: "epoch 299" in log_text(page), 30, "the first lines")
        assert page.text("#live-state") == "live"
        (tmp_path / "go").touch()
        began = time.monotonic()
        page.wait(lambda: "marker: the line" in log_text(page), 30, "the live line")
        print(f"live line shown {time.monotonic() - began:.2f} s after it was printed")
        page.js("document.getElementById('log-pane').scrollTop = 0")  # the reader scrolls up
        (tmp_path / "more").touch()
        page.wait(lambda: "more 199" in log_text(page), 30, "more lines")
        assert page.js("return document.getElementById('log-pane').scrollTop") == 0
        page.screenshot(str(shots / "live-logs.png"))
        (tmp_path / "stop").touch()
        page.wait(lambda: page.text("#live-state") == "ended: Completed", 60, "the end")
    finally:
        for name in ("go", "more", "stop"):
            (tmp_path / name).touch()
        proc.wait(timeout=60)


def log_text(page: Browser) -> str:
    return str(page.js("return document.getElementById('log-pane').textContent"))


def _only_run(site: Site, experiment: str) -> str | None:
    import json

    with urllib.request.urlopen(f"{site.url}/api/v1/runs?experiment={experiment}") as r:
        runs = json.load(r)["runs"]
    return runs[0]["run_id"] if runs else None


def test_a_download_returns_the_artifacts_bytes(page: Browser, site: Site) -> None:
    run = site.runs["tuned"]
    page.open(f"{site.url}/#/run/{run['run_id']}?tab=artifacts")
    link = page.find("#artifacts-table a.download[data-path='outputs/model.bin']")
    with urllib.request.urlopen(link.get_attribute("href")) as answer:
        body = answer.read()
        assert "attachment" in answer.headers["Content-Disposition"]
    assert hashlib.sha256(body).hexdigest() == run["model_sha256"]


def test_the_page_reaches_nothing_but_its_collector(page: Browser, site: Site) -> None:
    page.open(f"{site.url}/#/run/{site.runs['baseline']['run_id']}")
    resources = page.js("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(r.startswith(site.url + "/") for r in resources), resources
    with urllib.request.urlopen(f"{site.url}/") as answer:
        policy = answer.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
