"""Logging: JSON lines (machine-readable) to log files and, on request, to stderr; short lines for people."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from parking_ml.config import Settings

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        # anything passed as logger.info("...", extra={...}) becomes a field
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _StderrHandler(logging.StreamHandler):
    """Writes to the current sys.stderr, not the one present at configure time (a test runner or a daemonising
    parent may swap and close it, and a handler bound to the old stream then fails on every record)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class HumanFormatter(logging.Formatter):
    """One short line for a person: time, level when it matters, message, then the extra fields as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        extras = [f"{k}={v}" for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")]
        level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        line = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {level}{record.getMessage()}"
        if extras:
            line += "  " + " ".join(extras)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(
    level: str = "INFO",
    json_lines: bool = False,
    log_file: Path | None = None,
    console_level: str | None = None,
) -> None:
    """Configure the root logger once per process (entry points call this, libraries never do).

    stderr gets JSON lines (json_lines) or short human lines at console_level (default: level); log_file, when
    given, gets every record at level as JSON lines, so a person's console stays readable and nothing is lost."""
    console = _StderrHandler()
    if json_lines:
        console.setFormatter(JsonFormatter())
    else:
        console.setFormatter(HumanFormatter())
        console.setLevel((console_level or level).upper())
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(JsonFormatter())
        handlers.append(file_handler)
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, logging.FileHandler):
            old.close()
    root.handlers[:] = handlers
    root.setLevel(level.upper())
    # one line per HTTP call drowns what a person watches (progress, stage results); keep their warnings
    for noisy in ("httpx", "httpcore", "urllib3", "botocore", "s3fs", "aiobotocore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def configure_cli_logging(settings: Settings, command: str, console_level: str = "INFO") -> Path:
    """A `parking-ml` command's logging: JSON lines to $PARKING_HOME/logs/<command>.log, and to stderr either short
    lines at console_level (PARKING_LOG_FORMAT=console) or JSON lines (json). Returns the log file's path."""
    log_file = settings.logs_dir / f"{command}.log"
    configure_logging("INFO", json_lines=settings.log_format == "json", log_file=log_file, console_level=console_level)
    return log_file
