"""Which RUNNING trials count as interrupted: decided from the owner tag on its own host, never for a live one."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import datetime, timedelta
from types import SimpleNamespace

from parking_ml.model.study_store import OWNER_ATTR, is_interrupted, owner_alive, process_tag


def _trial(tag: str | None, age_s: float) -> SimpleNamespace:
    attrs = {OWNER_ATTR: tag} if tag else {}
    return SimpleNamespace(user_attrs=attrs, datetime_start=datetime.now() - timedelta(seconds=age_s))


def test_owner_alive_for_this_process_a_finished_one_and_a_reused_pid():
    assert owner_alive(process_tag()) is True
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    tag = process_tag(proc.pid)
    proc.wait(timeout=30)
    assert owner_alive(tag) is False
    host, pid, started = process_tag().rsplit("/", 2)
    assert owner_alive(f"{host}/{pid}/{float(started) - 100:.2f}") is False  # same PID, another process


def test_owner_unknown_on_another_host_or_without_a_tag():
    assert owner_alive(f"not-{socket.gethostname()}/1/1.00") is None
    assert owner_alive(None) is None
    assert owner_alive("garbage") is None


def test_is_interrupted():
    now = datetime.now()
    assert not is_interrupted(_trial(process_tag(), 999), now, 60)  # alive, however old
    assert not is_interrupted(_trial("elsewhere/1/1.00", 999), now, 60)  # heartbeats decide for other hosts
    assert is_interrupted(_trial(None, 120), now, 60)  # untagged and older than the grace period
    assert not is_interrupted(_trial(None, 1), now, 60)  # just created: its process may be tagging it now
