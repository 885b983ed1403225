"""Decoded training tiles kept in memory, shared by the CV folds, trials and final fit of one training run.

Torch-free, so that the promotion gate, which loads the processed data too, does not import torch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping

import numpy as np

logger = logging.getLogger(__name__)

# decoded tiles ready for augmentation: (tile_id, scale, gap kernel, gap weight) -> (image, soft target)
TileKey = tuple[str, float, int, float]
TileCache = MutableMapping[TileKey, tuple[np.ndarray, np.ndarray]]


def _nbytes(item: tuple[np.ndarray, np.ndarray]) -> int:
    return sum(int(a.nbytes) for a in item)


class BoundedTileCache(MutableMapping):
    """A TileCache that holds decoded tiles up to ``max_bytes`` and then takes no more (sizes in
    docs/experiments/tile-cache.md). Training draws tiles uniformly, so the tiles held serve the same share of
    draws whichever they are; evicting some for others would only decode more. ``max_bytes`` 0 holds nothing."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"tile cache: max_bytes {max_bytes} must be >= 0 (0: no cache)")
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.refused = 0
        self._items: dict[TileKey, tuple[np.ndarray, np.ndarray]] = {}

    def __getitem__(self, key: TileKey) -> tuple[np.ndarray, np.ndarray]:
        return self._items[key]

    def __setitem__(self, key: TileKey, item: tuple[np.ndarray, np.ndarray]) -> None:
        size = _nbytes(item)
        old = self._items.get(key)
        held = self.nbytes - (_nbytes(old) if old is not None else 0)
        if held + size > self.max_bytes:
            if self.refused == 0:
                logger.info(
                    "tile cache full; further tiles are decoded each time they are drawn",
                    extra={"tiles_held": len(self._items), "mb_held": round(self.nbytes / 2**20, 1)},
                )
            self.refused += 1
            return
        self._items[key] = item
        self.nbytes = held + size

    def __delitem__(self, key: TileKey) -> None:
        self.nbytes -= _nbytes(self._items.pop(key))

    def __iter__(self) -> Iterator[TileKey]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
