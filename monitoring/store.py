"""Drift reports and live rows in the lake.

Layout (docs/design.md, "Wave 2 contracts"):
  monitoring/inference/date=YYYY-MM-DD/*.parquet     live feature rows written by the API
  monitoring/reports/<UTC timestamp>/report.html, report.json, summary.json
  monitoring/reports/index.parquet                   one row per report
Every object is written whole under a temporary name (Lake.write_bytes); the index is read, extended and
rewritten the same way, so a reader sees the old index or the new one, never half of one.
"""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from parking_ml.lake import Lake

if TYPE_CHECKING:
    import pandas as pd

INFERENCE_PREFIX = "monitoring/inference"
REPORTS_PREFIX = "monitoring/reports"
INDEX_KEY = f"{REPORTS_PREFIX}/index.parquet"
REPORT_FILES = ("report.html", "report.json", "summary.json")
INDEX_COLUMNS = [
    "created",
    "model_version",
    "window_start",
    "window_end",
    "rows",
    "drift_share",
    "drifted_features",
    "verdict",
    "report_id",
    "model_name",
    "message",
]
# what a report folder is called: a UTC time stamp, with a counter when two reports share the second
REPORT_ID = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")


def report_id(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def report_key(rid: str, name: str) -> str:
    if not REPORT_ID.match(rid) or name not in REPORT_FILES:
        raise ValueError(f"no report file {rid!r}/{name!r}")
    return f"{REPORTS_PREFIX}/{rid}/{name}"


# ------------------------------------------------------------------------------------------- live rows
def _days(since: datetime, until: datetime) -> set[str]:
    day, last = since.astimezone(UTC).date(), until.astimezone(UTC).date()
    out = set()
    while day <= last:
        out.add(day.isoformat())
        day += timedelta(days=1)
    return out


def load_live_rows(lake: Lake, since: datetime, until: datetime) -> pd.DataFrame:
    """Every live row with since <= timestamp < until (all model versions; the caller picks one)."""
    import pandas as pd

    frames = []
    # only the window's day partitions are listed: months of history cost nothing
    for day in sorted(_days(since, until)):
        for key in lake.list(f"{INFERENCE_PREFIX}/date={day}"):
            if key.endswith(".parquet"):
                frames.append(pd.read_parquet(io.BytesIO(lake.read_bytes(key))))
    if not frames:
        return pd.DataFrame(columns=["timestamp", "model_name", "model_version"])
    rows = pd.concat(frames, ignore_index=True)
    stamps = pd.to_datetime(rows["timestamp"], utc=True, format="ISO8601")
    keep = (stamps >= pd.Timestamp(since).tz_convert(UTC)) & (stamps < pd.Timestamp(until).tz_convert(UTC))
    return rows[keep.to_numpy()].reset_index(drop=True)


# --------------------------------------------------------------------------------------------- reports
def save_report(lake: Lake, summary: dict[str, Any], html: str, report_json: str, now: datetime) -> str:
    """Write the report folder and its index row; returns the report id (the folder's name)."""
    rid = report_id(now)
    n = 1
    while lake.exists(report_key(rid if n == 1 else f"{rid}-{n}", "summary.json")):
        n += 1
    rid = rid if n == 1 else f"{rid}-{n}"
    summary = {**summary, "report_id": rid}
    # summary.json last: a folder with a summary is complete (the index row follows it)
    lake.write_text(report_key(rid, "report.html"), html)
    lake.write_text(report_key(rid, "report.json"), report_json or "{}")
    lake.write_text(report_key(rid, "summary.json"), json.dumps(summary, indent=2, sort_keys=True, default=str))
    append_index(lake, summary)
    return rid


def index_row(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "created": summary["created"],
        "model_version": str(summary.get("model_version") or ""),
        "window_start": summary["window_start"],
        "window_end": summary["window_end"],
        "rows": int(summary["rows"]),
        "drift_share": float(summary["drift_share"]),
        "drifted_features": ",".join(summary.get("drifted_features") or []),
        "verdict": summary["verdict"],
        "report_id": summary["report_id"],
        "model_name": str(summary.get("model_name") or ""),
        "message": str(summary.get("message") or ""),
    }


def append_index(lake: Lake, summary: dict[str, Any]) -> None:
    """Read, extend, rewrite whole. Two writers at the same moment could lose a row (the report folder stays):
    the DAG runs one at a time (max_active_runs=1)."""
    import pandas as pd

    row = pd.DataFrame([index_row(summary)], columns=INDEX_COLUMNS)
    old = read_index(lake)
    frame = row if old.empty else pd.concat([old, row], ignore_index=True)
    frame = frame.drop_duplicates("report_id", keep="last")
    lake.write_parquet(INDEX_KEY, frame[INDEX_COLUMNS])


def read_index(lake: Lake) -> pd.DataFrame:
    """The index, newest report first (empty with the index's columns when no report exists yet)."""
    import pandas as pd

    if not lake.exists(INDEX_KEY):
        return pd.DataFrame(columns=INDEX_COLUMNS)
    frame = lake.read_parquet(INDEX_KEY)
    for column in INDEX_COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    return frame.sort_values("created", ascending=False, kind="stable").reset_index(drop=True)[INDEX_COLUMNS]


def read_report_file(lake: Lake, rid: str, name: str) -> bytes | None:
    """A report's file, or None when the id or name is not one of ours or the file does not exist."""
    try:
        key = report_key(rid, name)
    except ValueError:
        return None
    return lake.read_bytes(key) if lake.exists(key) else None
