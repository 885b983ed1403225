"""Torch dataset over a materialised processed/<version>/ directory (tiles/ + masks/ + manifest)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from parking_ml.data.augment import normalize_image


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


class TileDataset(Dataset):
    """Items: {"image": float32 3 x H x W normalised, "mask": int64 H x W (0/1/2/255), "tile_id": str}.

    ``manifest`` selects the tiles (filter it by fold/split before passing it in). ``transform`` is an
    albumentations Compose applied to the uint8 image and mask before normalisation. ``cache=True`` keeps the
    decoded tiles in memory (worth it for small datasets over many epochs; each DataLoader worker has its
    own copy).
    """

    def __init__(
        self,
        root: Path,
        manifest: pd.DataFrame,
        transform: Callable[..., dict[str, Any]] | None = None,
        cache: bool = False,
    ) -> None:
        self.root = Path(root)
        self.tile_ids: list[str] = [str(t) for t in manifest["tile_id"].tolist()]
        self.transform = transform
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.tile_ids)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is None:
            return read_tile(self.root, self.tile_ids[index])
        if index not in self._cache:
            self._cache[index] = read_tile(self.root, self.tile_ids[index])
        return self._cache[index]

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = self._load(index)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return {
            "image": torch.from_numpy(normalize_image(image)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64)),
            "tile_id": self.tile_ids[index],
        }
