"""Debian's Chromium driven by Selenium through Debian's chromedriver, nothing downloaded.

``Browser.open(url)`` loads a page of the UI and waits for the view to say it
is ready (``body[data-ready]``). ``Browser.check()`` fails on any JavaScript
error the page met: one logged by the browser at SEVERE level, or caught by
the page's own handlers (``window.__mltrailErrors``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000")


def available() -> bool:
    return os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)


class Browser:
    def __init__(self, trust_any_certificate: bool = False) -> None:
        """``trust_any_certificate``: for a collector whose certificate a throwaway CA
        of the test signed (the browser's store does not hold it)."""
        os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self._profile = tempfile.mkdtemp(prefix="mltrail-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={self._profile}"):
            options.add_argument(flag)
        if trust_any_certificate:
            options.add_argument("--ignore-certificate-errors")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.base = ""

    def open(self, url: str, timeout: float = 60.0) -> None:
        """Load ``url`` afresh (a URL that differs only in its hash would not reload)."""
        self.driver.get("about:blank")
        self.driver.get(url)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.wait(lambda: self.js("return document.body.dataset.ready") in ("1", "error"),
                  timeout, "the view to load")
        assert self.js("return document.body.dataset.ready") == "1", self.text("#app")

    def go(self, fragment: str, timeout: float = 60.0) -> None:
        """Change the hash (as a click on a link does) and wait for the new view."""
        self.js("document.body.dataset.ready = ''; location.hash = arguments[0]", fragment)
        self.wait_ready(timeout)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, condition: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.05)

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def text(self, css: str) -> str:
        """The element's rendered text ("" while there is none), read in one script: an
        element found first and read after is stale if the view redraws in between, as it
        does while a wait polls."""
        return str(self.js("const e = document.querySelector(arguments[0]);"
                           "return e === null ? '' : e.innerText", css))

    def errors(self) -> list[str]:
        """SEVERE browser log entries and the page's own, but for the API's 401 and 403
        answers that make the page ask for a token."""
        logged = [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"
                  and not (e.get("source") == "network" and "/api/v1/" in e["message"]
                           and ("status of 401" in e["message"]
                                or "status of 403" in e["message"]))]
        return logged + list(self.js("return window.__mltrailErrors || []"))

    def check(self) -> None:
        errors = self.errors()
        assert not errors, f"JavaScript errors on the page: {errors}"

    def screenshot(self, path: str) -> None:
        self.driver.save_screenshot(path)

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self._profile, ignore_errors=True)
