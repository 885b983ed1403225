"""The drift alert: a JSON POST of a report's summary to a webhook (Slack-style relays, PagerDuty bridges...)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from monitoring.store import INDEX_COLUMNS

# the alert carries what the report index holds of a report
ALERT_FIELDS = tuple(INDEX_COLUMNS)


class AlertError(RuntimeError):
    """The webhook did not take the alert; the message names the URL (without its query) and the answer."""


def alert_payload(summary: dict[str, Any], report_url: str | None = None) -> dict[str, Any]:
    payload = {k: summary.get(k) for k in ALERT_FIELDS}
    payload["text"] = (
        f"parking-ml drift on {summary.get('model_name')} v{summary.get('model_version')}: {summary.get('message')}"
    )
    if report_url:
        payload["report_url"] = report_url
    return payload


def post_alert(url: str, payload: dict[str, Any], timeout_s: float = 10.0) -> int:
    """POST payload as JSON; returns the HTTP status (2xx), raises AlertError otherwise."""
    shown = url.split("?", 1)[0]
    if not url.startswith(("http://", "https://")):
        raise AlertError(f"PARKING_ALERT_WEBHOOK must be an http(s) URL, got {shown!r}")
    body = json.dumps(payload, default=str).encode("utf-8")
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "parking-ml"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        raise AlertError(f"webhook {shown} answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise AlertError(f"webhook {shown} unreachable: {exc}") from None
