"""The Optuna study storage when several tuning processes share one study (one machine or many).

A trial is RUNNING while a process works on it. When that process dies, the trial is failed and its parameters
queued again, but only then: a live process's trial (on this machine or another) is left alone. Two signals:

* the owner tag (user attr ``owner`` = host/pid/process start time), set as a trial starts: on the owner's
  host a trial whose process is gone is interrupted at once, so a rerun on the same machine resumes right away;
* heartbeats, on server databases (PostgreSQL, MySQL): Optuna records one every ``heartbeat_s`` while a trial
  runs, and a trial silent for ``STALE_AFTER`` beats is failed by whichever process next asks for a trial.

SQLite gets no heartbeats (one machine by nature, and a beating thread would contend for its file lock); there
the owner tag decides. A RUNNING trial without a tag (a process that died between creating the trial and
tagging it) counts as interrupted once it is older than the heartbeat grace period.
"""

from __future__ import annotations

import logging
import socket
import time
import warnings
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psutil

logger = logging.getLogger(__name__)

OWNER_ATTR = "owner"
STALE_AFTER = 3  # heartbeats missed before a trial counts as dead


def process_tag(pid: int | None = None) -> str:
    """host/pid/start time of a process (this one by default): the start time tells a reused PID apart."""
    proc = psutil.Process(pid)
    return f"{socket.gethostname()}/{proc.pid}/{proc.create_time():.2f}"


def owner_alive(tag: str | None) -> bool | None:
    """Whether the process named by ``tag`` still runs: None when this host cannot tell (another host, no tag)."""
    try:
        host, pid, started = (tag or "").rsplit("/", 2)
        pid_n, started_s = int(pid), float(started)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    try:
        return abs(psutil.Process(pid_n).create_time() - started_s) < 0.05
    except psutil.NoSuchProcess:
        return False


def is_interrupted(trial: Any, now: datetime, grace_s: float) -> bool:
    """A RUNNING trial whose process is known dead, or an untagged one older than the grace period."""
    tag = trial.user_attrs.get(OWNER_ATTR)
    alive = owner_alive(tag)
    if alive is not None:
        return not alive
    if tag:  # another host's trial: its heartbeats decide (fail_stale_trials)
        return False
    started = trial.datetime_start
    return started is None or (now - started).total_seconds() > grace_s


def optimize_shared(
    study: Any,
    objective: Callable[[Any], float],
    n_trials: int,
    *,
    timeout: float | None = None,
    callbacks: list[Callable] | None = None,
) -> int:
    """Run trials in this process until the study holds ``n_trials`` finished (complete or pruned) trials,
    counting those of every process tuning it; returns how many of them this process finished. Each trial is
    tagged with this process first (what `is_interrupted` reads)."""
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    ended = (TrialState.COMPLETE, TrialState.PRUNED)
    remaining = n_trials - len(study.get_trials(deepcopy=False, states=ended))
    if remaining <= 0:
        return 0
    tag = process_tag()

    def mine() -> set[int]:
        return {t.number for t in study.get_trials(deepcopy=False, states=ended) if t.user_attrs.get(OWNER_ATTR) == tag}

    # an earlier call in this process (same tag) finished some already: count only this call's
    before = mine()

    def run(trial: Any) -> float:
        trial.set_user_attr(OWNER_ATTR, tag)
        return objective(trial)

    study.optimize(
        run,
        n_trials=remaining,
        timeout=timeout,
        gc_after_trial=True,
        # the other processes' trials count too: stop once the study as a whole has enough
        callbacks=[*(callbacks or []), MaxTrialsCallback(n_trials, states=ended)],
    )
    return len(mine() - before)


def create_or_load(name: str, storage: Any, direction: str, sampler: Any, pruner: Any) -> tuple[Any, bool]:
    """(study, created here): of processes racing to create one study, exactly one is told it created it."""
    import optuna

    try:
        study = optuna.create_study(
            study_name=name, storage=storage, direction=direction, sampler=sampler, pruner=pruner
        )
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner), False


def make_storage(url: str, heartbeat_s: int, on_stale: Callable[[Any, Any], None]):
    """RDBStorage for ``url``; with heartbeats (and ``on_stale`` for each dead trial) unless it is SQLite."""
    import sqlalchemy.exc

    if url.startswith("sqlite"):
        return _rdb_storage(url)
    for attempt in range(3):
        try:
            return _rdb_storage(
                url,
                heartbeat_interval=heartbeat_s,
                grace_period=STALE_AFTER * heartbeat_s,
                heartbeat_stale_trial_callback=on_stale,
                # a pooled connection may be dropped by the server between long trials
                engine_kwargs={"pool_pre_ping": True},
            )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # processes starting together on an empty database race to create Optuna's tables and types:
            # the loser's CREATE fails on what the winner just made; a second look finds the schema in place
            if attempt == 2:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _rdb_storage(url: str, **kwargs: Any):
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: there since 2.9
        return optuna.storages.RDBStorage(url, **kwargs)


def grace_s(heartbeat_s: int) -> float:
    return float(STALE_AFTER * heartbeat_s)


def fail_interrupted(study: Any, grace: float, requeue: Callable[[Any, Any], None]) -> list[int]:
    """Fail each interrupted RUNNING trial and requeue it (once, even if processes race to do it); returns the
    numbers of the trials failed here. Stale-heartbeat trials of other hosts go through Optuna's own check."""
    import optuna
    from optuna.trial import TrialState

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    storage = study._storage
    now = datetime.now()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_interrupted(t, now, grace):
            continue
        try:
            changed = storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            changed = False  # another process got there first and requeued it
        if changed:
            requeue(study, t)
            failed.append(t.number)
    return failed
