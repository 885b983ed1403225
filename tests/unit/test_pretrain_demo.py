"""scripts/pretrain_demo.py --init: a continued file's recipe keeps its chain; a bad --init fails before any work."""

from __future__ import annotations

import subprocess
import sys

from tests.fakes import REPO


def _recipe(steps: int, seed: int) -> dict:
    return {"profile": "demo", "lots": 1024, "lot_seed": seed, "steps": steps, "fresh_lots_seed_99_iou_free": 0.86}


def test_a_continued_file_adds_its_steps_to_the_whole_chain(pretrain_demo):
    first = _recipe(24765, 1001)
    second = pretrain_demo.continued_recipe(_recipe(17814, 1002), "demo-synthetic-fp32.pt", first, 0.5)
    assert (second["steps"], second["steps_total"], second["lr_scale"]) == (17814, 24765 + 17814, 0.5)
    # the first file's recipe survives whole under init
    assert second["init"] == {"file": "demo-synthetic-fp32.pt", **first}
    third = pretrain_demo.continued_recipe(_recipe(1000, 1003), "b.pt", second, 0.25)
    # the chain's total, not only the previous fit's own steps
    assert third["steps_total"] == 24765 + 17814 + 1000
    assert third["init"]["init"]["lot_seed"] == 1001 and third["init"]["lot_seed"] == 1002


def test_a_file_without_its_json_counts_only_the_new_steps(pretrain_demo):
    recipe = pretrain_demo.continued_recipe(_recipe(500, 1002), "user.pt", {}, 1.0)
    assert recipe["steps_total"] == 500 and recipe["init"] == {"file": "user.pt"}


def test_a_missing_init_file_is_refused_with_its_name(tmp_path):
    missing = tmp_path / "nope.pt"
    out = tmp_path / "out.pt"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "pretrain_demo.py"), "--init", str(missing), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert str(missing) in proc.stderr and "no such file" in proc.stderr
    assert not out.exists()


def test_the_held_out_style_is_refused_before_any_work(tmp_path):
    out = tmp_path / "out.pt"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "pretrain_demo.py"), "--styles", "default,pavers", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "never the held-out pavers" in proc.stderr
    assert not out.exists()
