"""landing/ -> raw/: validate, content-address, quarantine what cannot be used.

For each batch (``landing/<batch>/``), files are grouped by stem (image + its annotations). Accepted images go
to ``raw/images/<sha256>.<ext>``, their annotations to ``raw/annotations/<sha256>.<suffix>`` (both content
addressed, written once), and one row per image to ``raw/manifest.parquet``. A rejected file is copied to
``quarantine/<batch>/<path>`` with a line in ``quarantine/<batch>/reasons.jsonl``. Landing files stay where
they are.

Uploads take time: an annotation whose image has not landed yet (or an image whose annotation has not) is left
in landing for the next run while it is younger than ``settle_s`` (Settings.ingest_settle_s), and only
quarantined once it has waited that long alone. The hourly run that starts while a batch is still being
uploaded thus neither quarantines half a site nor leaves a stale quarantine entry behind.

Crash safety and idempotence: every object is written atomically (Lake.write_bytes), the manifest is
rewritten whole after the batch's files are in place, and a landing file already in the manifest (same key,
same hash) or already quarantined (same path, same hash) is skipped silently. So a re-run, or a retried task
after a crash, adds nothing twice and finishes what was left.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from parking_ml.data.annotations import geojson_gsd
from parking_ml.data.validation import (
    LABEL_PRIORITY,
    CheckedAnnotation,
    LandingFile,
    Rejection,
    check_annotation,
    check_image,
    error_code,
    parse_landing_key,
    sha256,
    utc_now,
)
from parking_ml.lake import Lake

log = logging.getLogger(__name__)

LANDING = "landing"
RAW_MANIFEST = "raw/manifest.parquet"
MANIFEST_COLUMNS = [
    "sha256",
    "source",
    "batch",
    "site",
    "stem",
    "width",
    "height",
    "bands",
    "format",
    "crs",
    "gsd",
    "gsd_source",
    "transform",
    "annotation",
    "annotation_format",
    "annotation_sha256",
    "stalls",
    "stalls_format",
    "ingested_at",
]
# RGB -> ground resolution (m/px), or None when it cannot tell
GsdEstimator = Callable[[np.ndarray], float | None]
ANNOTATION_SUFFIX = {"mask": "mask.png", "geojson": "geojson", "coco": "coco.json"}


def reasons_key(batch: str) -> str:
    return f"quarantine/{batch}/reasons.jsonl"


def empty_manifest() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in MANIFEST_COLUMNS})


def read_raw_manifest(lake: Lake) -> pd.DataFrame:
    return lake.read_parquet(RAW_MANIFEST) if lake.exists(RAW_MANIFEST) else empty_manifest()


def read_reasons(lake: Lake, batch: str) -> list[dict[str, Any]]:
    key = reasons_key(batch)
    if not lake.exists(key):
        return []
    return [json.loads(line) for line in lake.read_bytes(key).decode("utf-8").splitlines() if line.strip()]


def list_batches(lake: Lake) -> list[str]:
    batches = {k.split("/")[1] for k in lake.list(f"{LANDING}/") if k.count("/") >= 2}
    return sorted(batches)


@dataclass
class BatchResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    skipped: int = 0
    waiting: list[str] = field(default_factory=list)  # files left for a later run: their partner may be landing


@dataclass
class _State:
    """What is already known: accepted (source, sha) pairs and hashes, quarantined (file, sha) pairs."""

    known_sources: set[tuple[str, str]]
    raw_shas: dict[str, str]  # image sha -> source that brought it
    quarantined: set[tuple[str, str]]


def _store(lake: Lake, key: str, data: bytes) -> None:
    # content-addressed: an existing object has these very bytes, never rewrite it
    if not lake.exists(key):
        lake.write_bytes(key, data)


def _settling(lake: Lake, files: list[LandingFile], settle_s: float, now: datetime) -> bool:
    """Whether any of ``files`` landed less than ``settle_s`` ago (its partner may still be uploading)."""
    return settle_s > 0 and any((now - lake.modified(f.key)).total_seconds() < settle_s for f in files)


# one group's checks in the order a person fixes them, each with its quarantine reason: read top to bottom
def _process_group(
    lake: Lake,
    images: list[LandingFile],
    annotations: list[LandingFile],
    state: _State,
    max_pixels: int,
    result: BatchResult,
    settle_s: float,
    now: datetime,
    gsd_estimator: GsdEstimator | None = None,
) -> None:
    blobs = {f.key: lake.read_bytes(f.key) for f in [*images, *annotations]}
    hashes = {k: sha256(v) for k, v in blobs.items()}

    def reject(f: LandingFile, code: str, reason: str) -> None:
        # a file quarantined by an earlier run with the same content keeps its first line
        if (f.rel, hashes[f.key]) not in state.quarantined:
            result.rejections.append(Rejection(f, code, reason, hashes[f.key]))

    group = [*images, *annotations]
    # re-runs: an image accepted before (same key, same bytes) is done with its annotations; a group whose
    # every file was quarantined with the same bytes is done too. A changed file re-opens the group.
    if any((f.key, hashes[f.key]) in state.known_sources for f in images) or all(
        (f.rel, hashes[f.key]) in state.quarantined for f in group
    ):
        result.skipped += len(group)
        return

    if not images:
        if _settling(lake, annotations, settle_s, now):
            result.waiting.extend(f.rel for f in annotations)
            return
        for f in annotations:
            reject(f, "orphan_annotation", f"'{f.rel}' has no image with the same stem beside it")
        return
    if len(images) > 1:
        names = ", ".join(f.name for f in images)
        for f in [*images, *annotations]:
            reject(f, "ambiguous_stem", f"'{f.rel}': several images share the stem ({names})")
        return
    img = images[0]
    if not img.site:
        for f in [*images, *annotations]:
            reject(f, "no_site", f"'{f.rel}' is not inside a site folder (landing/<batch>/<site>/<file>)")
        return
    try:
        checked = check_image(blobs[img.key], img.rel, max_pixels)
    except Exception as exc:  # every failure to read is a quarantine reason, never a crash
        code, message = error_code(exc)
        reject(img, code, message)
        for f in annotations:
            reject(f, "image_rejected", f"'{f.rel}': its image '{img.name}' was rejected ({code})")
        return
    sha = hashes[img.key]
    if sha in state.raw_shas:
        reject(
            img,
            "duplicate",
            f"'{img.rel}' has the same content as '{state.raw_shas[sha]}' (sha256 {sha[:12]})",
        )
        for f in annotations:
            reject(f, "image_rejected", f"'{f.rel}': its image '{img.name}' is a duplicate")
        return
    if not annotations:
        if _settling(lake, images, settle_s, now):
            result.waiting.append(img.rel)
            return
        reject(
            img,
            "missing_annotation",
            f"'{img.rel}' has no annotation (.mask.png, .geojson or .json) beside it",
        )
        return

    good: dict[str, tuple[LandingFile, CheckedAnnotation]] = {}
    for f in sorted(annotations, key=lambda a: LABEL_PRIORITY.index(a.kind)):
        try:
            checked_ann = check_annotation(blobs[f.key], f.rel, f.kind, checked.geo, img.name)
        except Exception as exc:
            code, message = error_code(exc)
            reject(f, code, message)
            continue
        good.setdefault(checked_ann.kind, (f, checked_ann))
    label = next((good[k] for k in LABEL_PRIORITY if k in good), None)
    if label is None:
        reject(img, "annotation_rejected", f"'{img.rel}': none of its annotations could be used")
        return
    _accept(lake, img, checked, good, blobs, hashes, state, result, gsd_estimator)


def _image_gsd(checked: Any, good: dict, blobs: dict[str, bytes], gsd_estimator: GsdEstimator | None) -> tuple:
    """(gsd, its source) of an accepted image: its georeference, its GeoJSON's, an estimate, or (None, None)."""
    if checked.image.gsd is not None:
        return checked.image.gsd, "georeference"
    if "geojson" in good:
        # plain PNG/JPEG carry no resolution; producers like the synthetic generator put it in the GeoJSON
        gsd = geojson_gsd(blobs[good["geojson"][0].key])
        if gsd is not None:
            return gsd, "annotation"
    if gsd_estimator is not None:
        gsd = gsd_estimator(checked.image.rgb)
        if gsd is not None:
            return gsd, "estimated"
    return None, None


