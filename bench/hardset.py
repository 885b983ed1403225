"""The hard set (parking_ml.model.hardset): score a model package, or the shipped pretrained network, per mode.

    nice -n 10 .venv/bin/python bench/hardset.py [--model-dir PKG ...] [--shipped] [--weights [NAME=]FILE ...]
        [--sites 8] [--modes a,b] [--styles default,winter,dusk,sensor] [--style-sites 24] [--style-seed 99]

``--model-dir`` takes a package folder (model.onnx + preprocess.json, what `download_package` gives); several
may be named (each printed as a column). ``--shipped`` (the default without --model-dir or --weights) exports
the demo profile's shipped pretrained weights (parking_ml/weights) to a package first: the "before" numbers.
``--weights`` exports a state dict that scripts/pretrain_demo.py wrote (its JSON's ``cpu_bf16`` picks the
decoder it fits), each a column: a continued file beside the one it started from. The peer in the same run is
the first of these, so rows of the others read as a change against it. ``--styles`` adds rows of fresh lots of
each style (no hard modes; pass 0, 512 px cut into four 256-px tiles, scored at each lot's true gsd).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def weights_settings(settings, path: Path):
    """Settings whose network is the decoder ``path`` was trained as (its JSON's cpu_bf16), starting from it."""
    beside = path.with_suffix(".json")
    recipe = json.loads(beside.read_text()) if beside.is_file() else {}
    update = {"init_weights": str(path)}
    if "cpu_bf16" in recipe:
        update["cpu_bf16"] = "on" if recipe["cpu_bf16"] else "off"
    return settings.model_copy(update=update)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, action="append", default=[], help="a model package folder")
    parser.add_argument("--shipped", action="store_true", help="also score the shipped pretrained network")
    parser.add_argument(
        "--weights", action="append", default=[], help="[NAME=]FILE: a state dict pretrain_demo.py wrote (repeatable)"
    )
    parser.add_argument("--sites", type=int, default=None, help="sites per mode (default: the hard set's)")
    parser.add_argument("--modes", default=None, help="comma-separated modes (default: all; 'none' for no modes)")
    parser.add_argument("--styles", default="", help="comma-separated styles of fresh lots to score too")
    parser.add_argument("--style-sites", type=int, default=24, help="fresh lots per style")
    parser.add_argument("--style-seed", type=int, default=99, help="generator seed of the fresh lots")
    args = parser.parse_args()

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from parking_ml.config import load_settings
    from parking_ml.inference import OnnxSegmenter
    from parking_ml.model.hardset import (
        HARD_SET_SITES,
        format_table,
        hard_set_tiles,
        score_tiles,
        shipped_package,
        style_tiles,
    )
    from parking_ml.synth import HARD_MODES

    settings = load_settings()
    modes = () if args.modes == "none" else tuple(args.modes.split(",")) if args.modes else HARD_MODES
    styles = tuple(s for s in args.styles.split(",") if s)
    sites = args.sites or HARD_SET_SITES
    t0 = time.perf_counter()
    sets = {mode: hard_set_tiles(mode, sites) for mode in modes}
    sets.update({f"{s} lots": style_tiles(s, args.style_seed, args.style_sites) for s in styles})
    packages: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="parking-hardset-") as tmp:
        if args.shipped or not (args.model_dir or args.weights):
            packages["shipped"] = shipped_package(settings, Path(tmp) / "shipped")
        for i, spec in enumerate(args.weights):
            name, _, path = spec.rpartition("=")
            path = Path(path)
            name = name or path.stem
            packages[name] = shipped_package(weights_settings(settings, path), Path(tmp) / f"w{i}", weights=path)
        for i, d in enumerate(args.model_dir):
            packages[d.name if d.name not in packages else f"{d.name}-{i}"] = d
        scores = {}
        for name, pkg in packages.items():
            segmenter = OnnxSegmenter.from_dir(pkg, settings.threads)
            scores[name] = {key: score_tiles(segmenter, tiles) for key, tiles in sets.items()}
        secs = time.perf_counter() - t0
    load = os.getloadavg()[0]
    print(f"hard set: {sites} sites x 4 tiles of 256 px per mode, scored in {secs:.0f} s (load {load:.2f})")
    if styles:
        print(f"fresh lots: {args.style_sites} of seed {args.style_seed} per style, no hard modes")
    print(format_table(scores))
    peer = next(iter(scores), None)
    if len(scores) > 1:
        print(f"\nfree IoU against {peer} (same tiles):")
        for name in (n for n in scores if n != peer):
            for key in sets:
                a, b = scores[name][key]["iou_free"], scores[peer][key]["iou_free"]
                print(f"  {key:<14} {name}: {a:.3f} / {b:.3f} = {a / b if b else float('nan'):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
