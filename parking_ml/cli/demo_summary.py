"""The demo's closing summary: what was built (data, champion and its scores, an API answer, drift verdicts)
and where to look (URLs with credentials). Plain lines of at most WIDTH columns, so that a terminal of 100
columns never wraps a URL or a command in the middle."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

WIDTH = 100
LABEL = 16  # column of the values


@dataclass
class Summary:
    dataset_version: str | None = None
    n_images: int | None = None
    n_tiles: int | None = None
    model_name: str = ""
    champion: str | None = None
    champion_tags: dict[str, str] = field(default_factory=dict)
    answer: dict[str, Any] | None = None
    drift: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def _row(label: str, value: str) -> str:
    return f"{label:<{LABEL}}{value}"


def _score(tags: dict[str, str], key: str) -> float | None:
    try:
        return float(tags[key])
    except (KeyError, ValueError):
        return None


def score_line(tags: dict[str, str]) -> str:
    """'free_f1: CV 0.712 ± 0.031, holdout 0.745' from a version's tags (what final_fit.register writes)."""
    metric = tags.get("objective_metric", "free_f1")
    mean, std, hold = (_score(tags, k) for k in (f"cv_{metric}_mean", f"cv_{metric}_std", f"holdout_{metric}"))
    parts = []
    if mean is not None:
        parts.append(f"CV {mean:.3f}" + (f" ± {std:.3f}" if std is not None else ""))
    if hold is not None:
        parts.append(f"holdout {hold:.3f}")
    return f"{metric}: {', '.join(parts) if parts else 'no scores recorded'}"


def drift_line(report: dict[str, Any]) -> str:
    verdict = str(report.get("verdict"))
    rows = int(report.get("rows") or 0)
    if verdict == "not_enough_data":
        what = str(report.get("message") or f"not enough data ({rows} rows)")
    else:
        what = f"{verdict}: {float(report.get('drift_share') or 0):.0%} of features drifted, {rows} rows"
    return f"{what} (report {report.get('report_id')})"


def summary_lines(s: Summary) -> list[str]:
    out = []
    if s.dataset_version:
        size = f"{s.n_images:,} images, {s.n_tiles:,} tiles" if s.n_tiles is not None else "size unknown"
        out.append(_row("dataset", f"{s.dataset_version}  {size}"))
    if s.champion:
        trained = s.champion_tags.get("dataset_version")
        on = f" (trained on {trained})" if trained else ""
        out.append(_row("champion", f"{s.model_name} v{s.champion}{on}"))
        out.append(_row("  scores", score_line(s.champion_tags)))
    else:
        out.append(_row("champion", "none: the promotion gate refused the first model (see MLflow)"))
    if s.answer:
        a = s.answer
        out.append(
            _row(
                "API answer",
                f"v{a['version']}: {a['free']} free, {a['occupied']} occupied spaces "
                f"(generator truth: {a['truth_free']} free), {a['ms']:.0f} ms",
            )
        )
    for report in s.drift:
        out.append(_row(f"drift {report['style']}", drift_line(report)))
    if s.timings:
        out.append(_row("time", ", ".join(f"{k} {v:.0f} s" for k, v in s.timings.items() if k != "total")))
        if "total" in s.timings:
            out.append(_row("", f"total {s.timings['total'] / 60:.1f} min"))
    return [line for chunk in out for line in _fit(chunk)]


def link_lines(host: str, airflow_port: int, password: str | None, mlflow_uri: str, api_url: str) -> list[str]:
    """Where to look, with the Airflow login; each URL and command whole on its line."""
    airflow = f"http://{host}:{airflow_port}"
    login = f"(user admin, password {password})" if password else "(user admin; password: parking-ml stack status)"
    return [
        _row("Airflow UI", f"{airflow}  {login}"),
        _row("Drift reports", f"{airflow}/plugin/drift-reports  (Airflow UI: Browse > Drift reports)"),
        _row("MLflow UI", mlflow_uri),
        _row("Web page", f"{api_url}/  (drop a tile, see the free spaces drawn on it)"),
        _row("API docs", f"{api_url}/docs"),
        _row("Try the API", f"curl -F file=@tile.png '{api_url}/v1/predict?gsd=0.1'"),
        _row("Stop", "make down  (or: parking-ml stack down)"),
    ]


def _fit(line: str) -> list[str]:
    """Break a line longer than WIDTH at a comma or space into continuation lines under the value column."""
    out = []
    while len(line) > WIDTH:
        cut = max(line.rfind(", ", LABEL, WIDTH - 1), line.rfind(" ", LABEL, WIDTH))
        if cut <= LABEL:
            break  # one unbreakable word (a URL): print it whole rather than cut it
        if line[cut] == ",":
            cut += 1
        out.append(line[:cut].rstrip())
        line = " " * LABEL + line[cut:].lstrip()
    out.append(line)
    return out