def _accept(
    lake: Lake,
    img: LandingFile,
    checked: Any,
    good: dict,
    blobs: dict[str, bytes],
    hashes: dict[str, str],
    state: _State,
    result: BatchResult,
    gsd_estimator: GsdEstimator | None,
) -> None:
    """Store the image and its usable annotations content-addressed and add its manifest row."""
    sha = hashes[img.key]
    label = next(good[k] for k in LABEL_PRIORITY if k in good)
    stalls = next((good[k] for k in ("geojson", "coco") if k in good), None)
    _store(lake, f"raw/images/{sha}.{checked.info.extension}", blobs[img.key])
    stored: dict[str, str] = {}
    for kind, (f, _) in good.items():
        key = f"raw/annotations/{hashes[f.key]}.{ANNOTATION_SUFFIX[kind]}"
        _store(lake, key, blobs[f.key])
        stored[kind] = key
    transform = checked.image.transform
    gsd, gsd_source = _image_gsd(checked, good, blobs, gsd_estimator)
    result.rows.append(
        {
            "sha256": sha,
            "source": img.key,
            "batch": img.batch,
            "site": img.site,
            "stem": img.group,
            "width": checked.info.width,
            "height": checked.info.height,
            "bands": checked.info.bands,
            "format": checked.info.format,
            "crs": checked.image.crs,
            "gsd": gsd,
            "gsd_source": gsd_source,
            "transform": json.dumps(list(transform)[:6]) if transform is not None else None,
            "annotation": stored[label[1].kind],
            "annotation_format": label[1].kind,
            "annotation_sha256": hashes[label[0].key],
            "stalls": stored[stalls[1].kind] if stalls else None,
            "stalls_format": stalls[1].kind if stalls else None,
            "ingested_at": utc_now(),
        }
    )
    state.raw_shas[sha] = img.key
    state.known_sources.add((img.key, sha))


