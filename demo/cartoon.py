"""A procedural cartoon filter: the stage-1 style domain of the built-in demo models.

Three classic steps (as in the usual OpenCV "cartoonize" recipe): edge-preserving smoothing flattens
texture, colour quantization makes flat paint regions, and ink lines from an adaptive threshold of a
median-blurred gray image are drawn dark on top. Everything is deterministic (k-means starts from
luminance quantiles, no random init) so the same photo always gives the same cartoon.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image


@dataclass(frozen=True)
class CartoonSettings:
    # bilateral filter passes: more passes = flatter regions (each pass is cheap at 128-512 px)
    smooth_passes: int = 4
    # bilateral filter neighbourhood diameter in pixels and colour / space sigmas
    smooth_diameter: int = 7
    smooth_sigma_color: float = 40.0
    smooth_sigma_space: float = 7.0
    # number of paint colours per image (k-means in RGB)
    colors: int = 8
    # k-means refinement steps; converges in a few on a subsample
    kmeans_iters: int = 8
    # median blur before edge detection removes speckle that would become ink noise
    edge_median: int = 7
    # adaptive threshold window and offset: darker-than-surroundings pixels become ink
    edge_block: int = 9
    edge_offset: float = 5.0
    # ink colour (RGB) composited over the paint
    ink: tuple[int, int, int] = (24, 20, 28)

    def __post_init__(self):
        if self.smooth_passes < 0:
            raise ValueError(f"smooth_passes must be >= 0, got {self.smooth_passes}")
        if self.colors < 2:
            raise ValueError(f"colors must be >= 2, got {self.colors}")
        for name in ("edge_median", "edge_block"):
            value = getattr(self, name)
            if value < 3 or value % 2 == 0:
                raise ValueError(f"{name} must be an odd number >= 3, got {value}")


DEFAULT_SETTINGS = CartoonSettings()


def _smooth(rgb: np.ndarray, s: CartoonSettings) -> np.ndarray:
    for _ in range(s.smooth_passes):
        rgb = cv2.bilateralFilter(rgb, s.smooth_diameter, s.smooth_sigma_color, s.smooth_sigma_space)
    return rgb


def _quantize(rgb: np.ndarray, s: CartoonSettings) -> np.ndarray:
    """Replace each pixel by the nearest of `s.colors` k-means centres (deterministic init)."""
    pixels = rgb.reshape(-1, 3).astype(np.float32)  # (N, 3)
    # A fixed stride subsample is enough to place the centres and keeps this fast at 512 px.
    sample = pixels[:: max(1, len(pixels) // 8192)]
    luma = sample @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    order = np.argsort(luma, kind="stable")
    # Init: pixels at evenly spaced luminance quantiles, so dark, mid and light paints all exist.
    picks = order[np.linspace(0, len(order) - 1, s.colors).round().astype(int)]
    centres = sample[picks].copy()  # (K, 3)
    for _ in range(s.kmeans_iters):
        labels = ((sample[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)  # (n,)
        sums = np.zeros_like(centres)
        np.add.at(sums, labels, sample)
        counts = np.bincount(labels, minlength=s.colors).astype(np.float32)[:, None]
        # Empty clusters keep their centre instead of collapsing to 0 (no NaN, no random restart).
        centres = np.where(counts > 0, sums / np.maximum(counts, 1.0), centres)
    labels = np.empty(len(pixels), dtype=np.int64)
    for start in range(0, len(pixels), 65536):  # chunked: (chunk, K, 3) stays small at 1 Mpx
        chunk = pixels[start:start + 65536]
        labels[start:start + 65536] = ((chunk[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    return centres.round().clip(0, 255).astype(np.uint8)[labels].reshape(rgb.shape)


def ink_mask(rgb: np.ndarray, s: CartoonSettings = DEFAULT_SETTINGS) -> np.ndarray:
    """Boolean (H, W) mask of the ink lines of an RGB uint8 image."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    gray = cv2.medianBlur(gray, s.edge_median)
    lines = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY,
                                  s.edge_block, s.edge_offset)
    return lines == 0


def cartoonize_array(rgb: np.ndarray, settings: CartoonSettings = DEFAULT_SETTINGS) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> cartoon (H, W, 3) uint8 RGB."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    rgb = np.ascontiguousarray(rgb)
    paint = _quantize(_smooth(rgb, settings), settings)
    # Edges come from the original (not the smoothed) image so thin outlines survive the smoothing.
    mask = ink_mask(rgb, settings)
    return np.where(mask[:, :, None], np.array(settings.ink, dtype=np.uint8), paint)


def cartoonize(img: Image.Image, settings: CartoonSettings = DEFAULT_SETTINGS) -> Image.Image:
    """PIL image -> cartoon PIL RGB image of the same size."""
    return Image.fromarray(cartoonize_array(np.asarray(img.convert("RGB")), settings), "RGB")
