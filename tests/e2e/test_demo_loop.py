"""The whole loop as `make demo` runs it, in the smoke profile, through the real servers: MLflow, Airflow
(api-server, scheduler, dag-processor, triggerer), the inference API; a synthetic landing batch, the DAG chain
driven over Airflow's REST API, a champion, an API answer, default and winter tiles through the API and a
`parking_drift` run on each window; the reports listed by the Airflow UI plugin. Then the demo once more (nothing
new to ingest: the champion stays), and a person in a browser: the Airflow UI (trigger `parking_ingest` by
clicking, see it succeed, open the drift reports from the navigation) and the MLflow UI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from parking_ml.ops.stack import free_port

pytestmark = pytest.mark.e2e
CLI = str(Path(sys.executable).parent / "parking-ml")
REPO = Path(__file__).resolve().parents[2]
PIPELINE = ("parking_ingest", "parking_preprocess", "parking_train", "parking_promote")
# per style. A smoke model's drift reference holds ~8 rows (its training tiles): MIN_ROWS lets the report judge
# it, and reference + live rows stay above 30, the fewest the embedding drift's t-SNE accepts
DRIFT_TILES = 32
MIN_ROWS = 8


def _demo(env: dict[str, str]) -> subprocess.CompletedProcess:
    argv = [CLI, "demo", "--n", "12", "--size", "256", "--drift-tiles", str(DRIFT_TILES), "--timeout", "900"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1500)


def _json_log_lines(text: str) -> list[str]:
    return [line for line in text.replace("\r", "\n").splitlines() if '{"ts": ' in line]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[dict]:
    """`parking-ml demo` once (smoke profile, a 12-image batch), with the stack left running for the tests."""
    tmp = tmp_path_factory.mktemp("demo")
    home = tmp / "var"
    ports = {"mlflow": free_port(), "airflow": free_port(), "api": free_port()}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW"))},
        "PARKING_HOME": str(home),
        "PARKING_PROFILE": "smoke",
        "PARKING_RELOAD_INTERVAL_S": "2",
        "PARKING_MLFLOW_PORT": str(ports["mlflow"]),
        "PARKING_AIRFLOW_PORT": str(ports["airflow"]),
        "PARKING_API_PORT": str(ports["api"]),
        # a first smoke model cannot clear the real quality bar; the gate itself is tested elsewhere
        "PARKING_PROMOTION_MIN_QUALITY": "0",
        "PARKING_DRIFT_MIN_ROWS": str(MIN_ROWS),
        "PARKING_DRIFT_FLUSH_INTERVAL_S": "2",
    }
    try:
        t0 = time.monotonic()
        run = _demo(env)
        print(run.stdout)  # pytest shows it with a failure: the stages and their times
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
        password = json.loads((home / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())
        yield {
            "run": run,
            "seconds": time.monotonic() - t0,
            "env": env,
            "home": home,
            "airflow": f"http://127.0.0.1:{ports['airflow']}",
            "mlflow": f"http://127.0.0.1:{ports['mlflow']}",
            "api": f"http://127.0.0.1:{ports['api']}",
            "password": password["admin"],
            "tmp": tmp,
        }
    finally:
        down = subprocess.run([CLI, "stack", "down"], env=env, capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr[-2000:]


def _airflow(demo) -> httpx.Client:
    token = httpx.post(
        f"{demo['airflow']}/auth/token", json={"username": "admin", "password": demo["password"]}, timeout=30
    ).json()["access_token"]
    return httpx.Client(base_url=demo["airflow"], headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _runs(client: httpx.Client, dag_id: str) -> list[dict]:
    resp = client.get(f"/api/v2/dags/{dag_id}/dagRuns", params={"order_by": "run_after", "limit": 100})
    assert resp.status_code == 200, resp.text
    return resp.json()["dag_runs"]


def _champion(demo):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=demo["mlflow"]).get_model_version_by_alias("parking-spaces", "champion")


def _utc(value: str):
    import pandas as pd

    return pd.Timestamp(value).tz_convert("UTC")


def _drift_runs(client: httpx.Client) -> list[dict]:
    """The demo's parking_drift runs: those triggered with a window (the daily one has none)."""
    return [r for r in _runs(client, "parking_drift") if (r.get("conf") or {}).get("since")]


