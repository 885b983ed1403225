"""No Docker engine runs here: the images are checked statically. hadolint runs in scripts/check_deploy.py
(`make check-deploy`; tests/unit/test_deploy_checks.py); these tests hold the images' pins to the lock."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;#]+)", line.strip())
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(3)
    return out


def test_mlflow_image_pins_match_the_lock():
    lock = _pins(REPO / "requirements" / "lock.txt")
    pins = _pins(REPO / "docker" / "mlflow-requirements.txt")
    assert pins.get("mlflow") == lock["mlflow"]
    assert {name: lock.get(name) for name in pins} == pins


def test_images_run_as_non_root_from_pinned_bases():
    for dockerfile in sorted((REPO / "docker").glob("*.Dockerfile")):
        lines = [ln.strip() for ln in dockerfile.read_text().splitlines()]
        bases = [ln.split()[1] for ln in lines if ln.startswith("FROM ")]
        assert bases and all(":" in b and not b.endswith(":latest") for b in bases), (dockerfile.name, bases)
        users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
        assert users and users[-1].split(":")[0] not in {"0", "root"}, dockerfile.name


def test_serving_image_pins_match_the_lock():
    lock = _pins(REPO / "requirements" / "lock.txt")
    slim = _pins(REPO / "docker" / "serving-requirements.txt")
    assert slim, "no pins found in docker/serving-requirements.txt"
    assert "torch" not in slim and "apache-airflow" not in slim
    mismatched = {name: (ver, lock.get(name)) for name, ver in slim.items() if lock.get(name) != ver}
    assert mismatched == {}, f"serving image pins differ from requirements/lock.txt: {mismatched}"


def test_copy_sources_exist_and_are_in_the_build_context():
    ignored = {
        ln.strip().rstrip("/")
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith(("#", "!"))
    }
    assert {".env", ".git", "var", ".venv"} <= ignored, "secrets and local state stay out of the build context"
    for dockerfile in sorted((REPO / "docker").glob("*.Dockerfile")):
        for line in dockerfile.read_text().splitlines():
            parts = line.split()
            if not parts or parts[0] != "COPY" or any(p.startswith("--from") for p in parts):
                continue
            for source in [p for p in parts[1:-1] if not p.startswith("--")]:
                assert list(REPO.glob(source)), f"{dockerfile.name}: COPY {source} matches nothing"
                assert source.split("/")[0].rstrip("*") not in ignored, f"{dockerfile.name}: {source} is dockerignored"
