"""A small client for Airflow 3's REST API v2 (what a person does in the UI: unpause, trigger, watch a run)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import httpx

TERMINAL = {"success", "failed"}


class AirflowApiError(RuntimeError):
    pass


class AirflowRunFailed(AirflowApiError):
    """A DAG run ended failed; the message names the failed task and carries its log tail."""

    def __init__(self, dag_id: str, run_id: str, report: str) -> None:
        super().__init__(report)
        self.dag_id, self.run_id = dag_id, run_id


def log_lines(content: list) -> list[str]:
    """Text lines of a task log answer: structured entries (dicts) or plain strings."""
    out: list[str] = []
    for entry in content:
        if not isinstance(entry, dict):
            out.extend(str(entry).splitlines())
            continue
        if "sources" in entry or "event" not in entry:
            continue  # the header naming the log files
        stamp = str(entry.get("timestamp") or "")[11:19]
        level = str(entry.get("level") or "").upper()
        out.append(" ".join(p for p in (stamp, level, str(entry["event"])) if p))
        for err in entry.get("error_detail") or []:
            if isinstance(err, dict):
                out.append(f"    {err.get('exc_type')}: {err.get('exc_value')}")
    return out


@dataclass
class AirflowApi:
    base_url: str
    username: str
    password: str
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        self._client = httpx.Client(base_url=self.base_url.rstrip("/"), timeout=self.timeout_s)
        self._token: str | None = None

    def close(self) -> None:
        self._client.close()

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            resp = self._client.post("/auth/token", json={"username": self.username, "password": self.password})
            if resp.status_code not in (200, 201):
                raise AirflowApiError(f"Airflow login failed ({resp.status_code}): {resp.text[:300]}")
            self._token = resp.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def _call(self, method: str, path: str, **kwargs) -> dict:
        # On SQLite a write can meet "database is locked" while the dag-processor or scheduler writes: Airflow
        # answers 500 "Database error". It passes within seconds, so retry a few times before giving up.
        extra = kwargs.pop("headers", {})
        for attempt in range(5):
            resp = self._client.request(method, f"/api/v2{path}", headers={**self._headers(), **extra}, **kwargs)
            if resp.status_code == 401:  # token expired: log in again
                self._token = None
                continue
            if resp.status_code < 500 or attempt == 4:
                break
            time.sleep(1.0 + attempt)
        if resp.status_code >= 400:
            raise AirflowApiError(f"{method} {path} -> {resp.status_code}: {resp.text[:500]}")
        return resp.json()

    def wait_for_dags(self, dag_ids: list[str], timeout_s: float = 180.0) -> None:
        """Block until the dag-processor has serialised every DAG (a fresh stack parses them first)."""
        deadline = time.monotonic() + timeout_s
        missing = set(dag_ids)
        while missing and time.monotonic() < deadline:
            found = {d["dag_id"] for d in self._call("GET", "/dags", params={"limit": 100})["dags"]}
            missing = set(dag_ids) - found
            if missing:
                time.sleep(2)
        if missing:
            errors = self._call("GET", "/importErrors").get("import_errors", [])
            detail = "; ".join(f"{e['filename']}: {e['stack_trace'][-300:]}" for e in errors) or "none reported"
            raise AirflowApiError(f"DAGs not loaded after {timeout_s:.0f}s: {sorted(missing)}; import errors: {detail}")

    def unpause(self, dag_id: str) -> None:
        self._call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        body = self._call("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return body["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def runs(self, dag_id: str, limit: int = 50) -> list[dict]:
        """The latest runs of dag_id, newest first."""
        return self._call("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after", "limit": limit})[
            "dag_runs"
        ]

    def runs_since(self, dag_id: str, since: datetime) -> list[dict]:
        out = []
        for run in self.runs(dag_id, limit=20):
            run_after = datetime.fromisoformat(run["run_after"].replace("Z", "+00:00"))
            if run_after >= since:
                out.append(run)
        return out

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def failed_tasks(self, dag_id: str, run_id: str) -> list[str]:
        tis = self.task_instances(dag_id, run_id)
        return [t["task_id"] for t in tis if t["state"] in ("failed", "upstream_failed")]

    def task_log_tail(self, dag_id: str, run_id: str, task_id: str, try_number: int, lines: int = 30) -> str:
        """The last lines of one try's log, as text (Airflow 3 sends structured entries: time, level, event and,
        for an exception, its type and message)."""
        body = self._call(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true"},
            headers={"Accept": "application/json"},
        )
        return "\n".join(log_lines(body.get("content") or [])[-lines:])

    def failure_report(self, dag_id: str, run_id: str, lines: int = 30) -> str:
        """What failed in a run: the task that failed first and its log tail (what a person opens in the UI)."""
        tis = self.task_instances(dag_id, run_id)
        failed = sorted((t for t in tis if t["state"] == "failed"), key=lambda t: t.get("end_date") or "")
        if not failed:
            states = ", ".join(f"{t['task_id']}={t['state']}" for t in tis) or "no task instances"
            return f"{dag_id} run {run_id} failed ({states})"
        ti = failed[0]
        try:
            tail = self.task_log_tail(dag_id, run_id, ti["task_id"], int(ti.get("try_number") or 1), lines)
        except AirflowApiError as exc:
            tail = f"(log not readable: {exc})"
        others = [t["task_id"] for t in tis if t["state"] in ("failed", "upstream_failed") and t is not ti]
        more = f"; also not run or failed: {', '.join(others)}" if others else ""
        return (
            f"{dag_id} run {run_id} failed at task {ti['task_id']} (try {ti.get('try_number')}){more}\n"
            f"--- last lines of its log ---\n{tail}"
        )

    def wait_runs_since(self, dag_id: str, since: datetime, *, appear_within_s: float, timeout_s: float) -> list[dict]:
        """Wait for every run of dag_id created since `since` to finish (asset-triggered runs appear a few
        scheduler loops after their upstream emits). Returns [] if none appeared within appear_within_s."""
        start = time.monotonic()
        while True:
            runs = self.runs_since(dag_id, since)
            if not runs and time.monotonic() - start > appear_within_s:
                return []
            if runs and all(r["state"] in TERMINAL for r in runs):
                failed = [r["dag_run_id"] for r in runs if r["state"] == "failed"]
                if failed:
                    raise AirflowRunFailed(dag_id, failed[0], self.failure_report(dag_id, failed[0]))
                return runs
            if time.monotonic() - start > timeout_s:
                raise AirflowApiError(f"{dag_id}: runs not finished within {timeout_s:.0f}s")
            time.sleep(2)

    def wait_run(
        self,
        dag_id: str,
        *,
        run_id: str | None = None,
        since: datetime | None = None,
        timeout_s: float = 1800.0,
        on_poll: Callable[[str], None] | None = None,
    ) -> dict:
        """Wait for a run (by id, or the first one created after `since`) to finish; return it."""
        deadline = time.monotonic() + timeout_s
        state = "absent"
        while time.monotonic() < deadline:
            if run_id is None and since is not None:
                runs = self.runs_since(dag_id, since)
                if runs:
                    run_id = runs[-1]["dag_run_id"]
            if run_id is not None:
                state = self.run_state(dag_id, run_id)
                if state in TERMINAL:
                    if state == "failed":
                        raise AirflowRunFailed(dag_id, run_id, self.failure_report(dag_id, run_id))
                    return {"dag_id": dag_id, "run_id": run_id, "state": state}
            if on_poll:
                on_poll(state)
            time.sleep(2)
        raise AirflowApiError(f"{dag_id}: no finished run within {timeout_s:.0f}s (last state: {state})")
