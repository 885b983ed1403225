"""docker/postgres/init-databases.sh (the compose PostgreSQL's first-start script) on the local PostgreSQL."""

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _psql(*args: str) -> str:
    cmd = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-tA", "-v", "ON_ERROR_STOP=1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql (the client the postgres image uses) is not installed")
def test_init_script_creates_the_role_and_its_databases():
    user = f"parking_deploy_{uuid.uuid4().hex[:8]}"
    databases = [f"{user}_airflow", f"{user}_mlflow"]
    env = {
        **os.environ,
        "PGHOST": "127.0.0.1",
        "POSTGRES_USER": "postgres",
        "PARKING_DB_USER": user,
        "PARKING_DB_PASSWORD": "a'quoted\"secret",
        "PARKING_DATABASES": " ".join(databases),
    }
    try:
        res = subprocess.run(
            ["bash", str(REPO / "docker/postgres/init-databases.sh")], env=env, capture_output=True, text=True
        )
        assert res.returncode == 0, res.stderr
        owners = _psql("-c", f"SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname LIKE '{user}%'")
        assert sorted(owners.split()) == sorted(f"{db}|{user}" for db in databases)
        # a login role with a password (the quoted one went through psql variables without breaking the SQL)
        role = _psql("-c", f"SELECT rolcanlogin, rolpassword IS NOT NULL FROM pg_authid WHERE rolname = '{user}'")
        assert role.strip() == "t|t"
    finally:
        for db in databases:
            _psql("-c", f'DROP DATABASE IF EXISTS "{db}"')
        _psql("-c", f'DROP ROLE IF EXISTS "{user}"')
