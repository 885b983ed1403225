"""The demo's closing summary: scores from the champion's tags, drift verdicts, and no line over 100 columns
(a terminal of 100 columns never wraps a URL or a command in the middle)."""

from __future__ import annotations

from parking_ml.cli.demo_summary import WIDTH, Summary, link_lines, score_line, summary_lines
from parking_ml.ops.airflow_api import log_lines


def _summary() -> Summary:
    return Summary(
        dataset_version="3f2a9c1b7e4d",
        n_images=384,
        n_tiles=1536,
        model_name="parking-spaces",
        champion="3",
        champion_tags={
            "objective_metric": "free_f1",
            "cv_free_f1_mean": "0.7123",
            "cv_free_f1_std": "0.031",
            "holdout_free_f1": "0.745",
            "dataset_version": "3f2a9c1b7e4d",
        },
        answer={"version": "3", "free": 12, "occupied": 30, "truth_free": 11, "ms": 212.4},
        drift=[
            {"style": "default", "verdict": "ok", "drift_share": 0.0, "rows": 100, "report_id": "20261206T234501Z"},
            {"style": "winter", "verdict": "drift", "drift_share": 0.64, "rows": 100, "report_id": "20261206T2346Z"},
        ],
        timings={
            "synth + upload": 58.2,
            "stack up": 35.0,
            "parking_ingest": 22.1,
            "parking_preprocess": 57.3,
            "parking_train": 648.0,
            "parking_promote": 6.2,
            "api": 3.1,
            "drift": 95.4,
            "total": 930.0,
        },
    )


def test_summary_says_data_scores_answer_and_verdicts():
    text = "\n".join(summary_lines(_summary()))
    assert "3f2a9c1b7e4d  384 images, 1,536 tiles" in text
    assert "parking-spaces v3" in text
    assert "free_f1: CV 0.712 ± 0.031, holdout 0.745" in text
    assert "v3: 12 free, 30 occupied spaces (generator truth: 11 free), 212 ms" in text
    assert "drift default   ok: 0% of features drifted, 100 rows" in text
    assert "drift winter    drift: 64% of features drifted, 100 rows" in text
    assert "parking_train 648 s" in text and "total 15.5 min" in text


def test_no_line_is_wider_than_a_100_column_terminal():
    lines = summary_lines(_summary()) + link_lines(
        "127.0.0.1", 8080, "Xk3vQ9mZ2pL7wR4t", "http://127.0.0.1:5000", "http://127.0.0.1:8000"
    )
    assert max(len(line) for line in lines) <= WIDTH
    # commands and URLs stay whole on their line
    assert any(line.endswith("curl -F file=@tile.png 'http://127.0.0.1:8000/v1/predict?gsd=0.1'") for line in lines)
    assert any("http://127.0.0.1:8080  (user admin, password Xk3vQ9mZ2pL7wR4t)" in line for line in lines)


def test_missing_scores_and_refused_first_model_are_said_plainly():
    assert score_line({}) == "free_f1: no scores recorded"
    text = "\n".join(summary_lines(Summary(model_name="parking-spaces")))
    assert "champion        none: the promotion gate refused" in text


def test_task_log_entries_become_text_lines():
    content = [
        {"sources": ["/logs/x.log"], "event": "::group::Log message source details"},
        {"timestamp": "2026-12-06T23:50:01.123Z", "level": "info", "event": "ingest started"},
        {
            "timestamp": "2026-12-06T23:50:02.5Z",
            "level": "error",
            "event": "Task failed with exception",
            "error_detail": [{"exc_type": "FileNotFoundError", "exc_value": "no raw manifest"}],
        },
        "plain text line",
    ]
    assert log_lines(content) == [
        "23:50:01 INFO ingest started",
        "23:50:02 ERROR Task failed with exception",
        "    FileNotFoundError: no raw manifest",
        "plain text line",
    ]


def test_a_window_without_a_verdict_says_why():
    report = {
        "style": "winter",
        "verdict": "not_enough_data",
        "rows": 20,
        "drift_share": 0.0,
        "message": "not enough data (8 of 20 needed reference rows)",
        "report_id": "20261206T233731Z",
    }
    text = "\n".join(summary_lines(Summary(model_name="parking-spaces", drift=[report])))
    assert "drift winter    not enough data (8 of 20 needed reference rows) (report 20261206T233731Z)" in text
