"""Pure parts of tuning and promotion: site-grouped folds, parameters, the gate's decision rule."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from parking_ml.config import Settings
from parking_ml.data.processed import cv_folds, fold_split, holdout_rows
from parking_ml.inference import TTA_VIEWS, PreprocessConfig
from parking_ml.model.profiles import PROFILES, get_profile
from parking_ml.model.promote import decide
from parking_ml.model.recipe import default_params
from parking_ml.model.tune import study_name


def _manifest() -> pd.DataFrame:
    rows = []
    for s, fold in [("a", 0), ("b", 1), ("c", 2), ("d", 0), ("e", 1), ("h", -1)]:
        for t in range(3):
            rows.append({"tile_id": f"{s}{t}", "site": s, "fold": fold, "split": "holdout" if fold < 0 else "train"})
    return pd.DataFrame(rows)


def test_folds_never_share_a_site_and_never_touch_the_holdout():
    m = _manifest()
    assert cv_folds(m) == [0, 1, 2]
    for fold in cv_folds(m):
        train, val = fold_split(m, fold)
        assert not set(train["site"]) & set(val["site"])
        assert "h" not in set(train["site"]) | set(val["site"])
        assert len(train) + len(val) == len(m) - len(holdout_rows(m))


def test_a_site_split_across_folds_is_refused():
    m = _manifest()
    m.loc[m["tile_id"] == "a0", "fold"] = 1
    with pytest.raises(ValueError, match="shares sites"):
        fold_split(m, 1)
    with pytest.raises(ValueError, match="at least 2"):
        cv_folds(m[m["fold"] <= 0])


def test_profiles_have_consistent_defaults():
    for name, profile in PROFILES.items():
        params = default_params(profile)
        assert params["encoder"] in profile.space.encoders or profile.seed_params, name
        assert profile.tile_size % 32 == 0
        assert profile.tta in TTA_VIEWS, name
        for decoder in (profile.decoder_channels, profile.fp32_cpu_decoder_channels):
            if decoder is not None and profile.arch == "unet":
                assert len(decoder) == profile.encoder_depth, name
        if profile.seed_params:
            # the seed trial is a point of the space TPE searches, so the two tell one story
            space, seed = profile.space, profile.seed_params
            for key in ("lr", "weight_decay", "free_weight", "aug_strength"):
                low, high = getattr(space, key)
                assert low <= seed[key] <= high, (name, key)
            assert seed["encoder"] in space.encoders and seed["loss"] in space.losses, name
            assert seed["batch_size"] in space.batch_sizes, name
            assert seed.get("optimizer", "adamw") in space.optimizers, name
            if seed.get("optimizer") == "muon":
                assert space.muon_lr[0] <= seed["muon_lr"] <= space.muon_lr[1], name
    with pytest.raises(ValueError, match="PARKING_PROFILE"):
        get_profile("huge")


def _settings(**kw) -> Settings:
    return Settings(promotion_margin=0.01, promotion_tolerance=0.02, promotion_min_quality=0.5, **kw)


def test_first_model_needs_the_minimum_quality():
    assert decide({"free_f1": 0.49}, None, _settings())[0] is False
    assert decide({"free_f1": 0.5}, None, _settings())[0] is True


def test_challenger_must_beat_the_champion_by_the_margin():
    champ = {"free_f1": 0.80, "free_count_mae": 1.0, "iou_occupied": 0.7}
    assert decide({**champ, "free_f1": 0.79}, champ, _settings())[0] is False  # worse
    assert decide({**champ, "free_f1": 0.805}, champ, _settings())[0] is False  # within the margin
    assert decide({**champ, "free_f1": 0.80}, champ, _settings())[0] is False  # equal
    ok, reason = decide({**champ, "free_f1": 0.82}, champ, _settings())
    assert ok and "beats" in reason


def test_guard_metrics_block_a_regression():
    champ = {"free_f1": 0.80, "free_count_mae": 1.0, "iou_occupied": 0.7}
    better = {"free_f1": 0.85, "free_count_mae": 1.01, "iou_occupied": 0.69}
    assert decide(better, champ, _settings())[0] is True  # small wobble within tolerance
    ok, reason = decide({**better, "free_count_mae": 1.5}, champ, _settings())
    assert not ok and "free_count_mae" in reason
    ok, reason = decide({**better, "iou_occupied": 0.6}, champ, _settings())
    assert not ok and "iou_occupied" in reason
    # the primary metric is configurable
    assert decide({"iou_free": 0.9}, {"iou_free": 0.7}, _settings(objective_metric="iou_free"))[0] is True


def test_a_holdout_stamp_names_the_package_bytes_the_holdout_and_the_scoring_code(tmp_path, monkeypatch):
    """The gate takes a stored holdout score only under an equal stamp: any byte of the network or its
    preprocess.json, another dataset version, or another scoring library must change it."""
    import importlib.metadata

    from parking_ml.model import evaluation

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "model.onnx").write_bytes(b"\x08\x07network")
    (pkg / "preprocess.json").write_text('{"tile_size": 256}')
    first = evaluation.holdout_stamp(pkg, "v1")
    assert first == evaluation.holdout_stamp(pkg, "v1")
    assert set(first) == {"dataset_version", "package_sha256", "scorer"}
    assert evaluation.holdout_stamp(pkg, "v2") != first
    # files beside the two (the drift reference) do not change what the package predicts
    (pkg / "reference_features.parquet").write_bytes(b"anything")
    assert evaluation.holdout_stamp(pkg, "v1") == first
    (pkg / "preprocess.json").write_text('{"tile_size": 512}')
    assert evaluation.holdout_stamp(pkg, "v1")["package_sha256"] != first["package_sha256"]
    (pkg / "preprocess.json").write_text('{"tile_size": 256}')
    (pkg / "model.onnx").write_bytes(b"\x08\x07netwurk")
    assert evaluation.holdout_stamp(pkg, "v1")["package_sha256"] != first["package_sha256"]
    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda d: "0.0.1" if d == "onnxruntime" else real_version(d))
    assert evaluation.scorer_fingerprint() != first["scorer"]


def test_speck_filter_is_a_tenth_of_the_median_space_at_the_model_gsd(tmp_path):
    import cv2
    import numpy as np

    from parking_ml.model.recipe import preprocess_config

    (tmp_path / "tiles").mkdir()
    (tmp_path / "masks").mkdir()
    mask = np.zeros((64, 64), np.uint8)
    mask[2:12, 2:22] = 1  # 200 px
    mask[20:30, 2:22] = 1  # 200 px
    mask[40:44, 2:12] = 1  # 40 px: a space cut by the tile edge
    cv2.imwrite(str(tmp_path / "tiles" / "t0.png"), np.zeros((64, 64, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "masks" / "t0.png"), mask)
    rows = pd.DataFrame([{"tile_id": "t0", "gsd": 0.1}])
    profile = get_profile("demo")  # works at 0.2 m/px: areas shrink 4x there, the median is 50 px
    config = preprocess_config(profile, Settings(), rows, tmp_path)
    assert config.gsd == 0.2 and config.resample
    assert config.min_area_px == 5
    # at the image's own 0.1 m/px the filter is 20 px: the 40-px partial space survives it
    assert config.min_area_for(0.1) == 20
    # the profile's growth of spaces goes into the package; a profile that names no probabilities gets the
    # package default
    assert (config.grow_px, config.grow_prob) == (profile.grow_px, profile.grow_prob)
    plain = dataclasses.replace(profile, grow_prob=None, grow_px=2.0)
    config = preprocess_config(plain, Settings(), rows, tmp_path)
    assert (config.grow_px, config.grow_prob) == (2.0, PreprocessConfig().grow_prob)


def test_cv_objective_is_the_profile_choice_else_the_gate_metric_and_typos_are_refused():
    from parking_ml.model.recipe import cv_objective

    assert cv_objective(get_profile("demo"), Settings()) == "free_ap"
    assert cv_objective(get_profile("smoke"), Settings(objective_metric="iou_free")) == "iou_free"
    with pytest.raises(ValueError, match="cv_objective 'free_apx'"):
        cv_objective(dataclasses.replace(get_profile("smoke"), cv_objective="free_apx"), Settings())
    with pytest.raises(ValueError, match="not a metric to maximise"):
        cv_objective(dataclasses.replace(get_profile("smoke"), cv_objective="free_count_mae"), Settings())


def test_a_study_is_resumed_only_under_the_same_objective(tmp_path):
    smoke = get_profile("smoke")  # no cv_objective of its own: the gate's metric
    by_f1 = study_name(Settings(home=tmp_path, objective_metric="free_f1"), "v1", smoke)
    by_iou = study_name(Settings(home=tmp_path, objective_metric="iou_free"), "v1", smoke)
    assert by_f1.endswith("-v1-smoke-free_f1-new") and by_iou.endswith("-v1-smoke-iou_free-new")
    # the demo's folds rank on free_ap whatever the gate compares, so its study does not change with it
    demo = get_profile("demo")
    shipped = study_name(Settings(home=tmp_path, objective_metric="iou_free"), "v1", demo)
    assert "-demo-free_ap-demo-synthetic-" in shipped


def test_a_study_is_resumed_only_from_the_same_starting_weights(tmp_path):
    from parking_ml.model.network import WeightsError

    demo = get_profile("demo")
    weights = tmp_path / "start.pt"
    weights.write_bytes(b"one")
    first = study_name(Settings(home=tmp_path, init_weights=str(weights)), "v1", demo)
    assert first == study_name(Settings(home=tmp_path, init_weights=str(weights)), "v1", demo)
    weights.write_bytes(b"two")  # retrained under the same name: another study
    second = study_name(Settings(home=tmp_path, init_weights=str(weights)), "v1", demo)
    assert second != first and second.startswith("parking-spaces-v1-demo-free_ap-start-")
    assert study_name(Settings(home=tmp_path, init_weights="none"), "v1", demo).endswith("-demo-free_ap-new")
    assert study_name(Settings(home=tmp_path), "v1", demo) not in (first, second)
    with pytest.raises(WeightsError, match=r"missing\.pt does not exist.*PARKING_INIT_WEIGHTS"):
        study_name(Settings(home=tmp_path, init_weights=str(tmp_path / "missing.pt")), "v1", demo)


def test_a_cpu_without_bf16_trains_the_profiles_fp32_decoder(make_settings):
    from parking_ml.model.profiles import decoder_for
    from parking_ml.model.recipe import decoder_channels, new_model

    demo = get_profile("demo")
    assert demo.fp32_cpu_decoder_channels is not None
    assert decoder_for(demo, fp32_cpu=True) == demo.fp32_cpu_decoder_channels != demo.decoder_channels
    assert decoder_for(demo, fp32_cpu=False) == demo.decoder_channels
    # a profile without an fp32 variant trains its one decoder everywhere
    smoke = get_profile("smoke")
    assert decoder_for(smoke, fp32_cpu=True) == decoder_for(smoke, fp32_cpu=False) == smoke.decoder_channels
    # the settings decide: bf16 forced off on the CPU is the fp32 machine, forced on the bf16 one
    fp32 = make_settings(device="cpu", cpu_bf16="off")
    assert decoder_channels(demo, fp32) == demo.fp32_cpu_decoder_channels
    assert decoder_channels(demo, make_settings(device="cpu", cpu_bf16="on")) == demo.decoder_channels
    # and the network built is that decoder's: its last block has the last width
    model = new_model(dict(demo.seed_params), demo, fp32)
    widths = [block.conv2[0].out_channels for block in model.decoder.blocks]
    assert tuple(widths) == demo.fp32_cpu_decoder_channels
