"""Pretrain the demo profile's network on synthetic lots: the weights `demo` starts its folds and final fit from.

    nice -n 10 .venv/bin/python scripts/pretrain_demo.py [--lots 384] [--seed 1001] [--seconds 1200] [--out FILE]
        [--styles default,winter,dusk,sensor] [--hard-rate 0.08] [--threads 1]

On 2 CPU cores the demo's 10 minutes buy ~2,000 training steps, and free IoU still climbs with steps (a 300-s fit
0.764, a 1,500-s fit of 8,355 steps 0.839 on the same 96 fresh lots): a 12-30 m lot needs more steps than a
10-minute budget holds. This spends them once, by hand: it generates ``--lots`` lots of generator seed ``--seed``
(not a seed the demo (7), bench/train.py (7 and its fresh lots' 99) or the tests use, so no lot they score was
seen here), ingests and preprocesses them in a temporary PARKING_HOME, fits the demo network with the profile's
seed parameters on all of them for ``--seconds`` of wall time (no tuning), and writes its state dict in float16
(half the size; loading casts it back) with a JSON beside it: the recipe, the steps it got, the git commit and
its free IoU on 24 fresh lots of seed 99. Rerun it whenever the demo network's shape changes (the unit tests
load the files into the profile's networks and fail when one no longer fits).

The demo trains one decoder on a bf16 CPU or a GPU and a narrower one in fp32 on a CPU without bf16 hardware
(profiles.decoder_for), and ships a file for each (TrainProfile.init_weights, fp32_cpu_init_weights). By default
this writes the file for the decoder this machine trains; ``--cpu-bf16 off`` makes the fp32 one on any CPU.

``--init FILE`` continues a file instead of starting new (a slow machine adds its steps to a fast one's, and
other ``--seed`` lots add variety), usually at ``--lr-scale`` below 1: a restart at the full rates first undoes
part of what the file knew.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lots", type=int, default=384, help="synthetic lots of 512 px, one image each")
    parser.add_argument("--seed", type=int, default=1001, help="generator seed of the lots")
    parser.add_argument("--fit-seed", type=int, default=5, help="seed of the network's init and the crops")
    parser.add_argument("--seconds", type=float, default=1200.0, help="wall-clock budget of the fit")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs of the profile's steps_per_epoch (default: the profile's final_epochs); the fit ends at "
        "whichever of these and --seconds comes first, so raise it where a fast machine would stop early",
    )
    parser.add_argument(
        "--cpu-bf16",
        choices=("auto", "on", "off"),
        default="auto",
        help="as PARKING_CPU_BF16: off trains (and writes the file of) the fp32 CPU decoder",
    )
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        help="continue from this state dict (e.g. the shipped file, with more or other lots) instead of a new "
        "network; its JSON's recipe is kept under 'init' and 'steps_total' adds the steps",
    )
    parser.add_argument(
        "--lr-scale",
        type=float,
        default=1.0,
        help="both peak learning rates times this (a continued network keeps more of what it knows at less)",
    )
    parser.add_argument(
        "--styles",
        default="default",
        help="comma-separated styles of the lots, each site drawing one (repeat a name to weight it), e.g. "
        "default,winter,dusk,sensor; the held-out styles (pavers) are refused: they measure fine-tuning on unseen "
        "imagery",
    )
    parser.add_argument(
        "--hard-rate",
        type=float,
        default=None,
        help="share of sites per hard mode (parking_ml.synth.hard; default its HARD_RATE), e.g. 0.08",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch and onnxruntime threads (default: torch's own and the settings' threads)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="state-dict file to write (default: the file the demo profile names for the decoder this machine "
        "trains, under parking_ml/weights/)",
    )
    args = parser.parse_args()
    styles = tuple(x.strip() for x in args.styles.split(",") if x.strip())
    init_recipe: dict = {}
    if args.init is not None:
        if not args.init.is_file():
            parser.error(f"--init {args.init}: no such file (give a state dict this script wrote)")
        beside = args.init.with_suffix(".json")
        # read before the fit: --out may be the same file, replaced at the end
        init_recipe = json.loads(beside.read_text()) if beside.is_file() else {}

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import torch

    from parking_ml.config import Settings
    from parking_ml.data.ingest import ingest
    from parking_ml.data.preprocess import TilingConfig, preprocess
    from parking_ml.data.processed import load_processed
    from parking_ml.lake import Lake
    from parking_ml.logs import configure_logging
    from parking_ml.model.final_fit import git_sha
    from parking_ml.model.profiles import get_profile, init_weights_for
    from parking_ml.model.recipe import (
        WEIGHTS_DIR,
        decoder_channels,
        final_fit_loader,
        fit_config,
        new_model,
        trains_fp32_on_cpu,
    )
    from parking_ml.model.train import fit, resolve_device, seed_everything, use_cpu_bf16
    from parking_ml.synth import HELD_OUT_STYLES, STYLES, generate_dataset
    from parking_ml.synth.hard import HARD_RATE

    if not styles or any(x not in STYLES for x in styles):
        held = ", ".join(HELD_OUT_STYLES)
        parser.error(f"--styles {args.styles}: choose from {', '.join(STYLES)} (never the held-out {held})")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    configure_logging("WARNING", json_lines=False)
    profile = get_profile("demo")
    params = dict(profile.seed_params)
    sha = git_sha()  # the code that runs (HEAD may move during the fit)
    home = Path(tempfile.mkdtemp(prefix="parking-pretrain-"))
    try:
        # init_weights "none": a random network, whatever the profile names (this script makes that file)
        # (or --init's file, which must fit this machine's decoder: new_model raises otherwise)
        settings = Settings(
            home=home,
            profile="demo",
            seed=args.fit_seed,
            init_weights=str(args.init) if args.init else "none",
            cpu_bf16=args.cpu_bf16,
            **({"threads": args.threads} if args.threads is not None else {}),
        )
        if args.out is None:
            # a bf16 CPU or a GPU trains the profile's decoder, a CPU without bf16 its narrower fp32 one
            name = init_weights_for(profile, trains_fp32_on_cpu(settings))
            if name is None:
                parser.error("the demo profile names no starting-weights file for this machine's decoder: give --out")
            args.out = WEIGHTS_DIR / name
        lake = Lake.from_settings(settings)
        t0 = time.perf_counter()
        generate_dataset(
            lake.local_path(f"landing/pretrain-{args.seed}"),
            args.lots,
            args.seed,
            512,
            (0.08, 0.15),
            styles,
            sites=args.lots,
            progress=True,
            hard_rate=args.hard_rate,
        )
        ingest(lake, None, settings.max_pixels, progress=True)
        preprocess(lake, TilingConfig.from_settings(settings), progress=True)
        data = load_processed(settings)
        data_s = time.perf_counter() - t0
        seed_everything(args.fit_seed)
        model = new_model(params, profile, settings)
        # every lot, holdout included: nothing here is scored
        loader = final_fit_loader(data, data.manifest, profile, params, settings, args.fit_seed)
        bf16 = use_cpu_bf16(settings.cpu_bf16)
        cfg = fit_config(
            params,
            profile,
            args.epochs or profile.final_epochs,
            settings.objective_metric,
            True,
            time_budget_s=args.seconds,
            cpu_bf16=bf16,
            lr_scale=args.lr_scale,
        )
        t0 = time.perf_counter()
        result = fit(model, loader, None, cfg, resolve_device(settings.device))
        fit_s = time.perf_counter() - t0
        model = model.cpu().eval()
        fresh = fresh_lot_iou(model, profile, settings, data)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    torch.save({k: v.detach().half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, tmp)
    tmp.replace(args.out)
    recipe = {
        "profile": "demo",
        "lots": args.lots,
        "lot_seed": args.seed,
        "fit_seed": args.fit_seed,
        "seconds": args.seconds,
        "epochs": args.epochs or profile.final_epochs,
        "fit_s": round(fit_s, 1),
        "data_s": round(data_s, 1),
        "steps": result.steps_run,
        "params": params,
        "cpu_bf16": bf16,
        "decoder_channels": list(decoder_channels(profile, settings) or []),
        "git_sha": sha,
        "fresh_lots_seed_99_iou_free": round(fresh, 4),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if styles != ("default",) or args.hard_rate is not None:
        # only a mixed run names its mix: the earlier files' recipes stay as they were
        recipe["styles"] = list(styles)
        recipe["hard_rate"] = HARD_RATE if args.hard_rate is None else args.hard_rate
    if args.init is not None:
        recipe = continued_recipe(recipe, args.init.name, init_recipe, args.lr_scale)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(recipe, indent=2) + "\n")
    tmp.replace(args.out.with_suffix(".json"))
    print(json.dumps(recipe, indent=2))
    return 0


def continued_recipe(recipe: dict, init_name: str, init_recipe: dict, lr_scale: float) -> dict:
    """``recipe`` of a fit that continued ``init_name``: its own steps plus every earlier fit's in ``steps_total``."""
    # a file continued before carries its chain's total; a first file only its own steps (none: not ours)
    before = int(init_recipe.get("steps_total", init_recipe.get("steps", 0)))
    return {
        **recipe,
        "lr_scale": lr_scale,
        "steps_total": recipe["steps"] + before,
        "init": {"file": init_name, **init_recipe},
    }


def fresh_lot_iou(model, profile, settings, data) -> float:
    """Free IoU of the pretrained network, served as the demo serves it, on 24 fresh lots of seed 99."""
    sys.path.insert(0, str(REPO / "bench"))
    from train import external_tiles

    from parking_ml.data.processed import training_rows
    from parking_ml.inference import OnnxSegmenter, predict
    from parking_ml.model.metrics import evaluate
    from parking_ml.model.package import build_package
    from parking_ml.model.recipe import preprocess_config

    serving = preprocess_config(profile, settings, training_rows(data.manifest), data.root)
    tiles = external_tiles(24, 99, (0.08, 0.15))
    with tempfile.TemporaryDirectory(prefix="parking-pretrain-pkg-") as tmp:
        build_package(model, serving, Path(tmp), None, profile.tile_size)
        segmenter = OnnxSegmenter.from_dir(Path(tmp), settings.threads)
        preds = [predict(segmenter, rgb, image_gsd=gsd).mask for rgb, _, gsd in tiles]
    return float(evaluate(preds, [truth for _, truth, _ in tiles])["iou_free"])


if __name__ == "__main__":
    sys.exit(main())
