"""The hard set (parking_ml.model.hardset): score a model package, or the shipped pretrained network, per mode.

    nice -n 10 .venv/bin/python bench/hardset.py [--model-dir PKG ...] [--shipped] [--sites 8] [--modes a,b]

``--model-dir`` takes a package folder (model.onnx + preprocess.json, what `download_package` gives); several
may be named (each printed as a column). ``--shipped`` (the default without --model-dir) exports the demo
profile's shipped pretrained weights (parking_ml/weights) to a package first: the "before" numbers. The peer
in the same run is the shipped network, so rows of a trained package read as a change against it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, action="append", default=[], help="a model package folder")
    parser.add_argument("--shipped", action="store_true", help="also score the shipped pretrained network")
    parser.add_argument("--weights", default=None, help="with --shipped: this .pt instead of the profile's")
    parser.add_argument("--sites", type=int, default=None, help="sites per mode (default: the hard set's)")
    parser.add_argument("--modes", default=None, help="comma-separated modes (default: all)")
    args = parser.parse_args()

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from parking_ml.config import load_settings
    from parking_ml.model.hardset import HARD_SET_SITES, format_table, score_package, shipped_package
    from parking_ml.synth import HARD_MODES

    settings = load_settings()
    modes = tuple(args.modes.split(",")) if args.modes else HARD_MODES
    sites = args.sites or HARD_SET_SITES
    packages: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="parking-hardset-") as tmp:
        if args.shipped or not args.model_dir:
            packages["shipped"] = shipped_package(settings, Path(tmp) / "shipped", weights=args.weights)
        for i, d in enumerate(args.model_dir):
            packages[d.name if d.name not in packages else f"{d.name}-{i}"] = d
        scores = {}
        t0 = time.perf_counter()
        for name, pkg in packages.items():
            scores[name] = score_package(pkg, modes, settings.threads, sites=sites)
        secs = time.perf_counter() - t0
    load = os.getloadavg()[0]
    print(f"hard set: {sites} sites x 4 tiles of 256 px per mode, scored in {secs:.0f} s (load {load:.2f})")
    print(format_table(scores))
    if "shipped" in scores and len(scores) > 1:
        print("\nfree IoU against the shipped network (same tiles):")
        for name in (n for n in scores if n != "shipped"):
            for mode in modes:
                a, b = scores[name][mode]["iou_free"], scores["shipped"][mode]["iou_free"]
                print(f"  {mode:<14} {name}: {a:.3f} / {b:.3f} = {a / b if b else float('nan'):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
