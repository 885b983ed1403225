"""Drift reports: verdicts on shifted vs unshifted tiles, not-enough-data, the version rule, the lake layout."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from monitoring import store
from monitoring.drift import VERDICT_DRIFT, VERDICT_NOT_ENOUGH, VERDICT_OK, DriftConfig, compare
from monitoring.run import DriftInputError, Window, run_drift
from parking_ml.lake import Lake
from tests.fakes.drift import style_rows, write_live

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return style_rows("default", 200, seed=1)


@pytest.mark.parametrize(("style", "expected"), [("default", VERDICT_OK), ("winter", VERDICT_DRIFT),
                                                 ("dusk", VERDICT_DRIFT), ("sensor", VERDICT_DRIFT)])  # fmt: skip
def test_shifted_styles_drift_and_the_default_style_does_not(reference, style, expected):
    result = compare(reference, style_rows(style, 100, seed=2))
    assert result.verdict == expected, result.message
    assert result.rows == 100 and result.reference_rows == 200
    assert set(result.features) == set(DriftConfig().columns) - {"mean_confidence", "free_fraction", "free_spaces"}
    assert all(f["score"] is not None for f in result.features.values())
    assert "<html" in result.html.lower() and json.loads(result.report_json)["metrics"]
    if expected == VERDICT_OK:
        assert result.drift_share < 0.5 and not any(f["strong"] for f in result.features.values())
    else:
        assert result.drifted_features


def test_thresholds_follow_the_sample_sizes():
    cfg = DriftConfig()
    assert cfg.threshold(200, 100) > cfg.threshold(200, 1000) > cfg.threshold(100_000, 100_000) == cfg.floor
    assert cfg.embedding_threshold(200, 100) > cfg.embedding_threshold(10_000, 10_000) >= cfg.embedding_floor


def test_too_few_rows_is_not_enough_data_not_an_alarm(reference):
    result = compare(reference, style_rows("dusk", 100, seed=2).iloc[:99])
    assert result.verdict == VERDICT_NOT_ENOUGH
    assert result.message == "not enough data (99 of 100 needed live rows)"
    assert result.drifted_features == [] and result.html == ""
    small_ref = compare(reference.iloc[:10], style_rows("dusk", 100, seed=2))
    assert small_ref.message == "not enough data (10 of 100 needed reference rows)"


def test_run_drift_stores_report_summary_and_index(make_settings, reference):
    settings = make_settings(drift_min_rows=100)
    lake = Lake.from_settings(settings)
    write_live(lake, style_rows("winter", 100, seed=2), "3", NOW - timedelta(hours=3))
    summary = run_drift(settings, model_version="3", now=NOW, reference=reference)
    assert summary["verdict"] == VERDICT_DRIFT and summary["rows"] == 100
    assert summary["window_start"] == (NOW - timedelta(hours=24)).isoformat()
    rid = summary["report_id"]
    assert rid == "20261206T120000Z"
    for name in store.REPORT_FILES:
        assert lake.exists(f"monitoring/reports/{rid}/{name}")
    stored = json.loads(lake.read_bytes(f"monitoring/reports/{rid}/summary.json"))
    assert stored["drifted_features"] == summary["drifted_features"] and stored["model_version"] == "3"
    # a second report in the same second gets its own folder; the index lists both, newest first
    again = run_drift(settings, model_version="3", since=NOW - timedelta(hours=1), now=NOW, reference=reference)
    assert again["report_id"] == "20261206T120000Z-2" and again["verdict"] == VERDICT_NOT_ENOUGH
    assert "0 of 100 needed" in again["message"]
    index = store.read_index(lake)
    assert list(index.columns[:8]) == [
        "created", "model_version", "window_start", "window_end", "rows", "drift_share", "drifted_features",
        "verdict",
    ]  # fmt: skip
    assert set(index["report_id"]) == {rid, again["report_id"]} and len(index) == 2
    assert index.iloc[0]["verdict"] in (VERDICT_DRIFT, VERDICT_NOT_ENOUGH)
    html = store.read_report_file(lake, again["report_id"], "report.html").decode()
    assert "not enough data (0 of 100 needed live rows)" in html
    assert not list(lake.local_path("monitoring").rglob("*.tmp-*"))


def test_rows_of_other_versions_are_never_compared(make_settings, reference):
    settings = make_settings()
    lake = Lake.from_settings(settings)
    start = NOW - timedelta(hours=2)
    write_live(lake, style_rows("default", 100, seed=2), "1", start)
    write_live(lake, style_rows("dusk", 100, seed=2), "2", start)  # another version, shifted imagery
    write_live(lake, style_rows("dusk", 100, seed=3), "1", start, name="another-model")
    ok = run_drift(settings, model_version="1", now=NOW, reference=reference)
    assert (ok["verdict"], ok["rows"], ok["other_version_rows"]) == (VERDICT_OK, 100, 200)
    drifted = run_drift(settings, model_version="2", now=NOW, reference=reference)
    assert (drifted["verdict"], drifted["rows"]) == (VERDICT_DRIFT, 100)
    none = run_drift(settings, model_version="7", now=NOW, reference=reference)
    assert none["verdict"] == VERDICT_NOT_ENOUGH and none["other_version_rows"] == 300


def test_window_spans_days_and_excludes_its_end(make_settings, reference):
    settings = make_settings()
    lake = Lake.from_settings(settings)
    # 100 rows from 23:59:00 on the 5th over midnight, then 100 more rows after the window's end
    write_live(lake, style_rows("default", 100, seed=2), "1", datetime(2026, 12, 5, 23, 59, tzinfo=UTC))
    write_live(lake, style_rows("dusk", 100, seed=2), "1", NOW)
    assert {k.split("/")[2] for k in lake.list("monitoring/inference")} == {
        "date=2026-12-05", "date=2026-12-06",
    }  # fmt: skip
    rows = store.load_live_rows(lake, datetime(2026, 12, 5, 12, tzinfo=UTC), NOW)
    assert len(rows) == 100
    summary = run_drift(settings, model_version="1", until="2026-12-06T12:00:00Z", now=NOW, reference=reference)
    assert (summary["rows"], summary["verdict"]) == (100, VERDICT_OK)


def test_window_and_report_id_errors():
    with pytest.raises(DriftInputError, match="must be before"):
        Window.parse("2026-12-06", "2026-12-05", NOW)
    with pytest.raises(DriftInputError, match="not an ISO time"):
        Window.parse("yesterday", None, NOW)
    for bad in ("../index.parquet", "/etc/passwd", "..", "20261206T120000Z/../x", ""):
        assert store.read_report_file(Lake("file:///nonexistent", {}), bad, "report.html") is None
    with pytest.raises(ValueError, match="no report file"):
        store.report_key("20261206T120000Z", "../../secret")


def test_served_version_needs_a_champion_or_model_dir(make_settings, tmp_path, mlflow_server):
    settings = make_settings(mlflow_tracking_uri=mlflow_server, model_name="no-such-model")
    with pytest.raises(DriftInputError, match="promote a model first"):
        run_drift(settings, now=NOW)
    local = make_settings(model_dir=tmp_path)
    with pytest.raises(DriftInputError, match="no drift reference"):
        run_drift(local, now=NOW)


def test_report_on_an_s3_lake(make_settings, moto_server, reference):
    import boto3

    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket="drift-lake")
    settings = make_settings(lake_url="s3://drift-lake/lake", s3_endpoint_url=moto_server)
    lake = Lake.from_settings(settings)
    write_live(lake, style_rows("default", 100, seed=2), "1", NOW - timedelta(hours=1))
    summary = run_drift(settings, model_version="1", now=NOW, reference=reference)
    assert summary["verdict"] == VERDICT_OK
    assert lake.exists(f"monitoring/reports/{summary['report_id']}/report.html")
    assert store.read_index(lake)["report_id"].tolist() == [summary["report_id"]]


def _with_embedding(frame: pd.DataFrame, seed: int, shift: float = 0.0) -> pd.DataFrame:
    import numpy as np

    rng = np.random.default_rng(seed)
    emb = pd.DataFrame(rng.normal(shift, 1.0, (len(frame), 4)), columns=[f"emb_{i}" for i in range(4)])
    return pd.concat([frame.reset_index(drop=True), emb], axis=1)


def test_a_small_window_leaves_the_embedding_out_instead_of_crashing():
    """A smoke model's reference holds a few rows: the embedding's t-SNE view needs more than 30 in all."""
    from monitoring.drift import EMBEDDING_MIN_ROWS, EMBEDDING_NAME

    cfg = DriftConfig(min_rows=8)
    small = compare(_with_embedding(style_rows("default", 12, seed=1), 1),
                    _with_embedding(style_rows("default", 12, seed=2), 2), cfg)  # fmt: skip
    assert small.verdict in (VERDICT_OK, VERDICT_DRIFT) and EMBEDDING_NAME not in small.features
    n = EMBEDDING_MIN_ROWS
    larger = compare(_with_embedding(style_rows("default", n, seed=1), 1),
                     _with_embedding(style_rows("default", n, seed=2), 2, shift=3.0), cfg)  # fmt: skip
    assert larger.features[EMBEDDING_NAME]["drifted"]
