"""Training, registry, promotion and the two DAGs against a real MLflow server and a real Optuna DB.

Data: a tiny processed set in the lake layout (64 px tiles drawn with numpy/OpenCV: light free stalls, blue
occupied ones, grey asphalt), 5 sites x 3 tiles, 2 site-grouped folds, the last site as holdout.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from torch import nn

from parking_ml.config import Settings
from parking_ml.data.processed import ProcessedData, cv_folds, training_rows
from parking_ml.model import promote, registry
from parking_ml.model.final_fit import tune_and_register
from parking_ml.model.metrics import scalar_metrics
from parking_ml.model.package import build_package, download_package
from parking_ml.model.profiles import get_profile
from parking_ml.model.tune import open_study, run_study, study_name
from tests.fakes.scenes import stall_features, training_tile

pytestmark = pytest.mark.integration

DATASET = "v1"


def make_processed(lake: Path, version: str = DATASET, sites: int = 5, per_site: int = 3, size: int = 64) -> Path:
    """processed/<version>/ exactly as the data contract lays it out; the last site is the holdout."""
    rng = np.random.default_rng(0)
    out = lake / "processed" / version
    for sub in ("tiles", "masks", "stalls"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(sites):
        holdout = s == sites - 1
        for t in range(per_site):
            tile_id = f"site{s}_{t}"
            rgb, mask, rects = training_tile(rng, size)
            stalls = stall_features(rects)
            cv2.imwrite(str(out / "tiles" / f"{tile_id}.png"), rgb[:, :, ::-1])
            cv2.imwrite(str(out / "masks" / f"{tile_id}.png"), mask)
            (out / "stalls" / f"{tile_id}.geojson").write_text(
                json.dumps({"type": "FeatureCollection", "features": stalls})
            )
            n_free = sum(1 for st in stalls if st["properties"]["status"] == "free")
            rows.append(
                {
                    "tile_id": tile_id,
                    "image_sha256": f"{s:064d}",
                    "site": f"site{s}",
                    "fold": -1 if holdout else s % 2,
                    "split": "holdout" if holdout else "train",
                    "x0": 0,
                    "y0": 0,
                    "width": size,
                    "height": size,
                    "gsd": 0.1,
                    "free_spaces": n_free,
                    "occupied_spaces": len(stalls) - n_free,
                }
            )
    pd.DataFrame(rows).to_parquet(out / "manifest.parquet", index=False)
    (out / "dataset.json").write_text(json.dumps({"dataset_version": version, "tiles": len(rows)}))
    (lake / "processed" / "LATEST").write_text(version)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory, mlflow_server) -> dict:
    home = tmp_path_factory.mktemp("train-home")
    lake = home / "lake"
    root = make_processed(lake)
    settings = Settings(
        home=home,
        lake_url=f"file://{lake}",
        mlflow_tracking_uri=mlflow_server,
        profile="smoke",
        model_name="it-train",
        optuna_storage=f"sqlite:///{home / 'optuna.db'}",
        threads=1,
    )
    data = ProcessedData(root=root, manifest=pd.read_parquet(root / "manifest.parquet"), version=DATASET)
    return {"settings": settings, "data": data, "home": home, "lake": lake}


@pytest.fixture(scope="module")
def trained(world) -> dict:
    outcome = tune_and_register(world["settings"], world["data"], progress=False)
    return outcome.to_dict()


def test_smoke_training_lowers_the_loss(world):
    from parking_ml.data.processed import training_rows
    from parking_ml.model.recipe import make_loader, new_model
    from parking_ml.model.train import FitConfig, fit, seed_everything

    profile = get_profile("smoke")
    seed_everything(0)
    model = new_model({"encoder": "resnet18"}, profile, world["settings"])
    loader = make_loader(world["data"].root, training_rows(world["data"].manifest), 64, 4, 0.0, 0)
    result = fit(
        model, loader, None, FitConfig(epochs=5, lr=3e-3, scheduler="none", progress=False), torch.device("cpu")
    )
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 5
    assert losses[-1] < 0.7 * losses[0], losses


def test_runs_nest_study_trials_folds_and_register_a_challenger(world, trained):
    settings = world["settings"]
    client = MlflowClient(settings.mlflow_tracking_uri)
    exp = client.get_experiment_by_name(settings.model_name)
    runs = client.search_runs([exp.experiment_id], max_results=500)
    by_kind: dict[str, list] = {}
    for r in runs:
        by_kind.setdefault(r.data.tags.get("run_kind"), []).append(r)
    (study,) = by_kind["study"]
    assert study.data.tags["dataset_version"] == DATASET and study.data.params["profile"] == "smoke"
    assert float(study.data.params["gap_weight"]) == get_profile("smoke").gap_weight == 4.0
    # the network's shape is on the study run, so a trial's parameters rebuild its architecture
    smoke = get_profile("smoke")
    assert study.data.params["arch"] == smoke.arch
    assert int(study.data.params["encoder_depth"]) == smoke.encoder_depth
    assert json.loads(study.data.params["decoder_channels"]) == list(smoke.decoder_channels)
    assert study.data.params["tta"] == smoke.tta == "dihedral"
    trials = by_kind["trial"]
    assert len(trials) == get_profile("smoke").n_trials == trained["trials_run"]
    trial_ids = {t.info.run_id for t in trials}
    assert all(t.data.tags["mlflow.parentRunId"] == study.info.run_id for t in trials)
    folds = by_kind["fold"]
    assert len(folds) == 2 * len(trials)
    assert {f.data.tags["mlflow.parentRunId"] for f in folds} == trial_ids
    for t in trials:
        assert {"cv_free_f1_mean", "cv_free_f1_std", "cv_free_ap_mean"} <= set(t.data.metrics)
    (final,) = by_kind["final_fit"]
    # smoke starts new networks: the searched learning rates as they are
    assert {r.data.params["lr_scale"] for r in [*folds, final]} == {"1.0"}
    assert final.data.tags["mlflow.parentRunId"] == study.info.run_id
    artifacts = {a.path for a in client.list_artifacts(final.info.run_id)}
    assert {"eval.json", "learning_curves.png", "overlays.png", "confusion_matrix.png"} <= artifacts
    # the fit's budget is what tuning and the timed estimate of the inference after the fit left of the
    # training budget; smoke's hour never binds, so the fit ran every planned step, and the run says how many
    smoke = get_profile("smoke")
    fit_budget = float(final.data.params["time_budget_s"])
    after_fit = float(final.data.params["after_fit_estimate_s"])
    assert after_fit > 0
    assert fit_budget == pytest.approx(smoke.train_budget_s - trained["timings_s"]["tuning"] - after_fit, abs=0.5)
    planned = smoke.final_epochs * smoke.steps_per_epoch
    assert final.data.metrics["final_fit_steps"] == final.data.metrics["final_fit_planned_steps"] == planned
    assert trained["final_fit_steps"] == trained["final_fit_planned_steps"] == planned

    version = registry.get_alias_version(settings, "challenger")
    assert version.version == trained["model_version"]
    tags = version.tags
    assert tags["dataset_version"] == DATASET
    assert tags["git_sha"]
    assert "cv_free_f1_mean" in tags and "holdout_free_f1" in tags and "holdout_free_count_mae" in tags
    assert 0.0 <= float(tags["holdout_free_ap"]) <= 1.0
    # smoke names no CV objective of its own: the folds are scored on the gate's primary metric
    assert tags["cv_objective"] == settings.objective_metric == "free_f1"
    assert float(tags["holdout_free_f1"]) == pytest.approx(trained["holdout_metrics"]["free_f1"], abs=1e-5)


def test_registered_package_downloads_flat_and_the_pyfunc_serves(world, trained, tmp_path):
    from parking_ml.inference import OnnxSegmenter, PreprocessConfig, predict

    settings = world["settings"]
    pkg = download_package(
        f"models:/{settings.model_name}@challenger", tmp_path / "pkg", tracking_uri=settings.mlflow_tracking_uri
    )
    assert sorted(p.name for p in pkg.iterdir()) == ["model.onnx", "preprocess.json", "reference_features.parquet"]
    config = PreprocessConfig.from_file(pkg / "preprocess.json")
    assert config.tile_size == 64
    # the package ships the profile's test-time augmentation, which the gate and the API then run
    assert config.tta == get_profile("smoke").tta == "dihedral"
    # and its growth of spaces, at the model's gsd
    assert config.grow_px == get_profile("smoke").grow_px == 1.0
    ref = pd.read_parquet(pkg / "reference_features.parquet")
    assert len(ref) == 12 and {"brightness", "free_fraction", "free_spaces"} <= set(ref.columns)
    rgb = cv2.imread(str(world["data"].root / "tiles" / "site4_0.png"))[:, :, ::-1].copy()
    assert predict(OnnxSegmenter.from_dir(pkg, threads=1), rgb).mask.shape == (64, 64)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{settings.model_name}@challenger")
    out = model.predict(np.zeros((2, 3, 64, 80), np.float32))
    assert out["logits"].shape == (2, 3, 64, 80) and out["mask"].shape == (2, 64, 80)

    # the final-fit run keeps the trained network, which a later fit can start from (Settings.init_weights):
    # rebuilt from it, the network gives the registered ONNX model's logits
    import torch

    from parking_ml.model.final_fit import NETWORK_FILE
    from parking_ml.model.recipe import new_model

    client = MlflowClient(settings.mlflow_tracking_uri)
    weights = client.download_artifacts(trained["run_id"], NETWORK_FILE, str(tmp_path))
    again = new_model(
        trained["best_params"], get_profile("smoke"), settings.model_copy(update={"init_weights": weights})
    )
    x = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        torch_logits = again.eval()(torch.from_numpy(x)).numpy()
    segmenter = OnnxSegmenter.from_dir(pkg, threads=1)
    onnx_logits = segmenter.session.run(None, {segmenter.input_name: x})[0]
    np.testing.assert_allclose(torch_logits, onnx_logits, atol=1e-3)


def test_the_benchmarks_peer_gets_our_final_fits_time(world, trained, bench_train):
    """bench/train.py's peer (the previous recipe) is fitted for our final fit's wall time, not for what the
    profile's training budget would leave it; its run says so and estimates nothing."""
    peer = bench_train.train_peer(world["settings"], trained)
    ours_s = trained["timings_s"]["final_fit"]
    assert peer["budget_s"] == ours_s
    assert peer["steps"] >= 1 and 0.0 <= peer["holdout"]["iou_free"] <= 1.0
    client = MlflowClient(world["settings"].mlflow_tracking_uri)
    exp = client.get_experiment_by_name("bench-peer")
    (run,) = client.search_runs([exp.experiment_id], "tags.run_kind = 'final_fit'")
    # logged rounded to 0.1 s: 1.25 s logs as 1.2 (round half to even), so a hair over half a tenth
    assert float(run.data.params["time_budget_s"]) == pytest.approx(ours_s, abs=0.0501)
    assert float(run.data.params["after_fit_estimate_s"]) == 0.0
    peer_settings = world["settings"].model_copy(update={"model_name": "bench-peer"})
    assert registry.get_alias_version(peer_settings, "challenger").version == "1"


