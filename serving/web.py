"""The web page at `/`: static files (no build step) that call POST /v1/predict from the browser.

The page itself is public, like /docs; the API calls it makes carry the user's key (X-API-Key), so the key
rule of the /v1 routes is unchanged.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"

# the page loads only its own files and talks only to this origin; images are shown from blob: URLs
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def install_web_page(app: FastAPI) -> None:
    """GET / (the page) and /static/* (its script and style sheet); unknown files answer the API's 404 JSON."""

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
