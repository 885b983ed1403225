"""A `parking-ml` command run by a person: progress and short lines on the console, JSON log lines only in
$PARKING_HOME/logs/<command>.log (and on the console with PARKING_LOG_FORMAT=json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CLI = str(Path(sys.executable).parent / "parking-ml")


def _json_records(text: str) -> list[dict]:
    """JSON objects in the text, also those printed right after a progress bar's last refresh on its line."""
    out = []
    for line in text.replace("\r", "\n").splitlines():
        try:
            record = json.loads(line[line.find("{") :]) if "{" in line else None
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def _synth(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    home = tmp_path / "var"
    run = subprocess.run(
        [CLI, "synth", "--n", "3", "--size", "64", "--sites", "3", "--out", str(tmp_path / "out")],
        env={**os.environ, "PARKING_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run


def test_a_cli_run_prints_no_json_log_lines_and_the_log_file_has_them(tmp_path):
    run = _synth(tmp_path)
    assert _json_records(run.stdout) == [] and _json_records(run.stderr) == []
    assert "wrote 3 tiles" in run.stdout
    records = _json_records((tmp_path / "var" / "logs" / "synth.log").read_text())
    assert [r["event"] for r in records].count("synth site written") == 3
    assert {r["site"] for r in records if r["event"] == "synth site written"} == {
        "s42-site-0000",
        "s42-site-0001",
        "s42-site-0002",
    }


def test_log_format_json_puts_the_json_lines_on_the_console_too(tmp_path):
    run = _synth(tmp_path, PARKING_LOG_FORMAT="json")
    events = [r["event"] for r in _json_records(run.stderr)]
    assert events.count("synth site written") == 3 and "synth done" in events
