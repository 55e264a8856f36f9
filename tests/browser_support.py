"""Debian's chromium and chromium-driver for the browser tests (no tests here): found by the harvester's own
lookup (`find_chromium`), a skip marker for machines without them, and one way to start a headless session."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from facedeblur.errors import FacedeblurError
from facedeblur.harvest.web import find_chromium

try:
    CHROMIUM, CHROMEDRIVER = find_chromium()
except FacedeblurError:
    CHROMIUM = CHROMEDRIVER = None

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium and chromium-driver "
                                                             "(apt-get install chromium chromium-driver)")


def headless_chromium(*extra_flags: str):
    """A started Selenium driver on headless Chromium; the caller quits it."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager fetch a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage", *extra_flags):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver


def wait_until(predicate, what: str, timeout: float = 30.0):
    """The predicate's first truthy value, polled until `timeout`; a page being replaced counts as not yet."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (NoSuchElementException, StaleElementReferenceException):
            value = None   # the page is being replaced by the next one
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def screenshot(browser, name: str) -> None:
    """The whole page (the window grown to its height for the shot) when FACEDEBLUR_SCREENSHOTS names a folder."""
    folder = os.environ.get("FACEDEBLUR_SCREENSHOTS")
    if folder:
        height = browser.execute_script("return document.documentElement.scrollHeight;")
        browser.set_window_size(1280, min(max(height + 140, 700), 2400))
        browser.execute_script("window.scrollTo(0, 0);")
        browser.save_screenshot(str(Path(folder) / name))
        browser.set_window_size(1280, 1000)
