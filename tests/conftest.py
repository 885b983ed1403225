"""Shared fixtures: real servers (MLflow, moto S3) and a real Airflow metadata DB, all on loopback free ports.

Airflow reads its configuration when first imported, so its environment is set here, at conftest import,
before any test module can import airflow.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

# A developer's own PARKING_* / MLflow settings must not leak into tests.
for _var in list(os.environ):
    if _var.startswith(("PARKING_", "AIRFLOW_", "AIRFLOW__")) or _var in ("MLFLOW_TRACKING_URI",):
        del os.environ[_var]
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="parking-tests-"))

from parking_ml.config import Settings  # noqa: E402
from parking_ml.stack import airflow_env, stop_pid  # noqa: E402

os.environ.update(airflow_env(Settings(home=_SESSION_TMP / "airflow-var")))
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
sys.path.insert(0, str(REPO / "dags"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_SESSION_TMP, ignore_errors=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered:\n{tail}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout_s}s")


@pytest.fixture(autouse=True)
def _isolated_environ() -> Iterator[None]:
    """mlflow.set_tracking_uri()/set_registry_uri() write MLFLOW_* into os.environ; without this, one test's
    server address leaks into every later test's Settings and subprocesses."""
    saved = dict(os.environ)
    # set by module- or session-scoped fixtures that outlive one test: never part of a test's starting env
    for var in [v for v in os.environ if v.startswith("MLFLOW_")]:
        del os.environ[var]
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings rooted in this test's tmp dir; keyword overrides win over the environment."""

    def _make(**overrides: object) -> Settings:
        overrides.setdefault("home", tmp_path / "var")
        return Settings(**overrides)

    return _make


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server (SQLite backend, proxied artifacts) on a free loopback port."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = root / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(VENV_BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination",
                str(root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", 120, proc, log)
        yield uri
    finally:
        stop_pid(proc.pid, timeout_s=10)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A real S3 API (moto's threaded server) on a free loopback port, with test credentials in the env."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    creds = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in creds.items():
            mp.setenv(key, value)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.stop()


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """AIRFLOW_HOME with a migrated SQLite metadata DB (a real Airflow DB for dag.test())."""
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    if not (home / ".migrated").exists():
        proc = subprocess.run([str(VENV_BIN / "airflow"), "db", "migrate"], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"airflow db migrate failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        (home / ".migrated").write_text("ok")
    return home
