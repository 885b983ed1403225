"""Torch dataset over a materialised processed/<version>/ directory (tiles/ + masks/ + manifest).

With ``model_gsd`` every tile is first resampled to the model's ground resolution (area interpolation), and
its labels become *soft* targets: the share of each class in every resampled pixel. A pixel half on a
stall's edge then says "half free", instead of the nearest-neighbour coin toss that would move stall edges
by up to a pixel at random (docs/experiments/model-gsd.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from parking_ml.data.augment import IGNORE_INDEX, normalize_image
from parking_ml.data.tile_cache import TileCache
from parking_ml.inference import rescale

CLASSES = 3


def read_tile(root: Path, tile_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 RGB H x W x 3, uint8 mask H x W) of one tile from a local processed directory."""
    import cv2

    image_path = root / "tiles" / f"{tile_id}.png"
    mask_path = root / "masks" / f"{tile_id}.png"
    bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"tile image {image_path} is missing or unreadable; re-run `parking-ml preprocess`")
    mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise FileNotFoundError(f"tile mask {mask_path} is missing or unreadable; re-run `parking-ml preprocess`")
    if mask.shape != bgr.shape[:2]:
        raise ValueError(f"tile {tile_id}: mask {mask.shape} and image {bgr.shape[:2]} differ in size")
    return np.ascontiguousarray(bgr[:, :, ::-1]), mask


def soft_target(mask: np.ndarray, classes: int = CLASSES) -> np.ndarray:
    """H x W class map -> H x W x classes float32 one-hot; ignored pixels (255) are all zero."""
    return np.stack([(mask == c) for c in range(classes)], axis=-1).astype(np.float32)


def hard_mask(target: np.ndarray) -> np.ndarray:
    """H x W x C soft target -> H x W uint8 class map; pixels mostly ignored (weight < 0.5) become 255."""
    label = target.argmax(axis=-1).astype(np.uint8)
    label[target.sum(axis=-1) < 0.5] = IGNORE_INDEX
    return label


def gap_kernel_px(gsd: float | None, gap_m: float = 1.0) -> int:
    """Odd side (px) of the closing that bridges the background between neighbouring spaces: their labelled
    interiors are 0.6 m apart (each shrunk 0.3 m off the shared line), so 1 m bridges them at any gsd but
    not a 5-6 m aisle. Tiles of unknown gsd are taken as 0.1 m/px."""
    side = max(3, round(gap_m / (gsd or 0.1)))
    return side if side % 2 else side + 1


def emphasise_gaps(target: np.ndarray, kernel_px: int, weight: float) -> np.ndarray:
    """The soft target with its separation pixels (background between two nearby spaces, found by a
    morphological closing of the space pixels) weighted ``weight`` times, so that the loss pays for merging
    neighbours, as the U-Net paper's border weights do. A pixel's target sums to its weight in the loss."""
    import cv2

    if weight == 1.0:
        return target
    label = hard_mask(target)
    spaces = ((label == 1) | (label == 2)).astype(np.uint8)
    closed = cv2.morphologyEx(spaces, cv2.MORPH_CLOSE, np.ones((kernel_px, kernel_px), np.uint8))
    gap = (closed > 0) & (label == 0)
    if not gap.any():
        return target
    out = target.copy()
    out[gap] *= np.float32(weight)
    return out


def resample_tile(rgb: np.ndarray, mask: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(image, soft target) of a tile scaled by ``scale`` (area averaging down, bilinear up, as serving does)."""
    target = soft_target(mask)
    if abs(scale - 1.0) < 1e-6:
        return rgb, target
    return rescale(rgb, scale), rescale(target, scale)


class TileDataset(Dataset):
    """Items: {"image": float32 3 x H x W normalised, "target": float32 3 x H x W soft labels (class shares
    summing to the pixel's loss weight: 1, 0 where ignored, ``gap_weight`` between neighbouring spaces),
    "mask": int64 H x W (0/1/2/255, the target's majority class), "tile_id": str}.

    ``manifest`` selects the tiles (filter it by fold/split before passing it in). ``transform`` is an
    albumentations Compose applied to the uint8 image and the float soft target (build it with
    ``soft=True``) before normalisation. ``model_gsd`` resamples each tile from its manifest ``gsd`` to the
    model's resolution (tiles without a gsd stay as they are). ``cache=True`` keeps the decoded, resampled
    tiles in memory (worth it for small datasets over many epochs; each DataLoader worker has its own copy);
    a TileCache mapping instead shares them with other datasets over the same tiles (the CV folds, trials and
    final fit of one training run: docs/experiments/tile-cache.md).
    """

    def __init__(
        self,
        root: Path,
        manifest: pd.DataFrame,
        transform: Callable[..., dict[str, Any]] | None = None,
        cache: bool | TileCache = False,
        model_gsd: float | None = None,
        gap_weight: float = 1.0,
    ) -> None:
        self.root = Path(root)
        self.tile_ids: list[str] = [str(t) for t in manifest["tile_id"].tolist()]
        raw = manifest["gsd"].tolist() if "gsd" in manifest.columns else [None] * len(self.tile_ids)
        gsds = [float(g) if g is not None and pd.notna(g) and g > 0 else None for g in raw]
        self.scales = [g / model_gsd if model_gsd and g else 1.0 for g in gsds]
        # after resampling a tile has the model's gsd, else its own
        self.kernels = [gap_kernel_px(model_gsd or g) for g in gsds]
        self.gap_weight = float(gap_weight)
        if self.gap_weight < 1.0:
            raise ValueError(f"gap_weight must be >= 1 (1: no emphasis), got {gap_weight}")
        self.transform = transform
        if isinstance(cache, bool):
            cache = {} if cache else None
        self._cache: TileCache | None = cache

    def __len__(self) -> int:
        return len(self.tile_ids)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        key = (self.tile_ids[index], self.scales[index], self.kernels[index], self.gap_weight)
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        rgb, mask = read_tile(self.root, self.tile_ids[index])
        image, target = resample_tile(rgb, mask, self.scales[index])
        item = image, emphasise_gaps(target, self.kernels[index], self.gap_weight)
        if self._cache is not None:
            self._cache[key] = item
        return item

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, target = self._load(index)
        if self.transform is not None:
            out = self.transform(image=image, mask=target)
            image, target = out["image"], out["mask"]
        return {
            "image": torch.from_numpy(normalize_image(image)),
            "target": torch.from_numpy(np.ascontiguousarray(target.transpose(2, 0, 1))),
            "mask": torch.from_numpy(hard_mask(target).astype(np.int64)),
            "tile_id": self.tile_ids[index],
        }
