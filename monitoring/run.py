"""One drift run: pick the model version, its reference and the window's live rows, compare, store.

The version rule: a report compares one version's live rows with that same version's reference. Rows that
another version answered are counted (`other_version_rows`) and left out, never compared.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitoring import drift, store
from parking_ml.config import Settings
from parking_ml.lake import Lake

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

LOCAL_VERSION = "local"  # what the API calls a model served from PARKING_MODEL_DIR


class DriftInputError(ValueError):
    """The run cannot start: no served version, or a version without a drift reference."""


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    @classmethod
    def parse(cls, since: str | datetime | None, until: str | datetime | None, now: datetime, hours: float = 24):
        """since/until as ISO times (a date means its midnight, UTC); defaults: the `hours` before until."""
        end = _as_utc(until) if until else now
        start = _as_utc(since) if since else end - timedelta(hours=hours)
        if start >= end:
            raise DriftInputError(f"--since ({start.isoformat()}) must be before --until ({end.isoformat()})")
        return cls(start, end)


def _as_utc(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        when = value
    else:
        try:
            when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise DriftInputError(f"not an ISO time: {value!r} (e.g. 2026-12-06 or 2026-12-06T08:00:00Z)") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def served_version(settings: Settings) -> str:
    """The version the API serves: 'local' for PARKING_MODEL_DIR, else the one the serving alias points at."""
    if settings.model_dir is not None:
        return LOCAL_VERSION
    from parking_ml.model.registry import get_alias_version

    mv = get_alias_version(settings, settings.model_alias)
    if mv is None:
        raise DriftInputError(
            f"no version of {settings.model_name!r} has alias {settings.model_alias!r}: promote a model first "
            "(parking-ml promote) or pass --model-version"
        )
    return str(mv.version)


def load_reference(settings: Settings, version: str) -> pd.DataFrame:
    """The version's reference_features.parquet (from PARKING_MODEL_DIR for 'local', else the registry)."""
    import pandas as pd

    from parking_ml.model.package import REFERENCE_FILE, download_package

    if version == LOCAL_VERSION:
        if settings.model_dir is None:
            raise DriftInputError("version 'local' needs PARKING_MODEL_DIR (the folder the API serves)")
        path = Path(settings.model_dir) / REFERENCE_FILE
        if not path.is_file():
            raise DriftInputError(f"{path} is missing: the model package has no drift reference")
        return pd.read_parquet(path)
    import mlflow

    # models:/ resolves through the registry URI, which download_artifacts' tracking_uri does not set
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    with tempfile.TemporaryDirectory(prefix="parking-drift-ref-") as tmp:
        pkg = download_package(
            f"models:/{settings.model_name}/{version}", Path(tmp) / "pkg", tracking_uri=settings.mlflow_tracking_uri
        )
        path = pkg / REFERENCE_FILE
        if not path.is_file():
            raise DriftInputError(
                f"version {version} of {settings.model_name!r} carries no {REFERENCE_FILE}; retrain it to get one"
            )
        return pd.read_parquet(path)


def select_version(rows: pd.DataFrame, model_name: str, version: str) -> tuple[pd.DataFrame, int]:
    """The rows this name and version answered, and how many rows of other versions were left out."""
    if rows.empty:
        return rows, 0
    mine = (rows["model_version"].astype(str) == str(version)) & (rows["model_name"].astype(str) == model_name)
    return rows[mine.to_numpy()].reset_index(drop=True), int((~mine).sum())


def run_drift(
    settings: Settings,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    model_version: str | None = None,
    now: datetime | None = None,
    config: drift.DriftConfig | None = None,
    reference: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Compare the window's live rows of one version with its reference; store the report; return the summary.

    `reference` skips the registry (tests, benchmarks); otherwise it is the version's own reference."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    window = Window.parse(since, until, now, settings.drift_window_hours)
    config = config or drift.DriftConfig(min_rows=settings.drift_min_rows)
    lake = Lake.from_settings(settings)
    version = str(model_version) if model_version else served_version(settings)
    if reference is None:
        reference = load_reference(settings, version)
    live = store.load_live_rows(lake, window.start, window.end)
    current, others = select_version(live, settings.model_name, version)
    result = drift.compare(reference, current, config)
    summary = {
        "created": now.isoformat(),
        "model_name": settings.model_name,
        "model_version": version,
        "window_start": window.start.isoformat(),
        "window_end": window.end.isoformat(),
        "other_version_rows": others,
        "min_rows": config.min_rows,
        "alarm_share": config.drift_share,
        **result.summary(),
    }
    html = result.html or _placeholder_html(summary)
    summary["report_id"] = store.save_report(lake, summary, html, result.report_json, now)
    log = logger.warning if result.verdict == drift.VERDICT_DRIFT else logger.info
    log("drift report: %s", result.message, extra={"report_id": summary["report_id"], "version": version})
    return summary


def _placeholder_html(summary: dict[str, Any]) -> str:
    from html import escape

    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Drift report</title></head><body>"
        f"<h1>No drift report: {escape(summary['message'])}</h1>"
        f"<p>Model {escape(summary['model_name'])} version {escape(summary['model_version'])}, window "
        f"{escape(summary['window_start'])} to {escape(summary['window_end'])}: {summary['rows']} live rows "
        f"({summary['other_version_rows']} rows of other versions left out).</p></body></html>"
    )
