"""Real photos that ship inside installed wheels (no download), and the fixed split that keeps the
stage-1 inputs, the stage-1 style domain and the evaluation photos apart."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from common.errors import UserInputError
from common.images import check_output_path, save_image


def _rgb(arr: np.ndarray) -> Image.Image:
    """uint8 (H, W) or (H, W, 3|4) array -> PIL RGB (gray photos are replicated to 3 channels)."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(arr[:, :, :3]).astype(np.uint8), "RGB")


def _skimage(name: str) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        import skimage.data  # imported lazily: scikit-image is only in the `demo` extra

        return _rgb(getattr(skimage.data, name)())
    return load


def _motorcycle(side: int) -> Callable[[], Image.Image]:
    # skimage exposes the stereo pair as one function returning (left, right, disparity).
    def load() -> Image.Image:
        import skimage.data

        return _rgb(skimage.data.stereo_motorcycle()[side])
    return load


def _sklearn(index: int) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        from sklearn.datasets import load_sample_images

        return _rgb(load_sample_images().images[index])
    return load


def _grace_hopper() -> Image.Image:
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    with Image.open(path) as img:
        return img.convert("RGB")


# name -> loader returning PIL RGB. `horse` is a binary silhouette, not a photo, so it is left out.
PHOTOS: dict[str, Callable[[], Image.Image]] = {
    "astronaut": _skimage("astronaut"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "motorcycle_left": _motorcycle(0),
    "motorcycle_right": _motorcycle(1),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "retina": _skimage("retina"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "camera": _skimage("camera"),
    "brick": _skimage("brick"),
    "grass": _skimage("grass"),
    "gravel": _skimage("gravel"),
    "china": _sklearn(0),
    "flower": _sklearn(1),
    "grace_hopper": _grace_hopper,
}

# Stage-1 inputs (and, cartoonized, stage-2 training inputs). The stereo pair stays in one group:
# the two views are nearly the same picture, so splitting them would leak. The microscope / telescope
# images are inputs, not style: as style they taught the discriminator "dark = cartoon".
CONTENT: tuple[str, ...] = (
    "motorcycle_left", "motorcycle_right", "camera", "brick", "grass", "gravel",
    "hubble_deep_field", "retina", "immunohistochemistry",
)
# Photos turned into the cartoon style domain: natural colour photos with ordinary brightness, so
# the discriminator can only tell the style apart by its flat paint and ink lines.
STYLE: tuple[str, ...] = ("rocket", "flower", "china", "chelsea")
# Evaluation only: three natural colour photos of different kinds (person, still life, portrait).
HELDOUT: tuple[str, ...] = ("astronaut", "coffee", "grace_hopper")


def load_photo(name: str) -> Image.Image:
    """Load one registered photo as PIL RGB; unknown names raise listing the valid ones."""
    if name not in PHOTOS:
        raise UserInputError(f"unknown photo {name!r}; choose one of {', '.join(sorted(PHOTOS))}")
    return PHOTOS[name]()


def export_example(name: str, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a registered photo to `path` (e.g. the bundled example image), never over an existing file."""
    out = check_output_path(path, overwrite=overwrite)
    save_image(load_photo(name), out)
    return out