def _write_quarantine(lake: Lake, batch: str, rejections: list[Rejection], blobs: dict[str, bytes]) -> None:
    for r in rejections:
        lake.write_bytes(f"quarantine/{batch}/{r.file.rel}", blobs[r.file.key])
    lines = [json.dumps(rec) for rec in read_reasons(lake, batch)]
    for r in rejections:
        rec = r.record()
        lines.append(json.dumps(rec))
        log.warning(
            "quarantined %s: %s",
            r.file.rel,
            rec["reason"],
            extra={"batch": batch, "site": r.file.site, "file": r.file.rel, "code": r.code},
        )
    lake.write_text(reasons_key(batch), "\n".join(lines) + "\n")


def ingest_batch(
    lake: Lake,
    batch: str,
    manifest: pd.DataFrame,
    max_pixels: int,
    progress: bool = False,
    settle_s: float = 0.0,
    gsd_estimator: GsdEstimator | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Ingest one landing batch; returns the new manifest (already written) and counts."""
    from tqdm import tqdm

    files = [f for f in (parse_landing_key(k) for k in lake.list(f"{LANDING}/{batch}/")) if f is not None]
    state = _State(
        known_sources=set(zip(manifest["source"], manifest["sha256"], strict=True)),
        raw_shas=dict(zip(manifest["sha256"], manifest["source"], strict=True)),
        quarantined={(r["file"], r.get("sha256", "")) for r in read_reasons(lake, batch)},
    )
    groups: dict[str, tuple[list[LandingFile], list[LandingFile]]] = defaultdict(lambda: ([], []))
    result = BatchResult()
    others: list[LandingFile] = []
    for f in files:
        if f.role == "other":
            others.append(f)
        else:
            groups[f.group][0 if f.role == "image" else 1].append(f)
    for f in others:
        digest = sha256(lake.read_bytes(f.key))
        if (f.rel, digest) in state.quarantined:
            result.skipped += 1
            continue
        reason = f"'{f.rel}' is neither an image (.png/.jpg/.tif) nor an annotation (.mask.png/.geojson/.json)"
        result.rejections.append(Rejection(f, "unsupported_type", reason, digest))
    now = datetime.now(UTC)
    for name in tqdm(sorted(groups), desc=f"ingest {batch}", unit="image", disable=not progress):
        images, annotations = groups[name]
        _process_group(lake, images, annotations, state, max_pixels, result, settle_s, now, gsd_estimator)
    if result.waiting:
        log.info(
            "left %d file(s) in landing/%s until their image or annotation lands (or %.0f s pass)",
            len(result.waiting),
            batch,
            settle_s,
            extra={"batch": batch, "files": result.waiting[:20], "settle_s": settle_s},
        )

    if result.rejections:
        blobs = {r.file.key: lake.read_bytes(r.file.key) for r in result.rejections}
        _write_quarantine(lake, batch, result.rejections, blobs)
    if result.rows:
        # the files are in place: only now does the manifest point at them
        new = pd.DataFrame(result.rows, columns=MANIFEST_COLUMNS)
        manifest = new if manifest.empty else pd.concat([manifest, new], ignore_index=True)
        lake.write_parquet(RAW_MANIFEST, manifest)
    counts = {
        "accepted": len(result.rows),
        "quarantined": len(result.rejections),
        "duplicates": sum(1 for r in result.rejections if r.code == "duplicate"),
        "skipped_duplicates": result.skipped,
        "waiting": len(result.waiting),
    }
    log.info("ingested batch %s", batch, extra={"batch": batch, **counts})
    return manifest, counts


def select_batches(available: list[str], prefix: str, where: str) -> list[str]:
    """The landing batches whose name starts with prefix (a whole name selects that batch); none is an error."""
    chosen = [b for b in available if b.startswith(prefix)]
    if not chosen:
        raise FileNotFoundError(
            f"no landing batch whose name starts with {prefix!r} under {where}; available: {available or 'none'}. "
            "Give a batch name (or the start of several), or leave it empty for every batch"
        )
    return chosen


def ingest(
    lake: Lake,
    batches: list[str] | None = None,
    max_pixels: int = 100_000_000,
    progress: bool = False,
    settle_s: float = 0.0,
    batch_prefix: str | None = None,
    gsd_estimator: GsdEstimator | None = None,
) -> dict:
    """Ingest the named landing batches (all when None; with batch_prefix, those whose name starts with it).
    Returns a summary dict (also logged).

    Summary: batches, accepted, quarantined (duplicates included), duplicates, skipped_duplicates (files a
    previous run already accepted or quarantined, skipped silently), waiting (annotations without their image,
    or images without an annotation, younger than ``settle_s``: left in landing for a later run), raw_images
    (rows in the manifest).

    gsd_estimator: RGB -> m/px (or None) for images that carry no gsd (no georeference, none in their GeoJSON),
    e.g. parking_ml.model.gsd_estimator.ShippedGsdEstimator; the manifest's gsd_source says where each gsd came
    from (georeference, annotation, estimated; null: unknown).
    """
    available = list_batches(lake)
    if batches is None:
        batches = select_batches(available, batch_prefix, lake.uri(LANDING)) if batch_prefix else available
    missing = [b for b in batches if b not in available]
    if missing:
        raise FileNotFoundError(
            f"no landing batch {missing} under {lake.uri(LANDING)}; available: {available or 'none'}. "
            f"Drop files into landing/<batch>/<site>/ (e.g. `parking-ml synth --out ...`)"
        )
    manifest = read_raw_manifest(lake)
    totals = {"accepted": 0, "quarantined": 0, "duplicates": 0, "skipped_duplicates": 0, "waiting": 0}
    for batch in batches:
        manifest, counts = ingest_batch(
            lake, batch, manifest, max_pixels, progress=progress, settle_s=settle_s, gsd_estimator=gsd_estimator
        )
        for k, v in counts.items():
            totals[k] += v
    summary = {"batches": batches, **totals, "raw_images": len(manifest)}
    log.info("ingest done", extra=summary)
    return summary
