"""Prometheus metrics of one app instance, in its own registry (no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_SPACE_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_duration = Histogram(
            "parking_http_request_duration_seconds",
            "HTTP request duration by route template, method and status",
            ["route", "method", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "parking_inference_duration_seconds",
            "Time per inference stage (decode, preprocess, inference, postprocess, total; features: the drift row, "
            "computed after the answer)",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.model_info = Gauge(
            "parking_model_info",
            "The model version being served (value 1)",
            ["name", "version", "alias"],
            registry=r,
        )
        self.model_loaded = Gauge("parking_model_loaded", "1 when a model is loaded and ready", registry=r)
        self.reloads = Counter(
            "parking_model_reloads_total", "Model (re)load attempts by result", ["result"], registry=r
        )
        self.registry_errors = Counter(
            "parking_registry_errors_total", "Failed calls to the model registry (MLflow)", registry=r
        )
        self.free_spaces = Histogram(
            "parking_free_spaces_per_request",
            "Free spaces found per prediction",
            buckets=_SPACE_BUCKETS,
            registry=r,
        )
        self.occupied_spaces = Histogram(
            "parking_occupied_spaces_per_request",
            "Occupied spaces found per prediction",
            buckets=_SPACE_BUCKETS,
            registry=r,
        )
        self.errors = Counter("parking_errors_total", "Error responses by error code", ["code"], registry=r)
        self.inflight = Gauge("parking_inference_inflight", "Inferences running or waiting for a slot", registry=r)
        self.drift_rows = Counter("parking_drift_rows_written_total", "Feature rows written to the lake", registry=r)
        self.drift_buffered = Gauge("parking_drift_rows_buffered", "Feature rows waiting to be written", registry=r)
        self.drift_dropped = Counter(
            "parking_drift_rows_dropped_total", "Feature rows dropped because the buffer was full", registry=r
        )
        self.drift_write_failures = Counter(
            "parking_drift_write_failures_total", "Failed writes of feature rows to the lake", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