def test_a_binding_budget_is_taken_again_halfway_through_the_final_fit(world, trained, monkeypatch):
    """With a training budget that binds, the final fit re-times the inference after it on the half-trained
    model and takes the budget that estimate leaves; the run logs both estimates and the budget it ended
    under."""
    import dataclasses

    from parking_ml.model import budget
    from parking_ml.model.final_fit import final_fit
    from parking_ml.model.profiles import MIN_FIT_SHARE, final_fit_budget

    # without the fixed 30 s for scoring and registration, an 8-s budget is left mostly to the fit (not
    # its minimum share, which both estimates would get alike)
    monkeypatch.setattr(budget, "AFTER_FIT_FIXED_S", 0.0)
    settings = world["settings"].model_copy(update={"model_name": "it-mid-fit"})
    # 16 s: on 2 fp32 CPU cores the estimate of the dihedral-TTA inference after the fit alone came to 4.9 s
    profile = dataclasses.replace(get_profile("smoke"), train_budget_s=16.0, final_epochs=8, steps_per_epoch=80)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment(settings.model_name)
    with mlflow.start_run(run_name="mid-fit"):
        result = final_fit(settings, world["data"], profile, trained["best_params"], {}, "it-mid-fit", progress=False)
    client = MlflowClient(settings.mlflow_tracking_uri)
    exp = client.get_experiment_by_name(settings.model_name)
    (run,) = client.search_runs([exp.experiment_id], "tags.run_kind = 'final_fit'")
    params = run.data.params
    first, mid = float(params["after_fit_estimate_s"]), float(params["after_fit_estimate_mid_s"])
    assert mid > 0 and 0 < first < profile.train_budget_s * (1 - MIN_FIT_SHARE)
    assert float(params["time_budget_s"]) == pytest.approx(final_fit_budget(profile, 0.0, first), abs=0.05)
    assert float(params["time_budget_mid_s"]) == pytest.approx(final_fit_budget(profile, 0.0, mid), abs=0.1)
    # the budget bound: fewer steps than planned (how the remaining epochs follow it is the unit tests' part)
    assert 1 <= result.final_fit_steps < profile.final_epochs * profile.steps_per_epoch


