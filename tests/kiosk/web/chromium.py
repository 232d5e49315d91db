"""Headless Chromium for the page tests (selenium): one way to start it, one way to wait on it.

Skips (never fails) when Chromium / ChromeDriver (``apt-get install -y chromium chromium-driver``) or
selenium is absent, or the browser does not start. No timing asserts: only generous waits.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed: pip install selenium==4.51.0")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

APT_LINE = "apt-get install -y chromium chromium-driver"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium", path="/usr/bin")
CHROMEDRIVER = shutil.which("chromedriver") or shutil.which("chromedriver", path="/usr/bin")


@contextmanager
def headless_chromium(profile: Path) -> Iterator[WebDriver]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(f"chromium / chromedriver not installed; install them with: {APT_LINE}")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1000",
                 # a synthetic camera, granted without a prompt: exercises the getUserMedia path
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    except WebDriverException as e:
        pytest.skip(f"headless chromium did not start: {e.msg}")
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, timeout: float, what: str, pred: Any) -> Any:
    """Poll ``pred`` until truthy. The pages patch their lists every few seconds, so an element found in one
    poll may be gone before it is read: that poll is tried again (stale), not failed."""
    from selenium.common.exceptions import StaleElementReferenceException

    waiter = WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,))
    return waiter.until(pred, message=f"waiting for {what}")


def browser_login(driver: WebDriver, url: str, name: str, password: str, timeout: float = 20.0) -> None:
    """Log ``name`` in on the staff page at ``url`` through its login form (the kiosk's and the console's)."""
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(url + "/login")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "login").click()
    wait(driver, timeout, f"{name} logged in", lambda d: d.current_url.rstrip("/") == url.rstrip("/"))
