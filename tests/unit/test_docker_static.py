"""No Docker engine runs here: the images are checked statically (hadolint) and their pins against the lock."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HADOLINT = Path(sys.executable).parent / "hadolint"


def _pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;#]+)", line.strip())
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(3)
    return out


@pytest.mark.parametrize("dockerfile", sorted((REPO / "docker").glob("*.Dockerfile")), ids=lambda p: p.name)
def test_hadolint_clean(dockerfile):
    res = subprocess.run([str(HADOLINT), str(dockerfile)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


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
