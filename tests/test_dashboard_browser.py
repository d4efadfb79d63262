"""The live dashboard in headless Chromium against the running gateway: numbers change after an SMS.

Needs Debian's chromium and chromium-driver (`make test-deps` installs them); skips naming them
when one is missing. Leaves a screenshot in test-artifacts/dashboard.png.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from tests.harness import ROOT, requires_programs, start_gateway

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "test-artifacts"
AUTH = {"Authorization": "Bearer demo-token", "Content-Type": "application/json"}

pytestmark = [pytest.mark.integration,
              requires_programs("dashboard in headless Chromium", "chromium", "chromedriver")]


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, method="POST", headers=AUTH, data=json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.load(resp)


def _browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1440,1400", "--force-device-scale-factor=1",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _number(text: str) -> int:
    digits = text.replace(",", "").strip()
    return int(digits) if digits.isdigit() else -1


def test_dashboard_shows_live_numbers(tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    gw = start_gateway(tmp_path / "gw", "--population", "0")
    driver = None
    try:
        driver = _browser(tmp_path / "chrome-profile")
        driver.get(gw.url("/"))
        wait = WebDriverWait(driver, 30, poll_frequency=0.2)
        wait.until(lambda d: "live" in d.find_element(By.ID, "conn-state").text)
        before = _number(driver.find_element(By.ID, "sms-in-total").text)
        assert before == _get(gw.url("/api/stats"))["sms"]["in_total"]  # no traffic yet: the page shows the API's

        for i, text in enumerate(("200", "CXYE", "0000", "CXLL", "200")):
            _post(gw.url("/api/messages"), {"from": f"1380000000{i + 1}", "to": "10086", "text": text})
        _post(gw.url("/api/campaigns/care-roaming/run"), {})

        wait.until(lambda d: _number(d.find_element(By.ID, "sms-in-total").text) >= before + 5)
        assert _number(driver.find_element(By.ID, "sms-in-rate").text) >= 5
        # the SVG area chart was drawn: a filled area and a line per series
        assert len(driver.find_elements(By.CSS_SELECTOR, "#sms-chart path")) == 4
        assert len(driver.find_elements(By.CSS_SELECTOR, "#outbox-bars .bar-row")) == 6
        assert "坐席排队" in driver.find_element(By.ID, "card-queue").text

        # Chinese text is drawn with a CJK font, not tofu: the glyphs are wider than Latin ones
        width = driver.execute_script(
            "const c=document.createElement('canvas').getContext('2d');c.font='20px sans-serif';"
            "return [c.measureText('满意度调查').width, c.measureText('iiiii').width];")
        assert width[0] > 2 * width[1]

        try:  # campaign progress is refreshed every few seconds; the screenshot is nicer with it
            # the card is redrawn while we read it once the campaign sends (inside its window): read again
            WebDriverWait(driver, 8, poll_frequency=0.5, ignored_exceptions=(StaleElementReferenceException,)).until(
                lambda d: d.find_element(By.CSS_SELECTOR, "#campaigns .camp-id").text == "care-roaming")
        except TimeoutException:
            pass  # outside its send window the run queues nothing; the card then shows zeros
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors  # CSP violations, JS errors, missing assets
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))
    finally:
        if driver is not None:
            driver.quit()
        gw.stop()
