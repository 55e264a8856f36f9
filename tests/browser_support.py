"""Debian's chromium and chromium-driver for the browser tests (no tests here): found by the harvester's own
lookup (`find_chromium`), a skip marker for machines without them, and one way to start a headless session."""
from __future__ import annotations

import os

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