def test_folds_and_final_fit_started_from_trained_weights_train_at_the_scaled_rates(world, monkeypatch):
    """From a weights file, every fold model and the final fit train at the profile's fraction of the trial's
    learning rates (AdamW's and Muon's), and their runs log that fraction."""
    import dataclasses

    from parking_ml.model import train
    from parking_ml.model.final_fit import final_fit
    from parking_ml.model.recipe import default_params, new_model

    settings = world["settings"].model_copy(update={"model_name": "it-lr-scale"})
    smoke = get_profile("smoke")
    # one encoder: the trial's network must fit the start file
    space = dataclasses.replace(smoke.space, encoders=smoke.space.encoders[:1], optimizers=("muon",))
    profile = dataclasses.replace(smoke, name="smoke-lr-scale", n_trials=1, pretrained_lr_scale=0.5, space=space)
    start = world["home"] / "lr-scale-start.pt"
    torch.save(new_model(default_params(profile), profile, settings).state_dict(), start)
    settings = settings.model_copy(update={"init_weights": str(start)})
    configs = []
    real_fit = train.fit
    monkeypatch.setattr(
        train,
        "fit",
        lambda model, loader, validate, cfg, *a, **k: (
            configs.append(cfg) or real_fit(model, loader, validate, cfg, *a, **k)
        ),
    )
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment(settings.model_name)
    with mlflow.start_run(run_name="lr-scale-check"):
        study, ran = run_study(settings, world["data"], profile, n_trials=1, progress=False)
        params = study.trials[0].params
        final_fit(settings, world["data"], profile, params, {}, "it-lr-scale", progress=False)
    assert ran == 1 and params["optimizer"] == "muon"
    folds = len(cv_folds(world["data"].manifest))
    assert len(configs) == folds + 1
    for cfg in configs:
        assert (cfg.lr, cfg.muon_lr) == pytest.approx((params["lr"] * 0.5, params["muon_lr"] * 0.5))
    client = MlflowClient(settings.mlflow_tracking_uri)
    exp = client.get_experiment_by_name(settings.model_name)
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("run_kind") in ("fold", "final_fit")]
    assert len(runs) == folds + 1 and {r.data.params["lr_scale"] for r in runs} == {"0.5"}


