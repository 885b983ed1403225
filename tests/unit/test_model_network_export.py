"""Network factory, ONNX export parity (dynamic shapes), local encoder weights, model packages."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from parking_ml.model.export import ExportParityError, export_onnx
from parking_ml.model.network import WeightsError, build_model, load_network_weights
from parking_ml.model.package import build_package, download_package


@pytest.mark.parametrize("arch", ["unet", "fpn", "deeplabv3plus"])
def test_architectures_output_logits_of_input_size(arch):
    model = build_model(arch, "resnet18", decoder_channels=(16, 16, 16, 8, 8) if arch == "unet" else 32).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 96))
    assert out.shape == (1, 3, 64, 96)


def test_unknown_arch_and_bad_decoder_are_refused():
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("segformer")
    with pytest.raises(ValueError, match=r"one width per encoder stage \(5\)"):
        build_model("unet", decoder_channels=(16, 8))
    with pytest.raises(ValueError, match=r"one width per encoder stage \(4\)"):
        build_model("unet", decoder_channels=(16, 16, 16, 8, 8), encoder_depth=4)
    with pytest.raises(ValueError, match="encoder_depth must be 3, 4 or 5"):
        build_model("unet", encoder_depth=6)


def test_shallower_encoder_skips_its_deepest_stage_and_exports(tmp_path):
    """encoder_depth 4: stride 16, no gradient reaches the unused stage, and the export keeps parity on
    sizes that are multiples of 16 but not 32."""
    torch.manual_seed(0)
    model = build_model("unet", "mobilenet_v2", decoder_channels=(32, 16, 16, 8), encoder_depth=4)
    out = model(torch.randn(2, 3, 48, 80))
    assert out.shape == (2, 3, 48, 80)
    out.square().mean().backward()
    with_grad = {n for n, p in model.encoder.named_parameters() if p.grad is not None}
    unused = {n for n, p in model.encoder.named_parameters() if p.grad is None}
    # MobileNetV2's stage 5 (features 14-18: the 160/320-channel blocks and the 1280-channel conv) is not run
    stage5 = tuple(f"features.{i}." for i in range(14, 19))
    assert unused and all(n.startswith(stage5) for n in unused)
    assert "features.13.conv.0.0.weight" in with_grad
    diff = export_onnx(model.eval(), tmp_path / "m.onnx", tile_size=64, check_shapes=[(1, 3, 48, 80)])
    assert 0 <= diff < 1e-3


def test_onnx_export_parity_on_dynamic_shapes(tmp_path):
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", decoder_channels=(16, 16, 16, 8, 8))
    path = tmp_path / "m.onnx"
    diff = export_onnx(model, path, tile_size=64, check_shapes=[(1, 3, 64, 64), (2, 3, 96, 128)])
    assert 0 <= diff < 1e-3
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 3, 160, 96)).astype(np.float32)
    got = session.run(None, {"image": x})[0]
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    assert got.shape == (3, 3, 160, 96)
    assert np.max(np.abs(got - expected)) < 1e-3


def test_export_refuses_when_parity_fails(tmp_path):
    path = tmp_path / "m.onnx"
    with pytest.raises(ExportParityError, match="not written"):
        export_onnx(build_model(decoder_channels=(16, 16, 16, 8, 8)), path, tile_size=64, tolerance=-1.0)
    assert not path.exists() and not list(tmp_path.iterdir())


def test_local_encoder_weights_load_and_mismatch_is_clear(tmp_path):
    source = build_model("unet", "resnet18", decoder_channels=(16, 16, 16, 8, 8))
    good = tmp_path / "resnet18.pt"
    torch.save(source.encoder.state_dict(), good)
    loaded = build_model("unet", "resnet18", encoder_weights=str(good), decoder_channels=(16, 16, 16, 8, 8))
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(loaded.encoder.state_dict()[key], value)
    other = tmp_path / "resnet34.pt"
    torch.save(build_model("unet", "resnet34").encoder.state_dict(), other)
    with pytest.raises(WeightsError, match="do not match encoder"):
        build_model("unet", "resnet18", encoder_weights=str(other))
    with pytest.raises(WeightsError, match="does not exist"):
        build_model("unet", "resnet18", encoder_weights=str(tmp_path / "missing.pt"))


def test_network_weights_start_a_fit_and_mismatch_is_clear(tmp_path):
    from parking_ml.config import Settings
    from parking_ml.model.profiles import get_profile
    from parking_ml.model.recipe import default_params, new_model

    profile = get_profile("smoke")
    params = default_params(profile)
    source = new_model(params, profile, Settings(home=tmp_path))
    saved = tmp_path / "network.pt"
    torch.save(source.state_dict(), saved)
    fresh = new_model(params, profile, Settings(home=tmp_path))
    assert not torch.equal(
        fresh.decoder.state_dict()["blocks.0.conv1.0.weight"], source.decoder.state_dict()["blocks.0.conv1.0.weight"]
    )
    started = new_model(params, profile, Settings(home=tmp_path, init_weights=str(saved)))
    for key, value in source.state_dict().items():  # encoder, decoder and head alike
        assert torch.equal(started.state_dict()[key], value), key
    wider = build_model("unet", "resnet18", decoder_channels=(32, 16, 16, 8, 8))
    with pytest.raises(WeightsError, match=r"do not match network Unet: 0 missing .* [1-9]\d* with other shapes"):
        load_network_weights(wider, saved)
    with pytest.raises(WeightsError, match="does not exist"):
        new_model(params, profile, Settings(home=tmp_path, init_weights=str(tmp_path / "none.pt")))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"cannot read network weights .*junk\.pt"):
        load_network_weights(wider, tmp_path / "junk.pt")


def test_a_network_started_from_trained_weights_fits_at_the_profiles_fraction_of_the_learning_rates(tmp_path):
    import dataclasses

    from parking_ml.config import Settings
    from parking_ml.model.profiles import get_profile
    from parking_ml.model.recipe import default_params, fit_config, lr_scale_for, new_model

    profile = dataclasses.replace(get_profile("smoke"), pretrained_lr_scale=0.25)
    params = {**default_params(profile), "optimizer": "muon", "muon_lr": 0.08}
    fresh = new_model(params, profile, Settings(home=tmp_path))
    assert lr_scale_for(fresh, profile) == 1.0
    saved = tmp_path / "network.pt"
    torch.save(fresh.state_dict(), saved)
    started = new_model(params, profile, Settings(home=tmp_path, init_weights=str(saved)))
    assert lr_scale_for(started, profile) == 0.25
    full = fit_config(params, profile, 1, "free_f1")
    scaled = fit_config(params, profile, 1, "free_f1", lr_scale=lr_scale_for(started, profile))
    assert (scaled.lr, scaled.muon_lr) == pytest.approx((full.lr * 0.25, 0.02))
    assert scaled.weight_decay == full.weight_decay


@pytest.mark.parametrize("cpu_bf16", ["on", "off"])
def test_the_demo_starts_from_the_shipped_weights_of_its_decoder(tmp_path, caplog, cpu_bf16):
    """A bf16 CPU (or a GPU) trains the demo's decoder, a CPU without bf16 its narrower fp32 one: each starts
    from its own shipped file, every tensor of it."""
    import dataclasses

    from parking_ml.config import Settings
    from parking_ml.model.network import WeightsMismatchError
    from parking_ml.model.profiles import get_profile
    from parking_ml.model.recipe import default_params, init_weights_path, new_model

    demo = get_profile("demo")
    params = default_params(demo)
    settings = Settings(home=tmp_path, cpu_bf16=cpu_bf16)
    shipped = init_weights_path(demo, settings)
    expected = demo.init_weights if cpu_bf16 == "on" else demo.fp32_cpu_init_weights
    assert shipped is not None and shipped.is_file() and shipped.name == expected
    saved = torch.load(shipped, map_location="cpu", weights_only=True)
    # stored in float16, loaded as float32
    started = new_model(params, demo, settings)
    for key, value in started.state_dict().items():
        assert torch.equal(value, saved[key].to(value.dtype)), key
    key = "segmentation_head.0.weight"
    assert started.state_dict()[key].dtype == torch.float32
    # "none": a new network
    new = new_model(params, demo, settings.model_copy(update={"init_weights": "none"}))
    assert not torch.equal(new.state_dict()[key], saved[key].float())
    # the other decoder's file: a profile file that does not fit starts a new network, with a warning (the
    # network changed without scripts/pretrain_demo.py); a file the user names must fit
    other = init_weights_path(demo, settings.model_copy(update={"cpu_bf16": "off" if cpu_bf16 == "on" else "on"}))
    assert other is not None and other != shipped
    swapped = dataclasses.replace(demo, init_weights=other.name, fp32_cpu_init_weights=other.name)
    with caplog.at_level("WARNING"):
        new_model(params, swapped, settings)
    assert "do not fit the network this machine trains" in caplog.text
    with pytest.raises(WeightsMismatchError, match="do not match network"):
        new_model(params, demo, settings.model_copy(update={"init_weights": str(other)}))


def test_build_package_and_local_download(tmp_path):
    from parking_ml.inference import OnnxSegmenter, PreprocessConfig

    model = build_model("unet", "resnet18", decoder_channels=(16, 16, 16, 8, 8))
    config = PreprocessConfig(tile_size=64, overlap=16, min_area_px=5)
    ref = pd.DataFrame({"brightness": [0.1, 0.2]})
    info = build_package(model, config, tmp_path / "pkg", ref, tile_size=64)
    assert info.parity_max_abs_diff < 1e-3
    assert sorted(p.name for p in info.dir.iterdir()) == [
        "model.onnx",
        "preprocess.json",
        "reference_features.parquet",
    ]
    assert json.loads((info.dir / "preprocess.json").read_text())["tile_size"] == 64
    # a package nested like MLflow's pyfunc layout comes back flat
    nested = tmp_path / "mlflow" / "model" / "artifacts"
    nested.mkdir(parents=True)
    for p in info.dir.iterdir():
        (nested / p.name).write_bytes(p.read_bytes())
    got = download_package(str(tmp_path / "mlflow"), tmp_path / "dl")
    assert (got / "model.onnx").is_file() and (got / "preprocess.json").is_file()
    seg = OnnxSegmenter.from_dir(got, threads=1)
    probs = seg.predict_probs(np.zeros((100, 70, 3), np.uint8))
    assert probs.shape == (3, 100, 70)
