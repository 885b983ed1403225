"""Live drift rows: buffered in memory, written to the lake as parquet by a background thread.

A storage failure never reaches a request: the rows stay in the buffer for the next try (bounded, the
oldest are dropped first and counted) and the failure is logged and counted.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from serving.metrics import Metrics

logger = logging.getLogger(__name__)

PREFIX = "monitoring/inference"


def partition_key(day: str, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    return f"{PREFIX}/date={day}/{stamp}-{uuid.uuid4().hex[:12]}.parquet"


class DriftBuffer:
    """Thread-safe row buffer with a flusher thread; `write` is any callable(key, DataFrame)."""

    def __init__(
        self,
        write: Callable[[str, Any], None],
        metrics: Metrics,
        flush_rows: int = 256,
        flush_interval_s: float = 30.0,
        max_rows: int | None = None,
        max_pending: int = 8,
    ) -> None:
        self._write = write
        self._metrics = metrics
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self.max_rows = max_rows or max(10 * flush_rows, 10_000)
        self._rows: deque[dict[str, Any]] = deque()
        # rows still to be computed (each holds its request's image): bounded, beyond it the caller computes
        self.max_pending = max_pending
        self._pending: deque[tuple[Callable[[], dict[str, Any]], str]] = deque()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._writing = 0  # rows taken out by a flush in progress; still counted as buffered

    def add(self, row: dict[str, Any]) -> None:
        """Called on the request path: O(1), never raises for storage reasons."""
        with self._lock:
            self._rows.append(row)
            overflow = len(self._rows) - self.max_rows
            for _ in range(max(0, overflow)):
                self._rows.popleft()
            n = len(self._rows)
        if overflow > 0:
            self._metrics.drift_dropped.inc(overflow)
        self._metrics.drift_buffered.set(n)
        if n >= self.flush_rows:
            self._wake.set()

    def add_later(self, make_row: Callable[[], dict[str, Any]], request_id: str = "") -> None:
        """Called on the request path: the row is computed by the flusher thread, after the answer has gone
        (docs/experiments/request-path.md). Without a running flusher, or with max_pending rows waiting, it is
        computed here. A failing ``make_row`` is logged with the request's id, never raised."""
        with self._lock:
            self._pending.append((make_row, request_id))
            backlog = len(self._pending)
        if self._thread is None or backlog > self.max_pending:
            self._compute_pending()
        else:
            self._wake.set()

    def _compute_pending(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    return
                make_row, request_id = self._pending.popleft()
            try:
                row = make_row()
            except Exception:  # features are best effort: a row lost, never a request failed
                logger.exception("drift features failed", extra={"request_id": request_id})
                continue
            self.add(row)

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows) + len(self._pending) + self._writing

    def flush(self) -> int:
        """Write every buffered row; returns how many were written (0 on failure, rows kept)."""
        from parking_ml.features import features_frame

        self._compute_pending()
        with self._flush_lock:
            with self._lock:
                rows = list(self._rows)
                self._rows.clear()
                self._writing = len(rows)
            if not rows:
                return 0
            by_day: dict[str, list[dict[str, Any]]] = {}
            for row in rows:
                by_day.setdefault(str(row.get("date", "")), []).append(row)
            written = 0
            failed: list[dict[str, Any]] = []
            for day, day_rows in by_day.items():
                try:
                    # the day is the partition folder (date=...): a column of the same name would clash
                    # with hive partitioning when the folder is read as one dataset
                    frame = features_frame({k: v for k, v in r.items() if k != "date"} for r in day_rows)
                    self._write(partition_key(day), frame)
                    written += len(day_rows)
                except Exception as exc:  # any storage error: keep the rows, count, carry on
                    failed.extend(day_rows)
                    self._metrics.drift_write_failures.inc()
                    logger.warning(
                        "drift rows not written; kept for the next try",
                        extra={"rows": len(day_rows), "error": f"{type(exc).__name__}: {exc}"[:300]},
                    )
            with self._lock:
                self._rows.extendleft(reversed(failed))
                self._writing = 0
                overflow = len(self._rows) - self.max_rows
                for _ in range(max(0, overflow)):
                    self._rows.popleft()
            if overflow > 0:
                self._metrics.drift_dropped.inc(overflow)
            self._metrics.drift_rows.inc(written)
            self._metrics.drift_buffered.set(len(self))
            return written

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(timeout=min(1.0, self.flush_interval_s))
            self._wake.clear()
            self._compute_pending()
            due = time.monotonic() - last >= self.flush_interval_s
            if len(self) >= self.flush_rows or (due and len(self)):
                self.flush()
                last = time.monotonic()
            elif due:
                last = time.monotonic()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="drift-flusher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the flusher and write what is left (clean shutdown)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
        self.flush()


def feature_row(
    features: dict[str, float], request_id: str, model_name: str, model_version: str, now: datetime | None = None
) -> dict[str, Any]:
    """One drift row; ``now``: when the request was answered (default: now)."""
    now = now or datetime.now(UTC)
    return {
        **features,
        "timestamp": now.isoformat(),
        "date": now.strftime("%Y-%m-%d"),
        "request_id": request_id,
        "model_name": model_name,
        "model_version": model_version,
    }
