"""Airflow plugin: "Drift reports" in the Airflow UI's navigation, behind the Airflow login.

A FastAPI app mounted by the api-server at /parking-drift lists the drift reports of the lake
(monitoring/reports/index.parquet, newest first) and serves each report's HTML. Airflow does not protect
plugin apps by itself: every route depends on the api-server's own `get_user`, which checks the JWT the UI
sends (the `_token` cookie in the navigation's iframe, or `Authorization: Bearer` for API clients).
No login: 401; a bad or expired token: 401/403. A report id that is not a report folder's name (`../`, an
absolute path, an encoded one) is 404, since files are looked up by id pattern, never by path.
"""

from __future__ import annotations

from html import escape
from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, Response

URL_PREFIX = "/parking-drift"


def _auth_dependency():
    # the api-server's own check (JWT signature, expiry, revocation), not a copy of it
    from airflow.api_fastapi.core_api.security import get_user

    return Depends(get_user)


def _lake():
    from parking_ml.config import load_settings
    from parking_ml.lake import Lake

    return Lake.from_settings(load_settings())


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1b1f24}"
    "table{border-collapse:collapse;width:100%}th,td{padding:.4rem .6rem;border-bottom:1px solid #d0d7de;"
    "text-align:left;font-size:.9rem}th{background:#f6f8fa}.drift{color:#b42318;font-weight:600}"
    ".ok{color:#067647}.not_enough_data{color:#6b7280}td.num{text-align:right;font-variant-numeric:tabular-nums}"
)


def list_page(rows: list[dict]) -> str:
    body = []
    for r in rows:
        rid = escape(str(r["report_id"]))
        share = f"{float(r['drift_share']):.0%}" if r["verdict"] != "not_enough_data" else "n/a"
        body.append(
            "<tr>"
            f"<td><a href='{URL_PREFIX}/report/{rid}'>{escape(str(r['created'])[:19].replace('T', ' '))} UTC</a></td>"
            f"<td>{escape(str(r['model_name']))} v{escape(str(r['model_version']))}</td>"
            f"<td>{escape(str(r['window_start'])[:16].replace('T', ' '))} to "
            f"{escape(str(r['window_end'])[:16].replace('T', ' '))}</td>"
            f"<td class='num'>{int(r['rows'])}</td><td class='num'>{share}</td>"
            f"<td class='{escape(str(r['verdict']))}'>{escape(str(r['verdict']).replace('_', ' '))}</td>"
            f"<td>{escape(str(r['drifted_features']).replace(',', ', '))}</td>"
            "</tr>"
        )
    table = (
        "<table><thead><tr><th>time</th><th>model</th><th>window (UTC)</th><th>rows</th><th>drift share</th>"
        "<th>verdict</th><th>drifted features</th></tr></thead><tbody>" + "".join(body) + "</tbody></table>"
        if body
        else "<p>No drift report yet: run the <code>parking_drift</code> DAG (or <code>parking-ml drift</code>) "
        "after the API has served some traffic.</p>"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Drift reports</title>"
        f"<style>{_STYLE}</style></head><body><h1>Drift reports</h1>{table}</body></html>"
    )


def create_app() -> FastAPI:
    app = FastAPI(title="parking-ml drift reports", dependencies=[_auth_dependency()], docs_url=None, redoc_url=None)

    def index_rows() -> list[dict]:
        from monitoring.store import read_index

        return read_index(_lake()).to_dict(orient="records")

    @app.get("/", response_class=HTMLResponse)
    def reports_page() -> HTMLResponse:
        return HTMLResponse(list_page(index_rows()))

    @app.get("/reports.json")
    def reports_json() -> JSONResponse:
        return JSONResponse(index_rows())

    # {rid:path} takes every remaining path (slashes, dots, decoded %2F) so that nothing falls through to
    # another route: anything but a report folder's name is 404
    @app.get("/report/{rid:path}")
    def report_file(rid: str) -> Response:
        from monitoring.store import REPORT_ID, read_report_file

        name = "report.html"
        if rid.endswith(("/summary.json", "/report.json")):
            rid, name = rid.rsplit("/", 1)
        if not REPORT_ID.match(rid):
            raise HTTPException(status_code=404, detail="no such report")
        data = read_report_file(_lake(), rid, name)
        if data is None:
            raise HTTPException(status_code=404, detail="no such report")
        media = "text/html; charset=utf-8" if name.endswith(".html") else "application/json"
        return Response(content=data, media_type=media)

    return app


class ParkingDriftPlugin(AirflowPlugin):
    name = "parking_drift"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "Drift reports"}
    ]
    external_views: ClassVar[list[dict[str, Any]]] = [
        {
            "name": "Drift reports",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "url_route": "drift-reports",
            "category": "browse",
        }
    ]
