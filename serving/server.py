"""Run the API under uvicorn: shared by `parking-ml serve` and `python -m serving` (the container)."""

from __future__ import annotations

import os


def mlflow_client_defaults() -> None:
    # MLflow's client retries a dead server for ~2 minutes by default; the model holder has its own backoff
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def run_server(host: str, port: int, workers: int = 1, log_level: str = "info", json_logs: bool = False) -> None:
    """Serve serving.app:create_app (settings from the environment, built once per worker)."""
    import uvicorn

    from parking_ml.logs import configure_logging

    configure_logging(log_level, json_lines=json_logs)
    mlflow_client_defaults()
    # worker processes (--workers N) start fresh and configure their logging from the settings
    os.environ["PARKING_LOG_LEVEL"] = log_level.lower()
    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        log_level=log_level,
        access_log=False,  # the app logs one structured line per request, with its request id
        timeout_graceful_shutdown=30,
        proxy_headers=False,
    )
