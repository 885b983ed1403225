"""The local stack: MLflow, Airflow (api-server, scheduler, dag-processor, triggerer) and the inference API as
separate processes bound to loopback, with logs and PID files under $PARKING_HOME.

Each process runs in its own session (process group) so that `down` can stop it together with every child it
forked (gunicorn/uvicorn workers, executor processes), first with SIGTERM, then SIGKILL after a timeout.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from parking_ml.config import Settings

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


class StackError(RuntimeError):
    """A component failed to start or stop; the message carries its log tail."""


@dataclass(frozen=True)
class Component:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int | None = None
    health_url: str | None = None
    # extra readiness check on the health response (e.g. Airflow's scheduler heartbeat)
    healthy: Callable[[httpx.Response], bool] = field(default=lambda r: r.status_code == 200)
    start_timeout_s: float = 90.0
    url: str | None = None


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    running: bool
    healthy: bool
    url: str | None


def _bin(name: str) -> str:
    """Console scripts of this venv (the stack must not pick up another install from PATH)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _airflow_secrets(settings: Settings) -> dict[str, str]:
    """Secrets shared by all Airflow processes: generated once, kept under $PARKING_HOME (0600)."""
    path = settings.airflow_home / "parking_secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    values = {"jwt_secret": secrets.token_urlsafe(32), "api_secret_key": secrets.token_urlsafe(32)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(values))
    tmp.chmod(0o600)
    tmp.replace(path)
    return values


