"""The inference API: `create_app(settings)` builds one self-contained app (uvicorn --factory).

Everything an app needs (model holder, metrics registry, drift buffer, inference pool) hangs off
app.state and lives as long as the app: two apps in one process share nothing.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from parking_ml.config import Settings, load_settings
from parking_ml.logs import configure_logging
from serving.drift import DriftBuffer
from serving.errors import install_error_handlers
from serving.holder import ModelHolder
from serving.metrics import Metrics
from serving.routes import router
from serving.runtime import Admission, RequestContextMiddleware
from serving.web import install_web_page

logger = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    metrics: Metrics
    holder: ModelHolder
    drift: DriftBuffer
    admission: Admission


def _lake_writer(settings: Settings):
    from parking_ml.lake import Lake

    lake = Lake.from_settings(settings)
    return lake.write_parquet


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for these settings (read from the environment when None).

    With settings=None this is the process entry point (uvicorn --factory, also in each worker process
    spawned by --workers N), so it configures logging unless the process already did, and keeps what start-up
    built out of the garbage collector's passes."""
    entry_point = settings is None
    if settings is None:
        settings = load_settings()
        if not logging.getLogger().handlers:
            configure_logging(settings.log_level, json_lines=settings.log_format == "json")
    metrics = Metrics()
    services = Services(
        settings=settings,
        metrics=metrics,
        holder=ModelHolder(settings, metrics),
        drift=DriftBuffer(
            _lake_writer(settings),
            metrics,
            flush_rows=settings.drift_flush_rows,
            flush_interval_s=settings.drift_flush_interval_s,
        ),
        admission=Admission(settings.max_concurrency, settings.max_queue, metrics),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services.holder.start()
        services.drift.start()
        if entry_point:
            # what the server process holds after start-up (libraries, the app) is never garbage: out of the
            # collector's full passes, which otherwise stall a request now and then (docs/experiments/request-path.md)
            gc.freeze()
        logger.info(
            "api starting",
            extra={
                "model_source": services.holder.source_label,
                "auth": bool(settings.api_keys),
                "gc_frozen_objects": gc.get_freeze_count(),
            },
        )
        try:
            yield
        finally:
            services.holder.stop()
            services.admission.shutdown()
            services.drift.stop()
            logger.info("api stopped", extra={"drift_rows_left": len(services.drift)})

    app = FastAPI(
        title="parking-ml inference API",
        version="1",
        description="Finds free and occupied parking spaces in aerial/satellite image tiles. "
        "A web page to try it on your own tile is served at [/](/).",
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(router)
    install_web_page(app)
    app.add_middleware(RequestContextMiddleware, metrics=metrics, max_upload_bytes=settings.max_upload_bytes)
    return app