def test_each_stage_of_the_loop(demo):
    run, home = demo["run"], demo["home"]
    for header in ("1/6 synthetic", "2/6 local stack", "3/6 pipeline", "4/6 inference API", "5/6 drift", "6/6"):
        assert header in run.stdout
    # the lake: raw images, a processed version, nothing quarantined for a clean batch
    lake = home / "lake"
    assert len(list((lake / "raw" / "images").iterdir())) == 12
    version = (lake / "processed" / "LATEST").read_text().strip()
    info = json.loads((lake / "processed" / version / "dataset.json").read_text())
    assert not (lake / "quarantine").exists() or not any((lake / "quarantine").rglob("*.png"))

    with _airflow(demo) as client:
        # every DAG of the chain ran, and its runs succeeded
        for dag_id in PIPELINE:
            runs = _runs(client, dag_id)
            assert runs and all(r["state"] == "success" for r in runs), (dag_id, [r["state"] for r in runs])
        drift_runs = _drift_runs(client)
        assert [r["state"] for r in drift_runs] == ["success", "success"]
        # the daily drift run of the fresh stack came before any champion: skipped, not failed
        daily = [r for r in _runs(client, "parking_drift") if r["run_type"] == "scheduled"]
        assert all(r["state"] == "success" for r in daily), daily

        # the registry has a champion, the API serves exactly that version
        champion = _champion(demo)
        assert champion.tags["dataset_version"] == version
        served = httpx.get(f"{demo['api']}/v1/model", timeout=10).json()
        assert str(served["version"]) == str(champion.version)

        # one report per window, each with a verdict, and the plugin lists them to a logged-in client
        from monitoring.store import read_index
        from parking_ml.config import Settings
        from parking_ml.lake import Lake

        index = read_index(Lake.from_settings(Settings(home=home)))
        windows = {(_utc(r["conf"]["since"]), _utc(r["conf"]["until"])) for r in drift_runs}
        keys = [(_utc(a), _utc(b)) for a, b in zip(index["window_start"], index["window_end"], strict=True)]
        mine = index[[key in windows for key in keys]]
        assert len(mine) == 2, index[["window_start", "window_end", "verdict"]]
        assert set(mine["verdict"]) <= {"ok", "drift", "not_enough_data"}
        assert set(mine["model_version"].astype(str)) == {str(champion.version)}
        assert (mine["rows"] == DRIFT_TILES).all()
        listed = client.get("/parking-drift/reports.json")
        assert listed.status_code == 200
        assert set(mine["report_id"]) <= {r["report_id"] for r in listed.json()}
        assert httpx.get(f"{demo['airflow']}/parking-drift/reports.json", timeout=30).status_code == 401

    # the summary: data, champion and its scores, the answer, both verdicts, the URLs; no line over 100 columns
    summary = run.stdout[run.stdout.index("6/6 summary") :]
    assert f"{version}  12 images, {info['n_tiles']} tiles" in summary
    assert f"parking-spaces v{champion.version}" in summary and "CV " in summary and "holdout " in summary
    assert f"v{champion.version}: " in summary and "free" in summary
    assert "drift default" in summary and "drift winter" in summary
    for report_id in mine["report_id"]:
        assert report_id in summary
    for url in (demo["airflow"], f"{demo['airflow']}/plugin/drift-reports", demo["mlflow"], f"{demo['api']}/docs"):
        assert url in summary
    assert demo["password"] in summary
    assert max(len(line) for line in summary.splitlines()) <= 100
    # people get short lines; the JSON log lines are in the demo's log file
    assert _json_log_lines(run.stdout) == [] and _json_log_lines(run.stderr) == []
    assert _json_log_lines((home / "logs" / "demo.log").read_text())


def test_a_second_demo_keeps_the_champion(demo):
    """Nothing new to ingest: the chain stops after ingest, the champion keeps serving, drift runs again."""
    before = _champion(demo)
    with _airflow(demo) as client:
        trains_before = len(_runs(client, "parking_train"))
        rerun = _demo(demo["env"])
        assert rerun.returncode == 0, rerun.stdout[-4000:] + rerun.stderr[-4000:]
        assert "nothing new reached parking_preprocess; the current champion keeps serving" in rerun.stdout
        assert len(_runs(client, "parking_train")) == trains_before
        assert [r["state"] for r in _drift_runs(client)] == ["success"] * 4
    assert _champion(demo).version == before.version
    assert f"parking-spaces v{before.version}" in rerun.stdout


