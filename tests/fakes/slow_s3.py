"""A moto S3 server whose writes can be slowed down: a slow network in front of the lake, so that a test can
catch a task in the middle of writing. It shares moto's in-process state with every other moto server of the
process (the `moto_server` fixture sees the same buckets)."""

from __future__ import annotations

import time
from threading import Thread

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server


class _QuietHandler(MotoRequestHandler):
    def log_request(self, *args, **kwargs) -> None:  # one line per request drowns a failing test's output
        pass


class SlowS3:
    """Each PUT whose path contains ``slow_prefix`` waits ``put_delay_s`` before moto stores it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.put_delay_s = 0.0
        self.slow_prefix = "/"
        self._server = None
        self._thread: Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _app(self, environ, start_response):
        if environ["REQUEST_METHOD"] == "PUT" and self.slow_prefix in environ.get("PATH_INFO", ""):
            time.sleep(self.put_delay_s)
        return self._moto(environ, start_response)

    def start(self) -> SlowS3:
        self._moto = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(self.host, self.port, self._app, threaded=True, request_handler=_QuietHandler)
        self._thread = Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
