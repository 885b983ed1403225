import io
import json
import logging
import sys

from parking_ml.logs import configure_logging


def test_json_lines_carry_extra_fields_and_follow_stderr(monkeypatch):
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging(json_lines=True)
    first.close()  # what pytest's capture or a daemonising parent does to the stream seen at configure time
    current = io.StringIO()
    monkeypatch.setattr(sys, "stderr", current)
    logging.getLogger("parking.test").info("ingested", extra={"accepted": 3, "batch": "b1"})
    record = json.loads(current.getvalue().strip().splitlines()[-1])
    assert record["event"] == "ingested"
    assert record["accepted"] == 3 and record["batch"] == "b1"
    assert record["level"] == "info" and record["logger"] == "parking.test"
    assert record["ts"].endswith("Z")


def test_http_client_chatter_is_quieted(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    configure_logging(json_lines=True)
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    assert logging.getLogger("httpx").isEnabledFor(logging.WARNING)


def _json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def test_console_gets_short_lines_and_the_file_gets_json(monkeypatch, tmp_path):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    log_file = tmp_path / "logs" / "cmd.log"
    configure_logging(log_file=log_file, console_level="WARNING")
    logging.getLogger("parking.test").info("site written", extra={"site": "s1"})
    logging.getLogger("parking.test").warning("disk almost full", extra={"free_mb": 12})
    # the console: the warning only, as one short line; no JSON
    assert _json_lines(err.getvalue()) == []
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and "warning: disk almost full  free_mb=12" in lines[0]
    # the file: both records as JSON
    records = _json_lines(log_file.read_text())
    assert [(r["event"], r["level"]) for r in records] == [("site written", "info"), ("disk almost full", "warning")]
    assert records[0]["site"] == "s1"


def test_cli_logging_follows_the_log_format_setting(monkeypatch, tmp_path):
    from parking_ml.config import Settings
    from parking_ml.logs import configure_cli_logging

    for fmt, console_json in (("console", False), ("json", True)):
        err = io.StringIO()
        monkeypatch.setattr(sys, "stderr", err)
        path = configure_cli_logging(Settings(home=tmp_path / fmt, log_format=fmt), "demo")
        logging.getLogger("parking.test").info("stage done", extra={"stage": "ingest"})
        assert path == (tmp_path / fmt).resolve() / "logs" / "demo.log"
        assert bool(_json_lines(err.getvalue())) is console_json
        assert "stage done" in err.getvalue()
        assert _json_lines(path.read_text())[-1]["stage"] == "ingest"
    logging.getLogger().handlers[-1].close()
