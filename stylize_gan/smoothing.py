"""AnimeGAN edge smoothing of style images (the `smooth/` folder): blur the pixels around edges so that the
discriminator learns that soft edges are *not* the target style (AnimeGAN §3.2, data preparation).

Recipe: Canny(gray, 100, 200), dilate with a 5x5 ones kernel, and inside that mask replace each pixel by the 5x5
Gaussian-weighted mean of its reflect-padded neighbourhood. The published script does this with a per-pixel
Python loop (`edge_smooth_reference`, kept for the parity test and the benchmark); `edge_smooth` is the same
computation done once for the whole image and selected with one `np.where`.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from common.errors import UserInputError
from common.images import list_images, load_image, save_image

KERNEL_SIZE = 5
CANNY_LOW, CANNY_HIGH = 100, 200


def _gaussian_kernel() -> np.ndarray:
    """The 5x5 Gaussian used by AnimeGAN: outer product of cv2's 1-D kernel (sigma from the size), sums to 1."""
    g = cv2.getGaussianKernel(KERNEL_SIZE, 0)
    return (g @ g.T).astype(np.float64)


def edge_mask(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) bool: dilated Canny edges."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(gray, CANNY_LOW, CANNY_HIGH)
    return cv2.dilate(edges, np.ones((KERNEL_SIZE, KERNEL_SIZE), np.uint8)) != 0


def edge_smooth(rgb: np.ndarray) -> np.ndarray:
    """Vectorized edge smoothing: (H, W, 3) uint8 -> (H, W, 3) uint8."""
    pad = KERNEL_SIZE // 2
    # np.pad(mode="reflect") in the reference does not repeat the edge pixel: that is cv2.BORDER_REFLECT_101
    padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REFLECT_101).astype(np.float64)
    blurred = cv2.filter2D(padded, cv2.CV_64F, _gaussian_kernel(), borderType=cv2.BORDER_CONSTANT)
    blurred = blurred[pad:-pad, pad:-pad]  # centres of full 5x5 windows only: no border handling left to cv2
    out = np.where(edge_mask(rgb)[..., None], blurred, rgb.astype(np.float64))
    return np.clip(out, 0, 255).astype(np.uint8)  # truncation, as the reference's uint8 assignment does


def edge_smooth_reference(rgb: np.ndarray) -> np.ndarray:
    """Straightforward per-pixel loop, as in AnimeGAN's `edge_smooth.py` (slow; for tests and the benchmark)."""
    pad = KERNEL_SIZE // 2
    kernel = _gaussian_kernel()
    padded = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="reflect").astype(np.float64)
    mask = edge_mask(rgb)
    out = rgb.copy()
    for i, j in zip(*np.where(mask)):
        window = padded[i:i + KERNEL_SIZE, j:j + KERNEL_SIZE]  # (5, 5, 3) centred on pixel (i, j)
        for c in range(3):
            out[i, j, c] = np.clip(np.sum(window[:, :, c] * kernel), 0, 255)
    return out


def ensure_smooth_dir(style_dir: str | os.PathLike, smooth_dir: str | os.PathLike) -> list[Path]:
    """Create `smooth_dir` with the edge-smoothed version of every style image that lacks one (once, with a
    progress bar). Unreadable style images are skipped with a warning naming them. Returns the smooth paths."""
    style_dir, smooth_dir = Path(style_dir), Path(smooth_dir)
    styles = list_images(style_dir)
    if not styles:
        raise UserInputError(f"{style_dir}: no style images found")
    smooth_dir.mkdir(parents=True, exist_ok=True)
    existing = {p.stem for p in list_images(smooth_dir)}
    todo = [p for p in styles if p.stem not in existing]
    bad = []
    for path in tqdm(todo, desc=f"edge-smoothing {style_dir.name}", unit="img", disable=not todo):
        try:
            rgb = np.asarray(load_image(path))
        except UserInputError as err:
            bad.append(str(err))
            continue
        save_image(Image.fromarray(edge_smooth(rgb)), smooth_dir / f"{path.stem}.png")
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable style image(s): " + "; ".join(bad[:5]), stacklevel=2)
    return list_images(smooth_dir)