def test_a_resumed_study_runs_only_the_missing_trials(world, trained):
    import optuna

    settings, data = world["settings"], world["data"]
    profile = get_profile("smoke")
    name = study_name(settings, data.version, profile)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment(settings.model_name)
    with mlflow.start_run(run_name="resume-check"):
        _, ran = run_study(settings, data, profile, n_trials=profile.n_trials + 1, progress=False)
        assert ran == 1
        _, ran = run_study(settings, data, profile, n_trials=profile.n_trials + 1, progress=False)
        assert ran == 0
    loaded = optuna.load_study(study_name=name, storage=settings.optuna_storage)
    numbers = [t.number for t in loaded.trials if t.state.is_finished()]
    assert numbers == list(range(profile.n_trials + 1))


def test_the_study_stops_where_the_tuning_budget_callback_says(world, monkeypatch):
    """run_study hands Optuna the profile's tuning budget as stop_before_overrun's: a callback that stops after
    the first trial leaves one trial of the three asked for."""
    import dataclasses

    from parking_ml.model import tune

    settings, data = world["settings"], world["data"]
    profile = dataclasses.replace(get_profile("smoke"), name="smoke-budget", tuning_budget_s=123.0)
    budgets = []

    def stop_after_first(budget_s):
        budgets.append(budget_s)
        return lambda study, trial: study.stop()

    monkeypatch.setattr(tune, "stop_before_overrun", stop_after_first)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment(settings.model_name)
    with mlflow.start_run(run_name="tuning-budget-check"):
        _, ran = run_study(settings, data, profile, n_trials=3, progress=False)
    assert budgets == [123.0] and ran == 1


