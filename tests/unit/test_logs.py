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
