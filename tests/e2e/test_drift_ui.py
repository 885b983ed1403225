"""A person in a real browser: logs in to the Airflow UI, opens Browse -> Drift reports, then a report."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitoring import store
from parking_ml.config import Settings
from parking_ml.lake import Lake
from tests.fakes.servers import airflow_api_server

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_logged_in_user_opens_a_drift_report_from_the_navigation(airflow_home, tmp_path, browser):
    home = tmp_path / "var"
    now = datetime(2026, 12, 6, 6, tzinfo=UTC)
    summary = {
        "created": now.isoformat(), "model_name": "parking-spaces", "model_version": "4",
        "window_start": "2026-12-05T06:00:00+00:00", "window_end": now.isoformat(), "rows": 250,
        "drift_share": 0.6, "drifted_features": ["saturation"], "verdict": "drift", "message": "m",
    }  # fmt: skip
    rid = store.save_report(
        Lake.from_settings(Settings(home=home)), summary, "<html><body><h1>THE REPORT</h1></body></html>", "{}", now
    )
    env = {**os.environ, "PARKING_HOME": str(home), "PYTHONPATH": str(REPO)}
    with airflow_api_server(env, tmp_path / "api-server.log", airflow_home, base_url=True) as (url, _, password):
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        # before the login, the plugin's page is refused like any API call
        assert page.goto(f"{url}/parking-drift/").status == 401
        page.goto(f"{url}/", wait_until="networkidle")
        page.wait_for_selector("input", timeout=60_000)
        page.locator("input").nth(0).fill("admin")
        page.locator("input").nth(1).fill(password)
        page.keyboard.press("Enter")
        page.wait_for_url(lambda u: "/auth/" not in u, timeout=60_000)
        # the navigation: Browse -> Drift reports
        page.get_by_role("button", name="Browse").click()
        page.get_by_text("Drift reports").first.click()
        page.wait_for_url(lambda u: u.endswith("/plugin/drift-reports"), timeout=60_000)
        frame = page.frame_locator("iframe").first
        link = frame.get_by_role("link", name="2026-12-06 06:00:00 UTC")
        link.wait_for(timeout=60_000)
        assert frame.get_by_text("drift", exact=True).count() == 1
        link.click()
        frame.get_by_role("heading", name="THE REPORT").wait_for(timeout=60_000)
        assert f"{url}/parking-drift/report/{rid}" in [f.url for f in page.frames]
        page.close()