def test_a_profile_cv_objective_is_what_the_study_maximises(world, monkeypatch):
    """The demo profile scores folds on free_ap: the trial's value must be that mean, not free F1's. The
    folds validate without the package's test-time augmentation, on tiles from the run's shared cache."""
    import dataclasses

    import optuna

    from parking_ml.model import train

    settings, data = world["settings"], world["data"]
    data = dataclasses.replace(data, decoded={})  # this run's own cache, not the module fixture's
    profile = dataclasses.replace(get_profile("smoke"), name="smoke-ap", cv_objective="free_ap", n_trials=1)
    assert profile.tta == "dihedral"
    validators = []
    real_validator = train.make_validator
    monkeypatch.setattr(
        train,
        "make_validator",
        lambda tiles, config, device: validators.append(config) or real_validator(tiles, config, device),
    )
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment(settings.model_name)
    with mlflow.start_run(run_name="cv-objective-check"):
        run_study(settings, data, profile, n_trials=1, progress=False)
    assert len(validators) == len(cv_folds(data.manifest)) and {c.tta for c in validators} == {"none"}
    # the fold models read their tiles through the run's cache (once each: see the dataset's unit test), and
    # no holdout tile enters it
    decoded = {key[0] for key in data.decoded}
    assert decoded and decoded <= set(training_rows(data.manifest)["tile_id"])
    study = optuna.load_study(study_name=study_name(settings, data.version, profile), storage=settings.optuna_storage)
    (trial,) = study.trials
    assert 0.0 < trial.value <= 1.0
    assert trial.value == pytest.approx(trial.user_attrs["free_ap_mean"])
    assert trial.value != pytest.approx(trial.user_attrs["free_f1_mean"])


def test_a_trial_killed_mid_run_is_requeued_with_its_parameters(world):
    import subprocess
    import sys

    from optuna.trial import TrialState

    from parking_ml.model.recipe import suggest
    from parking_ml.model.study_store import OWNER_ATTR, process_tag

    settings = world["settings"]
    profile = get_profile("smoke")
    study = open_study(settings, "it-train-killed-smoke", profile)
    trial = study.ask()
    params = suggest(trial, profile.space)  # the process "dies" here: the trial stays RUNNING
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    trial.set_user_attr(OWNER_ATTR, process_tag(gone.pid))  # as if that (now finished) process had run it
    gone.wait(timeout=30)
    study = open_study(settings, "it-train-killed-smoke", profile)
    states = [t.state for t in study.trials]
    assert TrialState.FAIL in states and TrialState.WAITING in states
    waiting = next(t for t in study.trials if t.state == TrialState.WAITING)
    assert waiting.params == params or waiting.system_attrs["fixed_params"] == params


