"""The DAGs' Params in the real Airflow UI: a real api-server and dag-processor (no scheduler: the runs stay
queued; the tests through dag.test() show the values are used), a person signing in and filling the trigger form
in Debian's Chromium, and the conf each run was created with read back over the REST API."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from parking_ml.config import Settings
from parking_ml.ops import stack
from parking_ml.ops.airflow_api import AirflowApi

pytestmark = pytest.mark.integration

DAGS = ["parking_ingest", "parking_train"]


@pytest.fixture(scope="module")
def airflow_ui(tmp_path_factory) -> Iterator[tuple[str, str]]:
    home = tmp_path_factory.mktemp("trigger-form")
    settings = Settings(
        home=home,
        airflow_port=stack.free_port(),
        mlflow_port=stack.free_port(),
        api_port=stack.free_port(),
    )
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    try:
        stack.up(settings, only=["airflow-api-server", "airflow-dag-processor"])
        url = f"http://{settings.host}:{settings.airflow_port}"
        password = stack.airflow_admin_password(settings) or ""
        api = AirflowApi(url, "admin", password)
        try:
            api.wait_for_dags(DAGS, timeout_s=180)
        finally:
            api.close()
        yield url, password
    finally:
        stack.down(settings)


def _headers(url: str, password: str) -> dict[str, str]:
    resp = httpx.post(f"{url}/auth/token", json={"username": "admin", "password": password}, timeout=30)
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


def _confs(url: str, password: str, dag_id: str) -> list[dict]:
    """The conf of each run of dag_id, oldest first."""
    resp = httpx.get(
        f"{url}/api/v2/dags/{dag_id}/dagRuns",
        params={"order_by": "run_after"},
        headers=_headers(url, password),
        timeout=30,
    )
    return [run["conf"] for run in resp.json()["dag_runs"]]


def _open_trigger_form(page, url: str, dag_id: str):
    page.goto(f"{url}/dags/{dag_id}")
    page.get_by_role("button", name="Trigger").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Run Parameters").wait_for()
    return dialog


def test_the_trigger_form_shows_the_params_and_creates_runs_with_them(browser, airflow_ui, tmp_path):
    from playwright.sync_api import expect

    url, password = airflow_ui
    shots = tmp_path / "screenshots"
    shots.mkdir()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{url}/")
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda u: "login" not in u, timeout=30_000)

        # train: titles and descriptions shown; a profile picked, trials typed, a path typed then cleared
        dialog = _open_trigger_form(page, url, "parking_train")
        for text in ("Training profile", "Optuna trials", "Starting weights", "Empty: PARKING_PROFILE"):
            expect(dialog.get_by_text(text).first).to_be_visible()
        dialog.get_by_role("combobox").click()
        page.get_by_role("option", name="smoke: tests, seconds").click()
        dialog.locator("[name=element_n_trials]").fill("3")
        weights = dialog.locator("[name=element_init_weights]")
        weights.fill("/tmp/start.pt")
        weights.fill("")
        page.screenshot(path=str(shots / "airflow-trigger-form.png"))
        dialog.get_by_role("button", name="Trigger").click()
        expect(dialog).to_be_hidden()

        # ingest: one batch, then the default (all)
        for value in ("demo-7", ""):
            dialog = _open_trigger_form(page, url, "parking_ingest")
            expect(dialog.get_by_text("Landing batch", exact=True)).to_be_visible()
            field = dialog.locator("[name=element_batch]")
            field.fill("typed first")
            field.fill(value)
            dialog.get_by_role("button", name="Trigger").click()
            expect(dialog).to_be_hidden()
    finally:
        context.close()

    # an emptied field arrives as null: "the setting", as the tasks read it
    assert _confs(url, password, "parking_train") == [{"profile": "smoke", "n_trials": 3, "init_weights": None}]
    assert _confs(url, password, "parking_ingest") == [{"batch": "demo-7"}, {"batch": None}]


def test_the_rest_api_refuses_a_conf_outside_the_params_schema(airflow_ui):
    url, password = airflow_ui
    headers = _headers(url, password)
    for dag_id, conf, says in (
        ("parking_ingest", {"batch": "../raw"}, "does not match"),
        ("parking_train", {"profile": "huge"}, "is not one of"),
        ("parking_train", {"n_trials": 0}, "less than the minimum"),
    ):
        r = httpx.post(
            f"{url}/api/v2/dags/{dag_id}/dagRuns", headers=headers, json={"logical_date": None, "conf": conf}
        )
        assert r.status_code == 400 and says in r.text, (dag_id, conf, r.text[:300])
