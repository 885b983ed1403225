"""bench/train.py's peer is the previous recipe on every machine: its own network, scale and crops."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from parking_ml.model.profiles import decoder_for, get_profile


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_train", Path(__file__).parents[2] / "bench" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("fp32_cpu", [True, False])
def test_the_peer_trains_its_own_decoder_on_every_machine(bench, fp32_cpu):
    """The demo names a narrow decoder for fp32 CPUs; the peer must not inherit it (on an AVX2 CPU it had, and
    its 5-stage network then refused the 4 widths)."""
    demo = get_profile("demo")
    assert decoder_for(demo, fp32_cpu) != bench.PEER_DECODER
    peer = bench.peer_profile(demo, steps=1000)
    assert decoder_for(peer, fp32_cpu) == bench.PEER_DECODER
    assert len(bench.PEER_DECODER) == peer.encoder_depth == 5
    assert (peer.model_gsd, peer.crop_size, peer.gap_weight) == (None, 160, 1.0)
    assert peer.final_epochs * peer.steps_per_epoch >= 1000