def _login(page, demo) -> None:
    page.goto(f"{demo['airflow']}/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(demo["password"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda u: "login" not in u, timeout=60_000)


def test_a_person_in_the_airflow_and_mlflow_uis(demo, browser):
    """Sign in, trigger parking_ingest by clicking, see its run succeed, open the drift reports from the
    navigation and one report; the MLflow UI shows the study. Screenshots under the test's tmp output."""
    from playwright.sync_api import expect

    shots = demo["tmp"] / "screenshots"
    shots.mkdir(exist_ok=True)
    url = demo["airflow"]
    with _airflow(demo) as client:
        ingest_before = {r["dag_run_id"] for r in _runs(client, "parking_ingest")}
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    try:
        _login(page, demo)
        page.goto(f"{url}/dags")
        expect(page.get_by_text("parking_promote").first).to_be_visible(timeout=60_000)
        page.screenshot(path=str(shots / "airflow-dags.png"))

        # trigger parking_ingest from its page, with the form's defaults
        page.goto(f"{url}/dags/parking_ingest")
        page.get_by_role("button", name="Trigger").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("Run Parameters").wait_for()
        dialog.get_by_role("button", name="Trigger").click()
        expect(dialog).to_be_hidden()
        with _airflow(demo) as client:
            deadline = time.monotonic() + 300
            while True:
                new = [r for r in _runs(client, "parking_ingest") if r["dag_run_id"] not in ingest_before]
                if new and new[-1]["state"] in ("success", "failed"):
                    break
                assert time.monotonic() < deadline, f"parking_ingest run not finished: {new}"
                time.sleep(2)
        assert new[-1]["state"] == "success" and new[-1]["run_type"] == "manual"
        # the UI shows the run's state
        page.goto(f"{url}/dags/parking_ingest/runs/{new[-1]['dag_run_id']}")
        expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=60_000)
        page.screenshot(path=str(shots / "airflow-ingest-run.png"))

        # Browse > Drift reports in the navigation, then the newest report
        page.goto(f"{url}/dags")
        page.get_by_role("button", name="Browse").click()
        page.get_by_role("menuitem", name="Drift reports").click()
        page.wait_for_url("**/plugin/drift-reports", timeout=30_000)
        frame = page.frame_locator("iframe").first
        expect(frame.get_by_role("heading", name="Drift reports")).to_be_visible(timeout=60_000)
        rows = frame.locator("tbody tr")
        expect(rows.first).to_contain_text("parking-spaces v")
        assert rows.count() >= 4  # two windows, two demo runs
        page.screenshot(path=str(shots / "airflow-drift-reports.png"))
        newest = rows.first.locator("a").get_attribute("href")
        assert newest.startswith("/parking-drift/report/")
        rows.first.locator("a").click()
        # the report opens inside the Airflow UI's frame: Evidently's page, or the reason there is none
        page.wait_for_url(f"**{newest}", timeout=30_000)
        report = page.frame_locator("iframe").first
        expect(report.locator("body")).not_to_be_empty(timeout=60_000)
        page.wait_for_timeout(2_000)  # Evidently draws its charts after load
        page.screenshot(path=str(shots / "airflow-drift-report.png"))

        # the MLflow UI: the model's experiment with the study's runs
        found = httpx.get(
            f"{demo['mlflow']}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": "parking-spaces"}
        )
        page.set_viewport_size({"width": 1600, "height": 900})
        page.goto(f"{demo['mlflow']}/#/experiments/{found.json()['experiment']['experiment_id']}/runs")
        expect(page.get_by_text("study parking-spaces", exact=False).first).to_be_visible(timeout=60_000)
        close = page.locator("button[aria-label=Close]")  # MLflow's assistant panel, when it opens
        if close.count():
            close.first.click()
        page.screenshot(path=str(shots / "mlflow-study.png"))
    finally:
        context.close()
    assert sorted(p.name for p in shots.iterdir()) == [
        "airflow-dags.png",
        "airflow-drift-report.png",
        "airflow-drift-reports.png",
        "airflow-ingest-run.png",
        "mlflow-study.png",
    ]
    if os.environ.get("PARKING_UPDATE_SCREENSHOTS") == "1":
        for name in ("airflow-dags.png", "airflow-drift-reports.png", "airflow-drift-report.png", "mlflow-study.png"):
            shutil.copy(shots / name, REPO / "docs" / "images" / name)


def test_a_failed_run_names_its_task_and_prints_its_log_tail(demo):
    """What the demo prints when a DAG run fails: the run, the task that failed and the end of its log."""
    from parking_ml.ops.airflow_api import AirflowApi, AirflowRunFailed

    api = AirflowApi(demo["airflow"], "admin", demo["password"])
    try:
        # a version the registry does not have: the report task fails (and its one retry too)
        run_id = api.trigger("parking_drift", conf={"model_version": "999"})
        with pytest.raises(AirflowRunFailed) as failed:
            api.wait_run("parking_drift", run_id=run_id, timeout_s=600)
    finally:
        api.close()
    message = str(failed.value)
    assert failed.value.run_id == run_id
    assert f"parking_drift run {run_id} failed at task report (try 2)" in message
    assert "also not run or failed: publish_drift, alert" in message
    tail = message.split("--- last lines of its log ---\n", 1)[1]
    assert "999" in tail and len(tail.splitlines()) <= 30
