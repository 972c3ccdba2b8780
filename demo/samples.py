"""Seeded sampling of crops and edit triplets from the bundled photos, shared by the data builder
(which writes them) and the evaluation (which can rebuild the held-out set on the fly)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from tqdm import tqdm

from .cartoon import cartoonize
from .edits import EDIT_FAMILIES
from .photos import HELDOUT, load_photo


@dataclass(frozen=True)
class EditSample:
    # (H, W, 3) uint8 RGB input: a cartoonized crop (the stage-1 style domain)
    source: np.ndarray
    # the instruction given to the editor
    prompt: str
    # name in EDIT_FAMILIES; `EDIT_FAMILIES[family].apply(source)` is the exact target
    family: str
    # which bundled photo the crop comes from (for reports)
    photo: str

    @property
    def target(self) -> np.ndarray:
        return EDIT_FAMILIES[self.family].apply(self.source)


def load_photos(names: tuple[str, ...] | list[str]) -> dict[str, Image.Image]:
    """Load each named photo once (decoding the big ones dominates otherwise)."""
    return {name: load_photo(name) for name in dict.fromkeys(names)}


def random_crop(img: Image.Image, size: int, rng: np.random.Generator, min_scale: float = 0.3,
                flip: bool = True) -> Image.Image:
    """Square crop whose side is a random fraction in [min_scale, 1] of the short side, resized to
    `size` and randomly mirrored: one photo gives many different training views."""
    w, h = img.size
    side = max(1, int(round(rng.uniform(min_scale, 1.0) * min(w, h))))
    x = int(rng.integers(0, w - side + 1))
    y = int(rng.integers(0, h - side + 1))
    crop = img.crop((x, y, x + side, y + side)).resize((size, size), Image.LANCZOS)
    if flip and rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    return crop


def center_square(img: Image.Image, size: int) -> Image.Image:
    """Largest centred square, resized to `size` (the deterministic view used for evaluation)."""
    w, h = img.size
    side = min(w, h)
    x, y = (w - side) // 2, (h - side) // 2
    return img.crop((x, y, x + side, y + side)).resize((size, size), Image.LANCZOS)


def crops(photos: dict[str, Image.Image], count: int, size: int, rng: np.random.Generator,
          min_scale: float = 0.3) -> list[tuple[str, Image.Image]]:
    """`count` random crops cycling over the photos in order, so every photo is equally represented."""
    names = list(photos)
    out = []
    for i in range(count):
        name = names[i % len(names)]
        out.append((name, random_crop(photos[name], size, rng, min_scale)))
    return out


def heldout_photo_views(count: int, size: int, seed: int = 0) -> list[tuple[str, Image.Image]]:
    """Held-out photo views for stage 1: first the centred square of each held-out photo, then
    seeded random crops (min scale 0.5, so views stay scene-like rather than texture-like)."""
    photos = load_photos(HELDOUT)
    views = [(name, center_square(img, size)) for name, img in photos.items()][:count]
    rng = np.random.default_rng(seed)
    views += crops(photos, count - len(views), size, rng, min_scale=0.5)
    return views


def edit_samples(photos: dict[str, Image.Image], count: int, size: int, families: tuple[str, ...],
                 heldout: bool, rng: np.random.Generator, min_scale: float = 0.3) -> list[EditSample]:
    """`count` triplets: cartoonized random crops, families balanced and shuffled, phrasings drawn at
    random from the train set (heldout=False) or the held-out set (heldout=True)."""
    if not families:
        raise ValueError("families: need at least one edit family")
    unknown = [f for f in families if f not in EDIT_FAMILIES]
    if unknown:
        raise ValueError(f"families: unknown {unknown}; choose from {', '.join(EDIT_FAMILIES)}")
    # Balanced then shuffled: every family gets count/F samples, in random order.
    order = rng.permutation(np.arange(count) % len(families))
    samples = []
    views = crops(photos, count, size, rng, min_scale)
    for (name, crop), fam_index in tqdm(list(zip(views, order)), desc="cartoonize edit inputs", unit="img"):
        family = families[int(fam_index)]
        spec = EDIT_FAMILIES[family]
        pool = spec.heldout_phrasings if heldout else spec.train_phrasings
        prompt = pool[int(rng.integers(0, len(pool)))]
        samples.append(EditSample(np.asarray(cartoonize(crop)), prompt, family, name))
    return samples


def heldout_edit_samples(per_family: int, size: int, seed: int = 0,
                         families: tuple[str, ...] = tuple(EDIT_FAMILIES)) -> list[EditSample]:
    """Evaluation triplets from held-out photos and held-out phrasings, `per_family` per family.
    Phrasings are cycled (not drawn) so a small `per_family` still covers different wordings."""
    photos = load_photos(HELDOUT)
    rng = np.random.default_rng(seed)
    names = list(photos)
    samples = []
    for f_index, family in enumerate(families):
        pool = EDIT_FAMILIES[family].heldout_phrasings
        start = int(rng.integers(0, len(pool)))
        for i in range(per_family):
            # Offset by family index so the first samples of all families do not share one photo.
            name = names[(i + f_index) % len(names)]
            view = center_square(photos[name], size) if i < len(names) else \
                random_crop(photos[name], size, rng, min_scale=0.5)
            samples.append(EditSample(np.asarray(cartoonize(view)), pool[(start + i) % len(pool)],
                                      family, name))
    return samples
