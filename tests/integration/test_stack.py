"""`parking-ml stack up / status / down` against the real servers, on free ports and a scratch home."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from parking_ml.ops.stack import free_port

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).parent / "parking-ml")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _pids_under(home: Path) -> list[int]:
    """Live processes whose command line or environment mentions the scratch home."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if stat[0] == "Z":
                continue
            blob = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if str(home).encode() in blob:
            found.append(int(entry.name))
    return found


def test_stack_round_trip(tmp_path):
    home = tmp_path / "var"
    ports = {"mlflow": free_port(), "airflow": free_port(), "api": free_port()}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW"))},
        "PARKING_HOME": str(home),
        "PARKING_MLFLOW_PORT": str(ports["mlflow"]),
        "PARKING_AIRFLOW_PORT": str(ports["airflow"]),
        "PARKING_API_PORT": str(ports["api"]),
    }

    def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)

    try:
        up = cli("stack", "up")
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]

        health = httpx.get(f"http://127.0.0.1:{ports['mlflow']}/health", timeout=5)
        assert health.status_code == 200
        af = httpx.get(f"http://127.0.0.1:{ports['airflow']}/api/v2/monitor/health", timeout=5).json()
        assert af["metadatabase"]["status"] == "healthy"
        assert af["scheduler"]["status"] == "healthy"

        # loopback only: nothing of ours listens on another interface
        listeners = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
        for port in (ports["mlflow"], ports["airflow"]):
            lines = [ln for ln in listeners.splitlines() if f":{port} " in ln]
            assert lines and all("127.0.0.1:" in ln for ln in lines), lines

        status = cli("stack", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "password" in status.stdout
        password_file = home / "airflow" / "simple_auth_manager_passwords.json.generated"
        assert password_file.exists()

        # idempotent: a second `up` starts no duplicates
        pids_before = sorted(p.read_text() for p in (home / "run").glob("*.pid"))
        again = cli("stack", "up")
        assert again.returncode == 0, again.stderr[-2000:]
        assert sorted(p.read_text() for p in (home / "run").glob("*.pid")) == pids_before
    finally:
        down = cli("stack", "down")
    assert down.returncode == 0, down.stderr[-2000:]
    for port in ports.values():
        assert not _listening(port), f"port {port} still listening after down"
    assert _pids_under(home) == []
    # status after down reports not running and exits non-zero
    assert cli("stack", "status").returncode == 1


def test_up_fails_with_log_tail_when_port_is_taken(tmp_path):
    home = tmp_path / "var"
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW"))},
            "PARKING_HOME": str(home),
            "PARKING_MLFLOW_PORT": str(port),
        }
        res = subprocess.run([CLI, "stack", "up", "--only", "mlflow"], env=env, capture_output=True, text=True)
    assert res.returncode == 1
    assert f"port {port}" in res.stderr
    assert "PARKING_MLFLOW_PORT" in res.stderr
