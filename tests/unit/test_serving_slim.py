"""The serving image has no torch, Airflow or training stack: the API must run from a model folder without them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.fakes.packages import write_color_net

SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys, time

    BLOCKED = {"torch", "torchvision", "mlflow", "airflow", "optuna", "evidently", "sklearn",
               "segmentation_models_pytorch", "timm", "albumentations"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not in the serving image")

    sys.meta_path.insert(0, Block())

    import numpy as np
    from fastapi.testclient import TestClient
    from parking_ml.config import Settings
    from parking_ml.data.images import encode_png
    from serving.app import create_app

    app = create_app(Settings(home=sys.argv[1] + "/var", model_dir=sys.argv[1] + "/model"))
    with TestClient(app) as client:
        for _ in range(200):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        img = np.full((96, 96, 3), 110, np.uint8)
        img[20:50, 30:45] = (20, 220, 30)
        r = client.post("/v1/predict", files={"file": ("a.png", encode_png(img))})
        assert r.status_code == 200, r.text
        assert r.json()["free_spaces"] == 1, r.json()
    print("OK", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
    """
)


def test_api_runs_without_torch_mlflow_airflow(tmp_path):
    from parking_ml.inference import PreprocessConfig

    (tmp_path / "model").mkdir()
    write_color_net(tmp_path / "model" / "model.onnx")
    (tmp_path / "model" / "preprocess.json").write_text(PreprocessConfig().to_json())
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("OK []")


def test_registry_loading_path_imports_without_torch():
    """In registry mode the holder downloads packages through parking_ml.model.package: that import must not
    pull torch (export needs it, download does not)."""
    script = textwrap.dedent(
        """
        import importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in {"torch", "torchvision", "airflow", "segmentation_models_pytorch"}:
                    raise ImportError(f"{name} is not in the serving image")

        sys.meta_path.insert(0, Block())
        from parking_ml.model.package import download_package
        import serving.holder
        print("OK", callable(download_package))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "OK True"
