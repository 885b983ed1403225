"""Shared fixtures: real servers (MLflow, moto S3) and a real Airflow metadata DB, all on loopback free ports.

Airflow reads its configuration when first imported, so its environment is set here, at conftest import,
before any test module can import airflow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent

# Read before the PARKING_* variables are cleared below: CI (.ci/run) sets it so a missing browser fails.
REQUIRE_BROWSER = os.environ.get("PARKING_REQUIRE_BROWSER") == "1" or os.environ.get("CI", "").lower() == "true"
CHROMIUM = Path("/usr/bin/chromium")
# headless on a closed network: without the background-networking flags Chromium keeps dialling Google's hosts
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BROWSER_INSTALL = (
    "install Debian's Chromium with `apt-get update && apt-get install -y chromium chromium-driver` (as root) "
    "and Playwright with `pip install -c requirements/lock.txt playwright==1.65.0` (the dev extra); "
    "never `playwright install`"
)

# A developer's own PARKING_* / MLflow settings must not leak into tests.
for _var in list(os.environ):
    if _var.startswith(("PARKING_", "AIRFLOW_", "AIRFLOW__")) or _var in ("MLFLOW_TRACKING_URI",):
        del os.environ[_var]
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="parking-tests-"))

from parking_ml.config import Settings  # noqa: E402
from parking_ml.ops.stack import airflow_env, free_port, start_local_mlflow, stop_pid  # noqa: E402
from tests.fakes import REPO  # noqa: E402

os.environ.update(airflow_env(Settings(home=_SESSION_TMP / "airflow-var")))
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
sys.path.insert(0, str(REPO / "dags"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_SESSION_TMP, ignore_errors=True)


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
    proc, uri = start_local_mlflow(tmp_path_factory.mktemp("mlflow"))
    try:
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


@pytest.fixture
def postgres_db() -> Iterator[str]:
    """A fresh database on the local PostgreSQL (SQLAlchemy URL), dropped after the test."""
    from tests.fakes.postgres import fresh_database, pg_url

    with fresh_database("parking_test") as name:
        yield pg_url(name)


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


def _script_module(name: str, path: Path):
    """A script as a module: the benchmarks and scripts/ are files, not a package."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def bench_train():
    return _script_module("bench_train", REPO / "bench" / "train.py")


@pytest.fixture(scope="session")
def pretrain_demo():
    """scripts/pretrain_demo.py (its heavy imports wait inside main())."""
    return _script_module("pretrain_demo", REPO / "scripts" / "pretrain_demo.py")


@pytest.fixture(scope="session")
def check_deploy():
    """scripts/check_deploy.py, the offline deployment checks that `make check-deploy` runs."""
    return _script_module("check_deploy", REPO / "scripts" / "check_deploy.py")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's headless Chromium driven by Playwright. Missing: a skip naming the install command, or a failure
    where the browser is required (CI, PARKING_REQUIRE_BROWSER=1). Per module: Playwright's sync API keeps its own
    event loop on the main thread while it lives, which the other tests' asyncio code should not meet."""
    reason = None
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} not found: {BROWSER_INSTALL}"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = f"the playwright package is not installed: {BROWSER_INSTALL}"
    if reason:
        if REQUIRE_BROWSER:
            pytest.fail(f"browser tests are required here (CI / PARKING_REQUIRE_BROWSER=1) but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def require_command() -> Callable[[str, str], None]:
    """A Debian command a test needs (promtool, prometheus): missing, a skip naming the install command, or a
    failure where the tools are required (CI, PARKING_REQUIRE_BROWSER=1)."""

    def _require(name: str, package: str) -> None:
        if shutil.which(name) is None:
            reason = f"{name} not found: apt-get install -y {package}"
            if REQUIRE_BROWSER:
                pytest.fail(f"required here (CI / PARKING_REQUIRE_BROWSER=1) but {reason}")
            pytest.skip(reason)

    return _require
