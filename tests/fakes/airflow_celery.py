"""A real Airflow 3 deployment on loopback for tests: metadata DB on the local PostgreSQL, CeleryExecutor on the
local Redis, api-server (the workers' execution API), scheduler, dag-processor and Celery workers, each in its
own session. `stop()` leaves no process behind: SIGTERM to each process tree, SIGKILL after a timeout.

Nothing here collides with other users of the shared Redis: broker keys carry a unique prefix (kombu's
global_keyprefix) and tasks go to a unique queue; `stop()` deletes the prefixed keys.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from parking_ml.config import Settings
from parking_ml.ops.airflow_api import AirflowApi
from parking_ml.ops.stack import airflow_admin_password, airflow_env, free_port, log_tail, wait_http
from tests.fakes.postgres import pg_url

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
REDIS_URL = "redis://127.0.0.1:6379/0"


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_tree(pid: int) -> list[int]:
    """SIGKILL a process and every descendant at once (what a machine losing power does); returns their PIDs.
    Airflow puts each task process in its own process group, so killing the worker's group is not enough."""
    procs = _tree(pid)
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=10)
    return [p.pid for p in procs]


def stop_tree(pid: int, timeout_s: float = 20.0) -> None:
    """SIGTERM the process's group (a graceful stop), then SIGKILL whatever of its tree is left."""
    procs = _tree(pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(os.getpgid(pid), signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    # children forked while stopping are not in the first snapshot
    left = {p.pid: p for p in [*alive, *(c for a in alive for c in _safe_children(a))]}
    for p in left.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    psutil.wait_procs(list(left.values()), timeout=10)


def _safe_children(p: psutil.Process) -> list[psutil.Process]:
    try:
        return p.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@dataclass
class CeleryCluster:
    """Start with `start()`, always `stop()` (a fixture's finally)."""

    home: Path
    db_name: str
    task_env: dict[str, str]  # PARKING_*, AIRFLOW_CONN_* and AWS_* that the tasks need
    workers: tuple[str, ...] = ("worker-a", "worker-b")
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def __post_init__(self) -> None:
        self.port = free_port()
        self.settings = Settings(home=self.home, airflow_port=self.port)
        self.queue = f"parking_{self.tag}"
        self.key_prefix = f"parking_test_{self.tag}:"
        self.env = self._env()
        self.api: AirflowApi | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        env = {**os.environ, **airflow_env(self.settings), **self.task_env}
        env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg_url(self.db_name),
                "AIRFLOW__CELERY__BROKER_URL": REDIS_URL,
                # Celery's results (celery_taskmeta) in the metadata DB: the test reads which worker ran what
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + pg_url(self.db_name),
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
                "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": self.key_prefix,
                # no redelivery of a dead worker's message within a test: Airflow's own retry must do the work
                "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "3600",
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.fakes.worker_hostname.hostname",
                # the other DAGs of dags/ (training, promotion) must not run: only the tested ones are unpaused
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__CORE__PARALLELISM": "4",
                # a dead worker's task is noticed after this long without a heartbeat (default 300 s)
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
                "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
                "NO_ALBUMENTATIONS_UPDATE": "1",
            }
        )
        return env

    # --- processes -------------------------------------------------------------------------------
    def log(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    def _spawn(self, name: str, argv: list[str], extra: dict[str, str] | None = None) -> subprocess.Popen:
        self.log(name).parent.mkdir(parents=True, exist_ok=True)
        with self.log(name).open("ab") as out:
            proc = subprocess.Popen(
                argv,
                env={**self.env, **(extra or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(self.home),
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def start(self) -> CeleryCluster:
        self.home.mkdir(parents=True, exist_ok=True)
        migrate = subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"], env=self.env, capture_output=True, text=True, check=False
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{migrate.stdout[-2000:]}\n{migrate.stderr[-2000:]}")
        api = self._spawn(
            "api-server",
            [str(BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(self.port), "-w", "1"],
        )
        self._spawn("scheduler", [str(BIN / "airflow"), "scheduler", "--skip-serve-logs"])
        self._spawn("dag-processor", [str(BIN / "airflow"), "dag-processor"])
        for name in self.workers:
            self.start_worker(name)
        wait_http(f"{self.base_url}/api/v2/monitor/health", 180, api, self.log("api-server"))
        password = airflow_admin_password(self.settings)
        self.api = AirflowApi(self.base_url, "admin", password or "")
        for name in self.workers:
            self.wait_worker_ready(name)
        return self

    def start_worker(self, name: str) -> subprocess.Popen:
        argv = [
            str(BIN / "airflow"),
            "celery",
            "worker",
            "--celery-hostname",
            f"{name}@%h",
            "--concurrency",
            "1",
            "--queues",
            self.queue,
            "--pid",
            str(self.home / f"{name}.pid"),
            "--skip-serve-logs",
            "--without-gossip",
            "--without-mingle",
        ]
        return self._spawn(name, argv, {"PARKING_TEST_HOSTNAME": name})

    def wait_worker_ready(self, name: str, timeout_s: float = 180.0) -> None:
        """Celery prints '<name>@<host> ready.' once it consumes from the broker."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited with {self.procs[name].returncode}:\n{log_tail(self.log(name))}")
            if f"{name}@" in (text := self.log(name).read_text(errors="replace")) and " ready." in text:
                return
            time.sleep(0.5)
        raise TimeoutError(f"{name} not ready within {timeout_s:.0f}s:\n{log_tail(self.log(name))}")

    def kill_worker(self, name: str) -> list[int]:
        """SIGKILL a worker with its pool and task processes; returns the PIDs killed."""
        pids = kill_tree(self.procs[name].pid)
        self.procs[name].wait(timeout=10)
        return pids

    def all_pids(self) -> set[int]:
        return {p.pid for proc in self.procs.values() for p in _tree(proc.pid)}

    def stop(self) -> None:
        if self.api is not None:
            self.api.close()
        # workers first (no new tasks), then the scheduler, the dag-processor, the api-server
        order = [*[w for w in self.procs if w in self.workers], "scheduler", "dag-processor", "api-server"]
        for name in order:
            if name in self.procs:
                stop_tree(self.procs[name].pid, timeout_s=20)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.procs[name].wait(timeout=5)
        self._clear_redis()

    def _clear_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(client.scan_iter(match=f"{self.key_prefix}*", count=500))
            if keys:
                client.delete(*keys)
        finally:
            client.close()

    def redis_keys(self) -> list[bytes]:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        try:
            return list(client.scan_iter(match=f"{self.key_prefix}*", count=500))
        finally:
            client.close()
