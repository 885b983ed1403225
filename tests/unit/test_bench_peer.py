"""bench/train.py's peer is the previous recipe on every machine: its own network, scale and crops."""

from __future__ import annotations

import pytest

from parking_ml.model.profiles import decoder_for, get_profile


@pytest.mark.parametrize("fp32_cpu", [True, False])
def test_the_peer_trains_its_own_decoder_on_every_machine(bench_train, fp32_cpu):
    """The demo names a narrow decoder for fp32 CPUs; the peer must not inherit it (on an fp32 CPU it had, and
    its 5-stage network then refused the 4 widths)."""
    demo = get_profile("demo")
    assert decoder_for(demo, fp32_cpu) != bench_train.PEER_DECODER
    peer = bench_train.peer_profile(demo, steps=1000)
    assert decoder_for(peer, fp32_cpu) == bench_train.PEER_DECODER
    assert len(bench_train.PEER_DECODER) == peer.encoder_depth == 5
    assert (peer.model_gsd, peer.crop_size, peer.gap_weight) == (None, 160, 1.0)
    # a new network, as the previous recipe started from
    assert peer.init_weights is None and peer.fp32_cpu_init_weights is None
    assert peer.final_epochs * peer.steps_per_epoch >= 1000


def test_the_peer_keeps_the_previous_recipes_optimiser(bench_train):
    ours = dict(get_profile("demo").seed_params)
    assert ours["optimizer"] == "muon"
    peer = bench_train.peer_params(ours)
    assert (peer["encoder"], peer["loss"], peer["optimizer"]) == ("resnet18", "ce+dice", "adamw")
    assert "muon_lr" not in peer and peer["lr"] == ours["lr"]
