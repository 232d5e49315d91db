"""The "My account" page in a real headless Chromium against the real staff routes on uvicorn: a password
change (a weak one refused with the estimator's reason, the other sessions ended), the admins' session list
with its "End" buttons, and an open staff page that goes to the log-in once its session is ended elsewhere.

No model needed: the staff routes alone. Skips without Chromium / ChromeDriver or selenium. No timing asserts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

httpx = pytest.importorskip("httpx", reason="httpx not installed: pip install httpx")
pytest.importorskip("fastapi", reason="fastapi not installed: pip install fastapi uvicorn python-multipart")
pytest.importorskip("selenium.webdriver", reason="selenium not installed: pip install selenium==4.51.0")

from fastapi import FastAPI  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402

from mpox_aism.kiosk.accounts import Accounts  # noqa: E402
from mpox_aism.kiosk.web.server import ServerThread  # noqa: E402
from mpox_aism.kiosk.web.staff import add_staff_routes  # noqa: E402
from tests.kiosk.web.chromium import browser_login, headless_chromium, wait  # noqa: E402
from tests.kiosk.web.test_auth import FAST, PASSWORDS, login  # noqa: E402

WAIT_S = 20.0  # generous: the machine is shared
NEW_PASSWORD = "quartz meadow lantern"


class Site:
    def __init__(self, url: str, accounts: Accounts) -> None:
        self.url, self.accounts = url, accounts


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    d = tmp_path_factory.mktemp("account-page")
    accounts = Accounts(d / "staff.sqlite3", hasher=FAST)
    accounts.add("rev", PASSWORDS["rev"], "reviewer")
    accounts.add("boss", PASSWORDS["boss"], "admin")
    app = FastAPI()
    add_staff_routes(app, events_provider=list, frame_provider=lambda _n: None, cameras=list,
                     reviews_path=d / "reviews.sqlite3", accounts=accounts)
    with ServerThread(app) as s:
        yield Site(s.url, accounts)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    with headless_chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def fill_password_form(browser: WebDriver, current: str, new: str) -> None:
    for field, value in (("current", current), ("new", new), ("again", new)):
        box = browser.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    browser.find_element(By.ID, "change").click()


def shown(browser: WebDriver, element_id: str) -> Any:
    return lambda d: d.find_element(By.ID, element_id).is_displayed() and d.find_element(By.ID, element_id).text


def test_a_reviewer_changes_the_password_on_the_page(site: Site, browser: WebDriver) -> None:
    other, _ = login(site.url, "rev")  # the same account on another device
    browser_login(browser, site.url, "rev", PASSWORDS["rev"])
    browser.find_element(By.LINK_TEXT, "My account").click()
    wait(browser, WAIT_S, "the account page", lambda d: d.current_url.endswith("/account"))
    wait(browser, WAIT_S, "who is logged in", lambda d: "rev (reviewer)" in d.find_element(By.ID, "who").text)
    assert not browser.find_element(By.ID, "sessions-panel").is_displayed()  # admins only

    fill_password_form(browser, PASSWORDS["rev"], "password1234")
    error = wait(browser, WAIT_S, "the refusal", shown(browser, "password-error"))
    assert "very common password" in error  # zxcvbn's reason, in the page
    assert other.get("/api/events").status_code == 200  # a refused change ends nothing

    fill_password_form(browser, PASSWORDS["rev"], NEW_PASSWORD)
    done = wait(browser, WAIT_S, "the change", shown(browser, "password-done"))
    assert "1 other session(s) ended" in done
    assert other.get("/api/events").status_code == 401  # the other device is logged out…
    browser.get(site.url + "/")
    wait(browser, WAIT_S, "the staff page", lambda d: "rev (reviewer)" in d.find_element(By.ID, "who").text)
    assert site.accounts.verify("rev", NEW_PASSWORD) is not None  # …this one stays


def test_an_admin_ends_sessions_and_an_ended_page_goes_to_the_login(site: Site, browser: WebDriver) -> None:
    rev, _ = login(site.url, "rev", NEW_PASSWORD)
    rev_id = rev.get("/api/session").json()["id"]
    browser_login(browser, site.url, "boss", PASSWORDS["boss"])
    browser.get(site.url + "/account")
    row = f'tr[data-session="{rev_id}"]'
    wait(browser, WAIT_S, "rev's session in the list", lambda d: d.find_elements(By.CSS_SELECTOR, row))
    assert browser.find_element(By.CSS_SELECTOR, "tr.current").get_attribute("data-user") == "boss"
    browser.find_element(By.CSS_SELECTOR, row + " button.end").click()
    wait(browser, WAIT_S, "rev's row gone", lambda d: not d.find_elements(By.CSS_SELECTOR, row))
    assert rev.get("/api/events").status_code == 401
    assert any(r.action == "session ended" and r.user == "boss" for r in site.accounts.audit())

    browser.get(site.url + "/")  # the staff page, polling
    wait(browser, WAIT_S, "the staff page", lambda d: "boss (admin)" in d.find_element(By.ID, "who").text)
    site.accounts.end_sessions("boss")  # what `mpox-aism users end-sessions boss` does, from another process
    wait(browser, WAIT_S, "the log-in page", lambda d: d.current_url.endswith("/login"))
