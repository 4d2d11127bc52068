"""The web UI on a collector that needs tokens (and serves HTTPS), in a real browser.

The page asks for a reader token, keeps it for the tab only (session
storage), sends it as a bearer header and never puts it in a URL; a token
sees its own workspace's runs only.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.integration.test_collector_auth import Team, sdk_run
from tests.ui.browser import Browser, available

pytestmark = pytest.mark.slow


@pytest.fixture
def team(tmp_path: Path) -> Iterator[Team]:
    started = Team(tmp_path)
    yield started
    started.collector.stop()


def enter_token(page: Browser, token: str) -> None:
    page.wait(lambda: page.js("return document.getElementById('token-dialog').open"), 30,
              "the token dialog")
    field = page.find("#token-input")
    field.clear()
    field.send_keys(token)
    page.find("#token-form button[type=submit]").click()


def test_the_page_asks_for_a_reader_token_and_shows_its_workspace_only(
        team: Team, tmp_path: Path) -> None:
    require(available(), "Chromium and chromedriver")
    writer = team.token("vision", "writer", "trainer")
    vision = team.token("vision", "reader", "vision-reader").read_text().strip()
    audio = team.token("audio", "reader", "audio-reader").read_text().strip()
    agent = team.agent("agent", writer)
    try:
        run_id = sdk_run(agent, "secure")
    finally:
        agent.stop()
    url = f"https://{team.collector.http}"
    page = Browser(trust_any_certificate=True)
    try:
        page.driver.get(f"{url}/#/runs")
        enter_token(page, "mlt_wrong_token")
        page.wait(lambda: "token" in page.text("#token-reason").lower()
                  and page.js("return document.getElementById('token-dialog').open"), 30,
                  "the refusal to be shown")
        enter_token(page, audio)
        page.wait_ready()
        assert page.text("#runs-count") == "no runs"  # audio's workspace has none

        page.find("#token-button").click()  # sign out, then the vision reader
        enter_token(page, vision)
        page.wait(lambda: page.js("return document.body.dataset.ready") == "1"
                  and page.find_all(f"tr[data-run='{run_id}']"), 60, "vision's run")
        page.go(f"#/run/{run_id}")
        assert page.find_all(".card.chart[data-metric=loss]")
        assert vision not in page.js("return location.href")
        assert page.js("return sessionStorage.getItem('mltrail.token')") == vision
        assert not page.js("return localStorage.length")
        page.check()
    finally:
        page.close()
    assert_api_refuses(team, url, run_id, audio)


def assert_api_refuses(team: Team, url: str, run_id: str, other_reader: str) -> None:
    import ssl

    context = ssl.create_default_context(cafile=str(team.ca.cert))
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{url}/api/v1/runs", context=context).close()
    with caught.value as error:
        assert error.code == 401 and error.headers["WWW-Authenticate"].startswith("Bearer")
        assert "token" in json.loads(error.read())["error"]
    asked = urllib.request.Request(f"{url}/api/v1/runs/{run_id}",
                                   headers={"Authorization": f"Bearer {other_reader}"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(asked, context=context).close()
    with caught.value as error:
        assert error.code == 404  # another workspace's run is not found, as in the Query API
    with urllib.request.urlopen(f"{url}/", context=context) as page:  # the page itself is open
        assert b"mltrail" in page.read()
