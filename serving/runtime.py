"""Per-app runtime pieces: bounded inference admission and the request-context middleware."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import ApiError, error_body
from serving.metrics import Metrics

T = TypeVar("T")

access_log = logging.getLogger("serving.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# routes whose bodies are bounded by max_upload_bytes
_UPLOAD_METHODS = {"POST", "PUT", "PATCH"}


class Admission:
    """At most `running` inferences at once on a dedicated thread pool, `waiting` more queued; beyond that
    the request is refused at once with 503 + Retry-After instead of piling up."""

    def __init__(self, running: int, waiting: int, metrics: Metrics) -> None:
        self.running = running
        self.limit = running + waiting
        self.metrics = metrics
        self.admitted = 0
        self._sem: asyncio.Semaphore | None = None
        self.pool = ThreadPoolExecutor(max_workers=running, thread_name_prefix="inference")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        # single event-loop thread: the counter needs no lock
        if self.admitted >= self.limit:
            raise ApiError(
                503,
                "overloaded",
                f"server busy ({self.limit} requests running or queued); retry after the Retry-After delay",
                headers={"Retry-After": "1"},
            )
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.running)
        self.admitted += 1
        self.metrics.inflight.set(self.admitted)
        try:
            async with self._sem:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self.pool, partial(fn, *args))
        finally:
            self.admitted -= 1
            self.metrics.inflight.set(self.admitted)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=False)


class RequestContextMiddleware:
    """Request id (X-Request-ID accepted or generated, echoed), upload size limit, timing metrics and one
    structured access-log line per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_upload_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status_holder = {"status": 500}
        rid_header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        method = scope.get("method", "GET")
        limit = self.max_upload_bytes
        try:
            if method in _UPLOAD_METHODS:
                declared = headers.get(b"content-length")
                if declared is not None:
                    try:
                        size = int(declared)
                    except ValueError:
                        size = -1
                    if size < 0:
                        await self._reject(send_wrapped, 400, "bad_request", "invalid Content-Length header")
                        return
                    if size > limit:
                        # refused before a byte of the body is read
                        await self._reject(send_wrapped, 413, "too_large", _too_large(size, limit))
                        return
                received = 0

                async def receive_limited() -> Message:
                    nonlocal received
                    message = await receive()
                    if message["type"] == "http.request":
                        received += len(message.get("body", b""))
                        if received > limit:
                            # FastAPI re-raises its own HTTPException from body parsing; ours become 400
                            raise HTTPException(413, _too_large(received, limit))
                    return message

                await self.app(scope, receive_limited, send_wrapped)
            else:
                await self.app(scope, receive, send_wrapped)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            status = status_holder["status"]
            elapsed = time.perf_counter() - start
            self.metrics.http_duration.labels(route=template, method=method, status=str(status)).observe(elapsed)
            access_log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": method,
                    "route": template,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )

    async def _reject(self, send: Send, status: int, code: str, message: str) -> None:
        self.metrics.errors.labels(code=code).inc()
        body = json.dumps(error_body(code, message)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _too_large(size: int, limit: int) -> str:
    return (
        f"upload of {size:,} bytes is above the limit of {limit:,} bytes; send a smaller tile "
        "or raise PARKING_MAX_UPLOAD_BYTES"
    )