def test_a_killed_training_process_resumes_from_the_stored_study(world, tmp_path):
    """SIGKILL a real `parking-ml train` in the middle of a trial, then rerun it: the study continues."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import optuna
    from optuna.trial import TrialState

    settings = world["settings"].model_copy(
        update={"model_name": "it-killed", "optuna_storage": f"sqlite:///{tmp_path / 'optuna.db'}"}
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PARKING_", "MLFLOW_"))},
        "PARKING_HOME": str(settings.home),
        "PARKING_LAKE_URL": settings.lake_url,
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "PARKING_PROFILE": "smoke",
        "PARKING_MODEL_NAME": settings.model_name,
        "PARKING_OPTUNA_STORAGE": settings.optuna_storage,
        "PARKING_THREADS": "1",
        "PARKING_N_TRIALS": "3",
    }
    cli = Path(sys.executable).parent / "parking-ml"
    proc = subprocess.Popen([str(cli), "train"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    name = study_name(settings, DATASET, get_profile("smoke"))
    victim = None
    deadline = time.monotonic() + 240
    try:
        while victim is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            try:
                trials = optuna.load_study(study_name=name, storage=settings.optuna_storage).get_trials()
            except KeyError:  # the study is not created yet
                continue
            # kill inside the second trial, once its MLflow run exists: one trial done, one half done
            running = [t for t in trials if t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs]
            if running and running[0].number >= 1:
                victim = running[0]
                os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert victim is not None, f"no trial was caught running; train exited {proc.returncode}: {proc.stderr.read()}"
    assert proc.returncode == -signal.SIGKILL
    before = optuna.load_study(study_name=name, storage=settings.optuna_storage).get_trials()
    ended = (TrialState.COMPLETE, TrialState.PRUNED)  # a re-run trial may be pruned: it still counts
    done_before = [t.number for t in before if t.state in ended]

    outcome = tune_and_register(settings, world["data"], n_trials=3, progress=False)

    after = optuna.load_study(study_name=name, storage=settings.optuna_storage).get_trials()
    states = {t.number: t.state for t in after}
    assert states[victim.number] == TrialState.FAIL
    finished = [t for t in after if t.state in ended]
    assert len(finished) == 3 and outcome.trials_run == 3 - len(done_before)
    # the interrupted trial ran again with the very parameters it had
    rerun = [t for t in finished if t.number > victim.number and t.params == victim.params]
    assert rerun, (victim.params, [t.params for t in finished])
    client = MlflowClient(settings.mlflow_tracking_uri)
    exp = client.get_experiment_by_name(settings.model_name)
    runs = client.search_runs([exp.experiment_id], max_results=200)
    studies = [r for r in runs if r.data.tags.get("run_kind") == "study"]
    assert len(studies) == 1, "the resumed run reopens the study's parent run"
    killed = client.get_run(victim.user_attrs["mlflow_run_id"])
    assert killed.info.status == "KILLED" and killed.data.tags.get("interrupted") == "true"
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    assert registry.get_alias_version(settings, "challenger").version == outcome.model_version


# --- promotion ---------------------------------------------------------------------------------------


class ColorRule(nn.Module):
    """A hand-written 'model' for the fake tiles: light paint is free, blue cars are occupied.

    keep < 1 blanks the right part of the image (a worse model); None predicts background only (useless).
    """

    def __init__(self, keep: float | None = 1.0) -> None:
        super().__init__()
        from parking_ml.data.augment import NORMALIZE_MEAN, NORMALIZE_STD

        self.keep = keep
        self.register_buffer("mean", torch.tensor(NORMALIZE_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(NORMALIZE_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = (x * self.std + self.mean) * 255.0
        r, b = v[:, 0:1], v[:, 2:3]
        bg = torch.zeros_like(r)
        free = (r - 150.0) / 10.0
        occ = (b - r - 50.0) / 10.0
        if self.keep is None:
            return torch.cat([bg + 100.0, free * 0 - 100.0, occ * 0 - 100.0], dim=1)
        width = x.shape[-1]
        cols = torch.arange(width, dtype=x.dtype, device=x.device).view(1, 1, 1, -1)
        blank = (cols >= self.keep * width).to(x.dtype) * 1000.0
        return torch.cat([bg, free - blank, occ - blank], dim=1)


def _register(settings: Settings, keep: float | None, tmp: Path, label: str) -> str:
    from parking_ml.inference import PreprocessConfig

    pkg = build_package(
        ColorRule(keep), PreprocessConfig(tile_size=64, overlap=16, min_area_px=5), tmp / label, None, 64
    )
    return registry.log_and_register(pkg.dir, settings, {"dataset_version": DATASET, "rule": label}).version


def test_gate_promotes_only_better_models_and_rollback_restores(world, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from parking_ml.cli import app

    settings = world["settings"].model_copy(update={"model_name": "it-gate"})
    data = world["data"]

    bad = _register(settings, None, tmp_path, "bad")
    d = promote.run_promotion(settings, data=data)
    assert d["promoted"] is False and "below the bar" in d["reason"]
    assert registry.get_alias_version(settings, "champion") is None
    assert registry.get_version(settings, bad).tags["promotion_decision"] == "rejected"

    medium = _register(settings, 0.5, tmp_path, "medium")
    d = promote.run_promotion(settings, data=data)
    assert d["promoted"] is True, d["reason"]
    assert registry.get_alias_version(settings, "champion").version == medium
    medium_f1 = d["challenger_metrics"]["free_f1"]
    assert settings.promotion_min_quality <= medium_f1 < 0.9

    equal = _register(settings, 0.5, tmp_path, "equal")
    d = promote.run_promotion(settings, data=data)
    assert d["promoted"] is False and d["challenger_metrics"]["free_f1"] == pytest.approx(medium_f1)
    assert registry.get_version(settings, equal).tags["promotion_decision"] == "rejected"

    _register(settings, None, tmp_path, "worse")
    assert promote.run_promotion(settings, data=data)["promoted"] is False
    assert registry.get_alias_version(settings, "champion").version == medium

    good = _register(settings, 1.0, tmp_path, "good")
    d = promote.run_promotion(settings, data=data)
    assert d["promoted"] is True, d["reason"]
    assert d["challenger_metrics"]["free_f1"] > medium_f1 + settings.promotion_margin
    champion = registry.get_alias_version(settings, "champion")
    assert champion.version == good and champion.tags["previous_champion"] == medium

    client = MlflowClient(settings.mlflow_tracking_uri)
    exp = client.get_experiment_by_name("it-gate")
    gate_runs = client.search_runs([exp.experiment_id], "tags.run_kind = 'promotion'")
    assert len(gate_runs) == 5
    assert {"challenger_eval.json", "champion_eval.json", "decision.json"} <= {
        a.path for a in client.list_artifacts(gate_runs[0].info.run_id)
    }

    # the CLI reads the same settings from the environment
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    monkeypatch.setenv("PARKING_MODEL_NAME", "it-gate")
    monkeypatch.setenv("PARKING_HOME", str(world["home"]))
    result = CliRunner().invoke(app, ["model", "rollback", "--reason", "bad release"])
    assert result.exit_code == 0, result.output
    assert registry.get_alias_version(settings, "champion").version == medium
    result = CliRunner().invoke(app, ["model", "promote", "--version", good, "--reason", "hotfix verified"])
    assert result.exit_code == 0, result.output
    assert registry.get_alias_version(settings, "champion").version == good
    assert registry.get_version(settings, good).tags["promotion_decision"] == "manual"
    history = registry.champion_history(settings)
    assert [h["kind"] for h in history] == ["gate", "gate", "rollback", "manual"]
    promote.rollback(settings, "again")
    assert registry.get_alias_version(settings, "champion").version == medium
    with pytest.raises(ValueError, match="no previous champion"):
        promote.rollback(settings, "too far")


def test_the_gate_takes_the_training_runs_holdout_score_only_for_the_same_package_holdout_and_code(
    world, trained, monkeypatch
):
    """The final fit stored its holdout score with a stamp; the gate takes that score for the same package
    bytes on the same dataset version scored by the same code, and scores anything else itself: what it
    scores then equals what it took."""
    import dataclasses

    from parking_ml.model import evaluation

    settings = world["settings"].model_copy(update={"model_name": "it-reuse", "promotion_min_quality": 0.0})
    client = MlflowClient(settings.mlflow_tracking_uri)
    source = registry.get_version(world["settings"], trained["model_version"])
    client.create_registered_model("it-reuse")

    def challenger() -> str:
        version = client.create_model_version(
            "it-reuse", source.source, run_id=source.run_id, model_id=source.source.removeprefix("models:/")
        ).version
        registry.set_alias(settings, "challenger", version)
        return version

    first = challenger()
    d = promote.run_promotion(settings, data=world["data"])
    assert d["promoted"] is True, d["reason"]
    assert d["holdout_sources"] == {"challenger": f"training run {source.run_id}"}
    stored = scalar_metrics(d["challenger_metrics"])
    assert stored == pytest.approx(trained["holdout_metrics"])
    exp = client.get_experiment_by_name("it-reuse")
    gate = client.search_runs([exp.experiment_id], "tags.run_kind = 'promotion'")[0]
    assert gate.data.params["challenger_holdout"] == f"training run {source.run_id}"

    # other scoring code: both sides are scored here, and the score equals the one that was taken
    challenger()
    monkeypatch.setattr(evaluation, "scorer_fingerprint", lambda: "another-scorer")
    d = promote.run_promotion(settings, data=world["data"])
    assert d["holdout_sources"] == {"challenger": "scored", "champion": "scored"}
    assert scalar_metrics(d["challenger_metrics"]) == pytest.approx(stored)
    assert scalar_metrics(d["champion_metrics"]) == pytest.approx(stored)
    assert d["promoted"] is False and registry.get_alias_version(settings, "champion").version == first
    monkeypatch.undo()

    # the same code but another holdout (dataset version): scored again
    challenger()
    d = promote.run_promotion(settings, data=dataclasses.replace(world["data"], version="another-dataset"))
    assert d["holdout_sources"] == {"challenger": "scored", "champion": "scored"}


# --- DAGs --------------------------------------------------------------------------------------------


def _dag_env(monkeypatch, settings: Settings, **extra: str) -> None:
    monkeypatch.setenv("PARKING_HOME", str(settings.home))
    monkeypatch.setenv("PARKING_LAKE_URL", settings.lake_url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    monkeypatch.setenv("PARKING_PROFILE", "smoke")
    monkeypatch.setenv("PARKING_MODEL_NAME", settings.model_name)
    monkeypatch.setenv("PARKING_OPTUNA_STORAGE", settings.optuna_storage)
    monkeypatch.setenv("PARKING_THREADS", "1")
    for key, value in extra.items():
        monkeypatch.setenv(key, value)


def test_train_and_promote_dags_run(world, trained, airflow_home, monkeypatch):
    pytest.importorskip("parking_ml.data.processed")
    settings = world["settings"]
    before = registry.get_alias_version(settings, "challenger").version
    # the study for this dataset is complete already: the DAG resumes it and only runs the final fit
    _dag_env(monkeypatch, settings)
    from parking_train import dag as train_dag

    run = train_dag.test()
    assert run.state == "success"
    after = registry.get_alias_version(settings, "challenger")
    assert int(after.version) > int(before)
    assert after.tags["dataset_version"] == DATASET

    _dag_env(monkeypatch, settings, PARKING_PROMOTION_MIN_QUALITY="0.0")
    from parking_promote import dag as promote_dag

    run = promote_dag.test()
    assert run.state == "success"
    assert registry.get_version(settings, after.version).tags["promotion_decision"] == "promoted"
    assert registry.get_alias_version(settings, "champion").version == after.version


def test_the_train_dag_uses_its_profile_trials_and_starting_weights_params(
    world, trained, airflow_home, monkeypatch, capfd
):
    """The environment says the demo profile; the run's params say smoke, one trial more than the stored smoke
    study holds, and (in a first run) a starting-weights file that does not exist."""
    import optuna

    from tests.fakes.dags import new_dag

    settings = world["settings"]
    _dag_env(monkeypatch, settings, PARKING_PROFILE="demo")
    missing = "/nonexistent/parking-start.pt"
    run = new_dag("parking_train").test(run_conf={"profile": "smoke", "init_weights": missing})
    assert run.state == "failed"
    assert f"starting weights file {missing} does not exist" in capfd.readouterr().out

    name = study_name(settings, DATASET, get_profile("smoke"))
    done = len(optuna.load_study(study_name=name, storage=settings.optuna_storage).trials)
    before = registry.get_alias_version(settings, "challenger").version
    run = new_dag("parking_train").test(run_conf={"profile": "smoke", "n_trials": done + 1})
    assert run.state == "success"
    trials = optuna.load_study(study_name=name, storage=settings.optuna_storage).trials
    assert len(trials) == done + 1 and all(t.state.is_finished() for t in trials)
    assert int(registry.get_alias_version(settings, "challenger").version) > int(before)


def test_the_promote_dag_takes_a_margin_or_a_forced_version_with_its_reason(world, airflow_home, monkeypatch, tmp_path):
    from tests.fakes.dags import new_dag

    settings = world["settings"].model_copy(update={"model_name": "it-dag-promote"})
    _dag_env(monkeypatch, settings)
    medium = _register(settings, 0.5, tmp_path, "medium")

    # a forced version: no gate, recorded as `parking-ml model promote` records it
    run = new_dag("parking_promote").test(run_conf={"force_version": int(medium), "reason": "pinned by the test"})
    assert run.state == "success"
    assert registry.get_alias_version(settings, "champion").version == medium
    assert registry.get_version(settings, medium).tags["promotion_decision"] == "manual"
    assert registry.champion_history(settings)[-1] | {"at": 0} == {
        "version": medium, "previous": None, "kind": "manual", "reason": "pinned by the test", "at": 0,
    }  # fmt: skip

    # a better challenger is held back by a margin it cannot beat, then passes the default one
    good = _register(settings, 1.0, tmp_path, "good")
    run = new_dag("parking_promote").test(run_conf={"margin": 0.99})
    assert run.state == "success"
    tags = registry.get_version(settings, good).tags
    assert tags["promotion_decision"] == "rejected" and "is not above the margin 0.99" in tags["promotion_reason"]
    assert registry.get_alias_version(settings, "champion").version == medium

    run = new_dag("parking_promote").test(run_conf={"force_version": int(good)})  # no reason: refused
    assert run.state == "failed" and registry.get_alias_version(settings, "champion").version == medium

    run = new_dag("parking_promote").test()
    assert run.state == "success"
    assert registry.get_alias_version(settings, "champion").version == good
    assert registry.get_version(settings, good).tags["promotion_decision"] == "promoted"


def test_processed_data_loaded_for_training_shares_a_cache_bounded_by_the_settings(world):
    from parking_ml.data.processed import load_processed
    from parking_ml.data.tile_cache import BoundedTileCache

    data = load_processed(world["settings"].model_copy(update={"tile_cache_mb": 3}), DATASET)
    assert isinstance(data.decoded, BoundedTileCache) and data.decoded.max_bytes == 3 * 2**20
    assert len(data.manifest) == len(world["data"].manifest) and data.version == DATASET
