"""`python -m serving [--host H] [--port P] [--workers N]`: the API without the full CLI (slim image)."""

from __future__ import annotations

import argparse

from parking_ml.config import load_settings
from serving.server import run_server


def main(argv: list[str] | None = None) -> None:
    settings = load_settings()
    parser = argparse.ArgumentParser(prog="python -m serving", description="parking-ml inference API")
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.api_port)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    run_server(args.host, args.port, args.workers, args.log_level, settings.log_format == "json")


if __name__ == "__main__":
    main()