def parking_env(settings: Settings) -> dict[str, str]:
    """PARKING_* and MLflow variables that child processes (and Airflow tasks) need to see the same settings."""
    env = {
        "PARKING_HOME": str(settings.home),
        "PARKING_LAKE_URL": settings.lake_url,
        "PARKING_PROFILE": settings.profile,
        "PARKING_MODEL_NAME": settings.model_name,
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "NO_ALBUMENTATIONS_UPDATE": "1",
    }
    if settings.s3_endpoint_url:
        env["PARKING_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    return env


def airflow_env(settings: Settings, dags_folder: Path | None = None) -> dict[str, str]:
    """Airflow configuration as env vars: SQLite metadata DB under $PARKING_HOME, the repo's dags/ and plugins/,
    examples off, new DAGs unpaused, loopback-only execution API."""
    home = settings.airflow_home
    shared = _airflow_secrets(settings)
    base = f"http://{settings.host}:{settings.airflow_port}"
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder or REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # two cores: a few task processes at most, or training and serving starve each other
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__API__BASE_URL": base,
        "AIRFLOW__API__SECRET_KEY": shared["api_secret_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": shared["jwt_secret"],
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        # the UI is the place people read; keep its dag list fresh without hammering two cores
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
    }


def mlflow_server_argv(backend_store_uri: str, artifacts_dir: Path | str, host: str, port: int) -> list[str]:
    """One MLflow tracking server: proxied artifacts, a single worker (job execution is turned off through
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false in its env: the defaults cost ~2 GiB on this machine)."""
    return [
        _bin("mlflow"),
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        str(artifacts_dir),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Wait for url to answer 200; fail early (with the log tail) if proc exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log_tail(log) if log else ""
            raise RuntimeError(f"{proc.args[:2]} exited with {proc.returncode} before {url} answered:\n{tail}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s")


def start_local_mlflow(
    root: Path, backend_store_uri: str | None = None, artifacts_destination: str | None = None
) -> tuple[subprocess.Popen, str]:
    """A throwaway MLflow server on a free loopback port (tests, benchmarks): (process, tracking URI).
    Artifacts go to ``artifacts_destination`` (e.g. s3://bucket/prefix, with MLFLOW_S3_ENDPOINT_URL and AWS_*
    in the environment) or root/artifacts. Stop it with stop_pid(proc.pid)."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = root / "mlflow.log"
    argv = mlflow_server_argv(
        backend_store_uri or f"sqlite:///{root / 'mlflow.db'}",
        artifacts_destination or root / "artifacts",
        "127.0.0.1",
        port,
    )
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", 120, proc, log)
    except BaseException:
        stop_pid(proc.pid, timeout_s=10)
        raise
    return proc, uri


def _airflow_components_healthy(resp: httpx.Response) -> bool:
    if resp.status_code != 200:
        return False
    body = resp.json()
    wanted = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return all(body.get(k, {}).get("status") == "healthy" for k in wanted)


def components(settings: Settings) -> list[Component]:
    """What `stack up` starts, in start order."""
    host = settings.host
    base_env = {**os.environ, **parking_env(settings)}
    mlflow_env = {**base_env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    mlflow_dir = settings.mlflow_dir
    af_env = {**base_env, **airflow_env(settings)}
    af_url = f"http://{host}:{settings.airflow_port}"
    out = [
        Component(
            name="mlflow",
            argv=mlflow_server_argv(
                f"sqlite:///{mlflow_dir / 'mlflow.db'}", mlflow_dir / "artifacts", host, settings.mlflow_port
            ),
            env=mlflow_env,
            port=settings.mlflow_port,
            health_url=f"http://{host}:{settings.mlflow_port}/health",
            url=f"http://{host}:{settings.mlflow_port}",
        ),
        Component(
            name="airflow-api-server",
            argv=[
                _bin("airflow"),
                "api-server",
                "--host",
                host,
                "--port",
                str(settings.airflow_port),
                "-w",
                "1",
            ],
            env=af_env,
            port=settings.airflow_port,
            health_url=f"{af_url}/api/v2/monitor/health",
            healthy=lambda r: r.status_code == 200,
            url=af_url,
        ),
        Component(name="airflow-scheduler", argv=[_bin("airflow"), "scheduler", "--skip-serve-logs"], env=af_env),
        Component(name="airflow-dag-processor", argv=[_bin("airflow"), "dag-processor"], env=af_env),
        Component(
            name="airflow-triggerer",
            argv=[_bin("airflow"), "triggerer", "--skip-serve-logs"],
            env=af_env,
            # the last Airflow part: once it is up, every Airflow component must report healthy
            health_url=f"{af_url}/api/v2/monitor/health",
            healthy=_airflow_components_healthy,
        ),
    ]
    # Hook for the inference API: started when the serving package is installed. /healthz is liveness only;
    # readiness (/readyz) waits for a champion model, which a fresh stack does not have yet.
    if importlib.util.find_spec("serving.app") is not None:
        out.append(
            Component(
                name="api",
                argv=[
                    _bin("parking-ml"),
                    "serve",
                    "--host",
                    host,
                    "--port",
                    str(settings.api_port),
                ],
                # its stderr is var/logs/api.log: JSON lines there, unless PARKING_LOG_FORMAT says otherwise;
                # live drift rows reach the local lake within seconds, so a drift report right after traffic sees them
                env={"PARKING_LOG_FORMAT": "json", "PARKING_DRIFT_FLUSH_INTERVAL_S": "5", **base_env},
                port=settings.api_port,
                health_url=f"http://{host}:{settings.api_port}/healthz",
                url=f"http://{host}:{settings.api_port}",
            )
        )
    return out


# --- process bookkeeping -----------------------------------------------------------------------------


def _pid_file(settings: Settings, name: str) -> Path:
    return settings.run_dir / f"{name}.pid"


def _log_file(settings: Settings, name: str) -> Path:
    return settings.logs_dir / f"{name}.log"


def _read_pid(settings: Settings, name: str) -> int | None:
    try:
        return int(_pid_file(settings, name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited child not yet reaped) is not running
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"(no log at {path})"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def _check_health(comp: Component, timeout: float = 10.0) -> bool:
    if comp.health_url is None:
        return True
    try:
        return comp.healthy(httpx.get(comp.health_url, timeout=timeout))
    except (httpx.HTTPError, ValueError):
        return False


def _wait_healthy(settings: Settings, comp: Component, pid: int) -> None:
    deadline = time.monotonic() + comp.start_timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            raise StackError(
                f"{comp.name} exited during start-up; last lines of {_log_file(settings, comp.name)}:\n"
                + log_tail(_log_file(settings, comp.name))
            )
        if _check_health(comp):
            return
        time.sleep(0.5)
    raise StackError(
        f"{comp.name} did not become healthy within {comp.start_timeout_s:.0f}s "
        f"({comp.health_url}); last lines of {_log_file(settings, comp.name)}:\n"
        + log_tail(_log_file(settings, comp.name))
    )


def _airflow_migrate(settings: Settings, env: dict[str, str]) -> None:
    marker = settings.airflow_home / ".migrated"
    log_path = _log_file(settings, "airflow-db-migrate")
    # the marker holds the airflow version: a new version migrates again, the same one starts in ms.
    # (importing airflow here would configure it for this process with the wrong AIRFLOW_HOME)
    version = importlib.metadata.version("apache-airflow")
    if marker.exists() and marker.read_text() == version:
        return
    with log_path.open("ab") as out:
        proc = subprocess.run([_bin("airflow"), "db", "migrate"], env=env, stdout=out, stderr=out, check=False)
    if proc.returncode != 0:
        raise StackError(f"airflow db migrate failed; last lines of {log_path}:\n{log_tail(log_path)}")
    marker.write_text(version)


def start_component(settings: Settings, comp: Component) -> int:
    """Start one component unless it already runs; wait for its health check. Returns its PID."""
    pid = _read_pid(settings, comp.name)
    if _alive(pid):
        log.info("already running", extra={"component": comp.name, "pid": pid})
        assert pid is not None
        _wait_healthy(settings, comp, pid)
        return pid
    if comp.port is not None and _port_open(settings.host, comp.port):
        raise StackError(
            f"{comp.name}: port {comp.port} on {settings.host} is taken by another process; stop it or set "
            f"PARKING_{comp.name.split('-')[0].upper()}_PORT to a free port"
        )
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    with _log_file(settings, comp.name).open("ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {' '.join(comp.argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            comp.argv,
            env=comp.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(settings.home),
            start_new_session=True,
        )
    pid_path = _pid_file(settings, comp.name)
    tmp = pid_path.with_suffix(".tmp")
    tmp.write_text(str(proc.pid))
    tmp.replace(pid_path)
    log.info("started", extra={"component": comp.name, "pid": proc.pid})
    _wait_healthy(settings, comp, proc.pid)
    return proc.pid


def stop_pid(pid: int, timeout_s: float = 20.0) -> None:
    """SIGTERM the process group, wait, then SIGKILL whatever is left of it."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _group_alive(pgid):
                return
            time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # members may all be zombies waiting for a parent that is us: reap what we can
    try:
        while os.waitpid(-pgid, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields: state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def up(settings: Settings, only: Iterable[str] | None = None) -> list[ComponentStatus]:
    """Start the stack (idempotent): already running components are left alone."""
    settings.home.mkdir(parents=True, exist_ok=True)
    comps = components(settings)
    if only:
        wanted = set(only)
        comps = [c for c in comps if c.name in wanted or c.name.split("-")[0] in wanted]
    started: list[Component] = []
    try:
        for comp in comps:
            if comp.name == "airflow-api-server":
                settings.airflow_home.mkdir(parents=True, exist_ok=True)
                _airflow_migrate(settings, comp.env)
            start_component(settings, comp)
            started.append(comp)
    except BaseException:
        # leave nothing half-up behind a failed start
        for comp in reversed(started):
            stop_component(settings, comp.name)
        raise
    return status(settings)


def stop_component(settings: Settings, name: str, timeout_s: float = 20.0) -> None:
    pid = _read_pid(settings, name)
    if pid is not None:
        stop_pid(pid, timeout_s)
        log.info("stopped", extra={"component": name, "pid": pid})
    _pid_file(settings, name).unlink(missing_ok=True)


def down(settings: Settings, timeout_s: float = 20.0) -> None:
    """Stop every component (reverse start order); a no-op for components that are not running."""
    names = [c.name for c in components(settings)]
    known = {p.stem for p in settings.run_dir.glob("*.pid")} if settings.run_dir.exists() else set()
    for name in [*reversed(names), *sorted(known - set(names))]:
        stop_component(settings, name, timeout_s)


def status(settings: Settings) -> list[ComponentStatus]:
    out = []
    for comp in components(settings):
        pid = _read_pid(settings, comp.name)
        running = _alive(pid)
        out.append(
            ComponentStatus(
                name=comp.name,
                pid=pid if running else None,
                running=running,
                healthy=running and _check_health(comp),
                url=comp.url,
            )
        )
    return out


def airflow_admin_password(settings: Settings) -> str | None:
    """The simple auth manager writes the generated admin password here on first start."""
    path = settings.airflow_home / "simple_auth_manager_passwords.json.generated"
    try:
        return json.loads(path.read_text()).get("admin")
    except (FileNotFoundError, ValueError):
        return None
