"""Turn photos into line drawings, to build paired sketch -> photo training sets from any photo folder.
Sketches are dark lines on white, (H, W, 3) uint8 like the photos."""
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

CANNY_LOW, CANNY_HIGH = 50, 150


def canny_sketch(rgb: np.ndarray) -> np.ndarray:
    """Canny edges of the lightly blurred gray image, drawn black on white."""
    gray = cv2.GaussianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (3, 3), 0)
    edges = cv2.Canny(gray, CANNY_LOW, CANNY_HIGH)
    return np.repeat((255 - edges)[..., None], 3, axis=2)


def xdog_sketch(rgb: np.ndarray, sigma: float = 1.0, k: float = 1.6, tau: float = 0.98, eps: float = -0.005,
                phi: float = 100.0) -> np.ndarray:
    """eXtended Difference of Gaussians (Winnemoeller et al. 2012): D = G_sigma - tau * G_{k sigma} on gray in
    [0, 1], then 1 where D >= eps and 1 + tanh(phi (D - eps)) below: soft, pencil-like lines. With tau < 1 flat
    areas give D = (1 - tau) I >= 0 (white); the dark side of an edge gives D < 0 (a line)."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    g1 = cv2.GaussianBlur(gray, (0, 0), sigma)
    g2 = cv2.GaussianBlur(gray, (0, 0), sigma * k)
    dog = g1 - tau * g2
    out = np.where(dog >= eps, 1.0, 1.0 + np.tanh(phi * (dog - eps)))
    out = (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.repeat(out[..., None], 3, axis=2)


SKETCHERS = {"canny": canny_sketch, "xdog": xdog_sketch}


def make_paired_set(input_dir: str | os.PathLike, output_dir: str | os.PathLike, method: str = "xdog",
                    overwrite: bool = False) -> int:
    """Write <output>/A/<name>.png (sketch) and <output>/B/<name>.png (photo) for every readable photo in
    `input_dir`; the layout `train_gan.py --mode paired --data-dir <output>` reads. Returns the pair count."""
    if method not in SKETCHERS:
        raise ValueError(f"unknown sketch method {method!r} (valid: {', '.join(sorted(SKETCHERS))})")
    photos = list_images(input_dir)
    if not photos:
        raise UserInputError(f"{input_dir}: no images found")
    out_a, out_b = Path(output_dir) / "A", Path(output_dir) / "B"
    if Path(output_dir).resolve() == Path(input_dir).resolve():
        raise UserInputError(f"{output_dir}: output folder is the input folder; choose another")
    clashes = [p for p in photos if (out_a / f"{p.stem}.png").exists() or (out_b / f"{p.stem}.png").exists()]
    if clashes and not overwrite:
        raise UserInputError(f"{output_dir}: already holds pairs for {len(clashes)} of these photos "
                             f"(e.g. {clashes[0].stem}); pass --overwrite to replace them")
    count, bad = 0, []
    for path in tqdm(photos, desc=f"{method} sketches", unit="img", disable=len(photos) < 10):
        try:
            img = load_image(path)
        except UserInputError as err:
            bad.append(str(err))
            continue
        save_image(Image.fromarray(SKETCHERS[method](np.asarray(img))), out_a / f"{path.stem}.png")
        save_image(img, out_b / f"{path.stem}.png")
        count += 1
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image(s): " + "; ".join(bad[:5]), stacklevel=2)
    if not count:
        raise UserInputError(f"{input_dir}: none of the images could be read")
    return count
