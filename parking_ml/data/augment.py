"""Augmentations for top-down parking imagery, and the one normalisation used by training and serving.

Transforms work on uint8 RGB (H x W x 3) + uint8 mask (H x W) and return the same types; normalisation
happens afterwards in ``normalize_image`` (the model's preprocess.json repeats NORMALIZE_MEAN/STD).
Geometry is label-preserving for nadir views (flips, 90-degree turns, small scale/rotation); masks are
resampled with nearest neighbour and areas that come from outside the image get mask 255 (ignore).
"""

from __future__ import annotations

from typing import Any

import numpy as np

NORMALIZE_MEAN = (0.485, 0.456, 0.406)
NORMALIZE_STD = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255


def normalize_image(rgb: np.ndarray) -> np.ndarray:
    """uint8 H x W x 3 RGB -> float32 3 x H x W: (rgb / 255 - mean) / std."""
    arr = rgb.astype(np.float32) / 255.0
    arr -= np.asarray(NORMALIZE_MEAN, np.float32)
    arr /= np.asarray(NORMALIZE_STD, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def build_train_transform(tile_size: int, strength: float = 1.0, seed: int | None = None, soft: bool = False) -> Any:
    """Random crop to ``tile_size`` (padding with mask 255 when smaller) plus photometric and geometric noise.

    ``strength`` in [0, 1] scales every probability and magnitude; 0 leaves only the crop.
    ``soft``: the mask is an H x W x C float soft target (dataset.soft_target) instead of a class map; it is
    then resampled bilinearly and padded with zeros (no weight: ignored).
    """
    import albumentations as A
    import cv2

    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    s = float(strength)
    pad = {"border_mode": cv2.BORDER_CONSTANT, "fill": 0, "fill_mask": 0 if soft else IGNORE_INDEX}
    transforms = [
        A.PadIfNeeded(min_height=tile_size, min_width=tile_size, position="top_left", **pad),
        A.RandomCrop(height=tile_size, width=tile_size),
    ]
    if s > 0:
        transforms += [
            A.HorizontalFlip(p=0.5 * s),
            A.VerticalFlip(p=0.5 * s),
            A.RandomRotate90(p=0.75 * s),
            A.Affine(
                scale=(1.0 - 0.15 * s, 1.0 + 0.15 * s),
                rotate=(-15.0 * s, 15.0 * s),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_LINEAR if soft else cv2.INTER_NEAREST,
                p=0.5 * s,
                **pad,
            ),
            A.RandomBrightnessContrast(brightness_limit=0.25 * s, contrast_limit=0.25 * s, p=0.6 * s),
            A.HueSaturationValue(hue_shift_limit=8 * s, sat_shift_limit=20 * s, val_shift_limit=10 * s, p=0.4 * s),
            A.RandomShadow(shadow_roi=(0, 0, 1, 1), num_shadows_limit=(1, 2), p=0.15 * s),
            A.OneOf(
                [
                    A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.1, 0.2 + 1.0 * s)),
                    A.MotionBlur(blur_limit=(3, 5)),
                ],
                p=0.2 * s,
            ),
            A.GaussNoise(std_range=(0.01, 0.01 + 0.04 * s), p=0.25 * s),
            A.ImageCompression(compression_type="jpeg", quality_range=(round(95 - 45 * s), 95), p=0.3 * s),
        ]
    return A.Compose(transforms, seed=seed)


def build_eval_transform(pad_multiple: int | None = None) -> Any:
    """No geometric change; optionally pad bottom/right to a multiple (image 0, mask 255 = ignore)."""
    import albumentations as A
    import cv2

    if not pad_multiple:
        return A.Compose([])
    return A.Compose(
        [
            A.PadIfNeeded(
                min_height=None,
                min_width=None,
                pad_height_divisor=pad_multiple,
                pad_width_divisor=pad_multiple,
                position="top_left",
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=IGNORE_INDEX,
            )
        ]
    )
