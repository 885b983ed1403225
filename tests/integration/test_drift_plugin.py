"""The "Drift reports" plugin inside a real Airflow api-server: listed in the UI's navigation, its pages
behind the Airflow login (JWT as Bearer header or as the UI's `_token` cookie), traversal refused."""

from __future__ import annotations

import http.client
import os
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from monitoring import store
from parking_ml.config import Settings
from parking_ml.lake import Lake
from tests.fakes.servers import airflow_api_server

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _summary(created: datetime, version: str, verdict: str, share: float) -> dict:
    return {
        "created": created.isoformat(),
        "model_name": "parking-spaces",
        "model_version": version,
        "window_start": "2026-12-05T12:00:00+00:00",
        "window_end": created.isoformat(),
        "rows": 250,
        "drift_share": share,
        "drifted_features": ["saturation", "edge_density"] if verdict == "drift" else [],
        "verdict": verdict,
        "message": f"{verdict} message",
    }


@pytest.fixture(scope="module")
def airflow_api(tmp_path_factory, airflow_home):
    """A real api-server on the session's Airflow DB, its PARKING_HOME's lake holding two reports."""
    home = tmp_path_factory.mktemp("plugin") / "var"
    lake = Lake.from_settings(Settings(home=home))
    older = store.save_report(
        lake, _summary(datetime(2026, 12, 5, 6, tzinfo=UTC), "3", "ok", 0.1), "<html>older report</html>", "{}",
        datetime(2026, 12, 5, 6, tzinfo=UTC),
    )  # fmt: skip
    newer = store.save_report(
        lake, _summary(datetime(2026, 12, 6, 6, tzinfo=UTC), "4", "drift", 0.6), "<html>newer report</html>", "{}",
        datetime(2026, 12, 6, 6, tzinfo=UTC),
    )  # fmt: skip
    lake.write_text("monitoring/secret.txt", "not for the browser")
    env = {**os.environ, "PARKING_HOME": str(home), "PYTHONPATH": str(REPO)}
    with airflow_api_server(env, home / "api-server.log", airflow_home) as (url, port, password):
        token = httpx.post(f"{url}/auth/token", json={"username": "admin", "password": password}).json()
        yield {"url": url, "token": token["access_token"], "older": older, "newer": newer, "port": port}


def _raw_get(port: int, path: str, token: str | None) -> int:
    """GET with the path sent exactly as written (http.client does not normalise `..` or %2F)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    status = conn.getresponse().status
    conn.close()
    return status


def test_drift_reports_is_in_the_navigation(airflow_api):
    headers = {"Authorization": f"Bearer {airflow_api['token']}"}
    plugins = httpx.get(f"{airflow_api['url']}/api/v2/plugins", headers=headers).json()["plugins"]
    mine = next(p for p in plugins if p["name"] == "parking_drift")
    view = mine["external_views"][0]
    assert (view["name"], view["href"], view["destination"]) == ("Drift reports", "/parking-drift/", "nav")
    assert mine["fastapi_apps"][0]["url_prefix"] == "/parking-drift"


def test_anonymous_and_forged_calls_are_refused(airflow_api):
    url = airflow_api["url"]
    rid = airflow_api["newer"]
    for path in ("/parking-drift/", "/parking-drift/reports.json", f"/parking-drift/report/{rid}"):
        assert httpx.get(url + path).status_code == 401, path
        forged = httpx.get(url + path, headers={"Authorization": "Bearer eyJhbGciOiJIUzUxMiJ9.e30.c2lnbmF0dXJl"})
        assert forged.status_code in (401, 403), path
        assert httpx.get(url + path, cookies={"_token": "not-a-jwt"}).status_code in (401, 403), path


def test_logged_in_user_sees_the_list_newest_first_and_each_report(airflow_api):
    url, token = airflow_api["url"], airflow_api["token"]
    headers = {"Authorization": f"Bearer {token}"}
    listing = httpx.get(f"{url}/parking-drift/reports.json", headers=headers)
    assert listing.status_code == 200
    rows = listing.json()
    assert [r["report_id"] for r in rows] == [airflow_api["newer"], airflow_api["older"]]
    assert (rows[0]["model_version"], rows[0]["verdict"], rows[0]["rows"]) == ("4", "drift", 250)
    # the page the navigation opens, authenticated by the UI's cookie as in the browser
    page = httpx.get(f"{url}/parking-drift/", cookies={"_token": token})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    assert text.index("v4") < text.index("v3") and "60%" in text and "saturation, edge_density" in text
    assert f"/parking-drift/report/{airflow_api['newer']}" in text
    report = httpx.get(f"{url}/parking-drift/report/{airflow_api['newer']}", headers=headers)
    assert report.status_code == 200 and report.text == "<html>newer report</html>"
    summary = httpx.get(f"{url}/parking-drift/report/{airflow_api['older']}/summary.json", headers=headers)
    assert summary.status_code == 200 and summary.json()["model_version"] == "3"


@pytest.mark.parametrize(
    "path",
    [
        "/parking-drift/report/../../secret.txt",
        "/parking-drift/report/..%2F..%2Fsecret.txt",
        "/parking-drift/report/%2E%2E%2F%2E%2E%2Fsecret.txt",
        "/parking-drift/report//etc/passwd",
        "/parking-drift/report/%2Fetc%2Fpasswd",
        "/parking-drift/report/20261206T060000Z/../../secret.txt",
        "/parking-drift/report/20261206T060000Z/..%2F..%2Fsecret.txt",
        "/parking-drift/report/20261206T060000Z/report.html%00",
        "/parking-drift/report/index.parquet",
        "/parking-drift/report/20991231T000000Z",
    ],
)
def test_paths_outside_the_reports_are_404(airflow_api, path):
    status = _raw_get(airflow_api["port"], path, airflow_api["token"])
    assert status == 404, (path, status)
    assert _raw_get(airflow_api["port"], path, None) in (401, 404), path
