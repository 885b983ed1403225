"""Real servers for tests: the API app under uvicorn, Airflow's api-server, on free loopback ports."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from parking_ml.ops.stack import free_port, stop_pid
from tests.fakes import VENV_BIN


@contextmanager
def running(app) -> Iterator[str]:
    """A real uvicorn server for app on a free loopback port, in a thread; lifespan runs on exit."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
        assert not thread.is_alive()


def wait_ready(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready: {httpx.get(f'{url}/readyz').text}")


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus metric's samples with these labels in ``text`` (fails when there is none)."""
    total = 0.0
    found = False
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    assert found, f"{name} {labels} not in metrics"
    return total


@contextmanager
def airflow_api_server(
    env: dict[str, str], log: Path, airflow_home: Path, base_url: bool = False
) -> Iterator[tuple[str, int, str]]:
    """A real Airflow api-server (plugins loaded from env's AIRFLOW__CORE__PLUGINS_FOLDER) on a free port:
    (url, port, the admin's generated password); stopped with its process group on exit. ``base_url``: the UI's
    links point at that port (a browser follows them)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if base_url:
        env = {**env, "AIRFLOW__API__BASE_URL": url}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port), "-w", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # stop_pid ends its process group, never pytest's
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/api/v2/monitor/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "api-server did not start"
            time.sleep(1)
        # the simple auth manager wrote the admin's generated password on its first start
        password = json.loads((airflow_home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        yield url, port, password
    finally:
        stop_pid(proc.pid, timeout_s=15)
