"""One Optuna study on PostgreSQL tuned by several processes at once (as tuning workers on several machines
would): trials split between them, none lost or run twice, and only a dead process's trial is re-queued."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from parking_ml.config import Settings
from parking_ml.model.profiles import get_profile
from parking_ml.model.study_store import OWNER_ATTR, process_tag
from parking_ml.model.tune import open_study

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_two_processes_tune_one_study_and_split_its_trials(postgres_db, tmp_path):
    import optuna
    from optuna.trial import TrialState

    n_trials = 12
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    outs = [tmp_path / f"worker-{i}.json" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.optuna_worker", postgres_db, "shared", str(n_trials), str(out)],
            env=env,
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for out in outs
    ]
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    reports = [json.loads(out.read_text()) for out in outs]

    trials = optuna.load_study(study_name="shared", storage=postgres_db).get_trials()
    states = [t.state for t in trials]
    assert set(states) == {TrialState.COMPLETE}, states  # nothing failed, nothing left running or waiting
    # each stops once the study holds n_trials; the other may be inside its last trial then
    assert n_trials <= len(trials) <= n_trials + 1
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    per_owner = {r["tag"]: sum(1 for t in trials if t.user_attrs.get(OWNER_ATTR) == r["tag"]) for r in reports}
    assert {r["tag"]: r["ran"] for r in reports} == per_owner
    assert all(n >= 1 for n in per_owner.values()), per_owner  # both took part
    assert sum(per_owner.values()) == len(trials)  # every trial belongs to one of them: none lost


def _dead_tag() -> str:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    tag = process_tag(proc.pid)
    proc.wait(timeout=30)
    return tag


# the test plays dead and live processes with ask(), which Optuna warns is not how heartbeats are meant to be used
@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_only_a_dead_process_trial_is_requeued(postgres_db, tmp_path):
    from optuna.trial import TrialState

    settings = Settings(home=tmp_path / "var", optuna_storage=postgres_db, optuna_heartbeat_s=1)
    profile = get_profile("smoke")
    study = open_study(settings, "liveness", profile)
    dead, live, remote = (study.ask() for _ in range(3))
    for trial, tag in ((dead, _dead_tag()), (live, process_tag()), (remote, "other-host/4242/1.00")):
        trial.suggest_float("x", -1.0, 1.0)
        trial.set_user_attr(OWNER_ATTR, tag)
    assert socket.gethostname() != "other-host"
    storage = study._storage
    storage.record_heartbeat(remote._trial_id)  # the other machine's process is beating

    def state(trial) -> TrialState:
        return storage.get_trial(trial._trial_id).state

    study = open_study(settings, "liveness", profile)
    assert (state(dead), state(live), state(remote)) == (TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [dead.params]

    time.sleep(3.5)  # the other machine went silent: 3 heartbeats of 1 s missed
    study = open_study(settings, "liveness", profile)
    assert (state(live), state(remote)) == (TrialState.RUNNING, TrialState.FAIL)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert sorted(t.system_attrs["fixed_params"]["x"] for t in waiting) == sorted(
        [dead.params["x"], remote.params["x"]]
    )
