"""parking_ml.secrets_check: the compose stack's first service refuses placeholder secrets (names only, no values)."""

import os
import subprocess
import sys

from parking_ml.secrets_check import DEV_FLAG, main, weak_secrets

STRONG = "q7VbX2-kP9zR4mT1wYc8"


def test_weak_secrets_name_each_problem():
    env = {"A": "changeme", "B": "", "C": "short1", "D": STRONG, "E": "MinioAdmin", "F": "replace-me-with-a-key"}
    assert weak_secrets(env, ["A", "B", "C", "D", "E", "F", "G"]) == {
        "A": "placeholder",
        "B": "unset",
        "C": "shorter than 12 characters",
        "E": "placeholder",
        "F": "placeholder",
        "G": "unset",
    }


def test_refuses_placeholders_without_printing_values(capsys):
    assert main(["DB_PASSWORD", "API_KEY"], {"DB_PASSWORD": "changeme", "API_KEY": STRONG}) == 1
    err = capsys.readouterr().err
    assert "DB_PASSWORD (placeholder)" in err and "API_KEY" not in err
    assert "changeme" not in err.split("refusing to start:")[1].split(".")[0]
    assert DEV_FLAG in err


def test_dev_flag_lets_a_throwaway_stack_start(capsys):
    assert main(["DB_PASSWORD"], {"DB_PASSWORD": "changeme", DEV_FLAG: "true"}) == 0
    assert "WARNING" in capsys.readouterr().out


def test_module_entry_point_exit_codes():
    base = {k: v for k, v in os.environ.items() if k != DEV_FLAG}
    cmd = [sys.executable, "-m", "parking_ml.secrets_check", "X_SECRET"]
    assert subprocess.run(cmd, env={**base, "X_SECRET": "password"}, capture_output=True).returncode == 1
    assert subprocess.run(cmd, env={**base, "X_SECRET": STRONG}, capture_output=True).returncode == 0
    assert subprocess.run(cmd[:-1], env=base, capture_output=True).returncode == 2
