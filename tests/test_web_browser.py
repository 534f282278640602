"""The console in a real browser: Debian's headless Chromium driven by Selenium (chromium-driver).

The issue's flow, end to end against the sandbox: log in; the casavi team activates; the customer
admin tries a wrong token (German error with the SCALARA menu path), saves the sandbox token and
watches the initial import finish; opens the report and follows a failed record to its
explanation; runs now; cannot open another tenant. A screenshot of each step goes to
test-artifacts/browser/ (gitignored); every page's HTML is scanned for secrets.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web_helpers import PASSWORDS, Console, console, serve

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (CHROMIUM and DRIVER):
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", "--lang=de-DE", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


class Flow:
    def __init__(self, driver: Any, base: str, c: Console) -> None:
        self.d, self.base, self.c = driver, base, c
        self.pages: list[str] = []
        self.step = 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def go(self, path: str) -> None:
        self.d.get(self.base + path)
        self.keep()

    def keep(self) -> None:
        self.pages.append(self.d.page_source)

    def shot(self, name: str) -> None:
        self.step += 1
        self.keep()
        self.d.save_screenshot(str(ARTIFACTS / f"{self.step:02d}-{name}.png"))

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.CSS_SELECTOR, css)

    def wait_for(self, css: str, timeout: float = 60) -> Any:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.d, timeout, poll_frequency=0.2).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, css)))

    def login(self, user: str) -> None:
        self.go("/login")
        self.find("#user").send_keys(user)
        self.find("#password").send_keys(PASSWORDS[user])
        self.find("#login").click()
        self.wait_for("#tenants")

    def logout(self) -> None:
        self.find("header form button").click()
        self.wait_for("#login")


def test_the_console_flow_in_chromium(browser: Any, tmp_path: Path) -> None:
    with console(tmp_path, properties=1, seed=7) as c, serve(c.app) as base:
        f = Flow(browser, base, c)
        f.go("/tenants/default/scalara")
        assert "/login" in browser.current_url  # nobody gets in without logging in
        f.shot("login")

        # the casavi team activates the interface
        f.find("#user").send_keys("team")
        f.find("#password").send_keys(PASSWORDS["team"])
        f.find("#login").click()
        f.wait_for("#activate")
        assert "casavi-Team muss sie zuerst aktivieren" in browser.page_source
        f.shot("not-activated")
        f.find("#activate").click()
        f.wait_for("#token")
        assert "Schnittstelle aktiviert" in browser.page_source
        f.shot("activated")
        f.logout()

        # the customer admin: a wrong token first, then the sandbox token
        f.login("kunde")
        f.go("/tenants/default/scalara")
        token_field = f.find("#token")
        assert token_field.get_attribute("type") == "password" and token_field.get_attribute("autocomplete") == "off"
        assert "Systemeinstellungen > Externe Anbindungen > casavi > Generieren" in f.find("#token-help").text
        token_field.send_keys("scl_falsch_0000000000000000")
        f.find("#save-token").click()
        error = f.wait_for("#error")
        assert "SCALARA hat dieses Token abgelehnt" in error.text
        assert "Systemeinstellungen > Externe Anbindungen > casavi > Generieren" in error.text
        assert f.find("#token").get_attribute("value") == ""  # never re-filled
        f.shot("wrong-token")

        f.find("#token").send_keys(c.token)
        f.find("#save-token").click()
        f.wait_for("#progress")
        f.shot("initial-import-progress")
        link = f.wait_for("a#report-link[href$='/runs/1']", timeout=120)
        assert "Der Erstimport ist beendet" in browser.page_source and "Lauf beendet" in browser.page_source
        assert f.find("#fingerprint").text.startswith("…")
        f.shot("initial-import-finished")

        # the report, and a failed record's explanation
        link.click()
        f.wait_for("#counts")
        f.shot("report")
        explain = f.find("#failed a.explain")
        resource, sid = explain.get_attribute("href").rstrip("/").split("/")[-2:]
        explain.click()
        trace = f.wait_for("#trace")
        # the same trace as `casavi-sync explain`: the source record, the rules, the next run's decision
        assert trace.text.startswith(f"SCALARA {resource} {sid}") and "rule " in trace.text
        assert "next run:" in trace.text
        f.shot("explain")

        # run now
        f.go("/tenants/default/runs")
        f.find("#run-now").click()
        f.wait_for("#progress")
        f.shot("run-now-progress")
        f.wait_for("a#report-link[href$='/runs/2']", timeout=120)
        f.shot("run-now-finished")
        assert [r.trigger for r in c.dep.store().runs("default")] == ["manual", "initial"]

        # another tenant is out of reach
        f.go("/tenants/hv-sued/scalara")
        assert "Nicht gefunden" in browser.page_source and "hv-sued" not in f.find("main").text
        f.shot("other-tenant-refused")

        # English, dates in the tenant's zone
        f.go("/lang/en?next=/tenants")
        f.wait_for("#tenants")
        assert "Tenants" in browser.page_source and ("CET" in browser.page_source or "CEST" in browser.page_source)
        f.shot("english")

        for html in f.pages:
            for secret in c.secrets():
                assert secret not in html
