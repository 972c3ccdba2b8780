"""Seeded sampling of crops and edit triplets from the bundled photos, shared by the data builder
(which writes them) and the evaluation (which can rebuild the held-out set on the fly)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from .cartoon import cartoonize
from .edits import EDIT_FAMILIES
from .photos import HELDOUT, load_photo


# Input domains of the editor's triplets: the chain edits stage-1 outputs, and `--skip-stylize` edits
# photos directly. "stage1" (the bundled generator's real outputs) is added by the builder when a
# generator is given; the procedural cartoon filter stands in for it everywhere else.
Stylizer = Callable[[Image.Image], Image.Image]
DOMAINS: dict[str, Stylizer] = {"photo": lambda img: img, "cartoon": cartoonize}
# A domain may also be a prebuilt pool of (photo name, styled view) drawn with replacement: the stage-1
# generator takes ~0.4 s per 128 px view on a CPU, too slow to run once per triplet.
Pool = list[tuple[str, Image.Image]]


@dataclass(frozen=True)
class EditSample:
    # (H, W, 3) uint8 RGB input: a photo crop or its stage-1 style
    source: np.ndarray
    # the instruction given to the editor
    prompt: str
    # name in EDIT_FAMILIES; `EDIT_FAMILIES[family].apply(source, *args)` is the exact target
    family: str
    # which bundled photo the crop comes from (for reports)
    photo: str
    # the family's parameters (recolour: source and target colour names)
    args: tuple = ()
    # which of DOMAINS made `source`
    domain: str = "cartoon"

    @property
    def target(self) -> np.ndarray:
        return EDIT_FAMILIES[self.family].apply(self.source, *self.args)


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


def family_plan(count: int, families: tuple[str, ...], shares: dict[str, float],
                rng: np.random.Generator) -> list[str]:
    """`count` family names in random order: each family in `shares` gets that fraction of the
    samples, the rest are split evenly over the other families."""
    if not families:
        raise ValueError("families: need at least one edit family")
    unknown = [f for f in families if f not in EDIT_FAMILIES]
    if unknown:
        raise ValueError(f"families: unknown {unknown}; choose from {', '.join(EDIT_FAMILIES)}")
    fixed = {f: int(round(count * shares[f])) for f in families if f in shares}
    rest = [f for f in families if f not in fixed]
    left = max(count - sum(fixed.values()), 0)
    plan = [f for f, n in fixed.items() for _ in range(n)]
    plan += [rest[i % len(rest)] for i in range(left)] if rest else []
    return [plan[int(i)] for i in rng.permutation(len(plan))][:count]


def _sample(family: str, view: Image.Image, domain: str, stylize: Stylizer, name: str, heldout: bool,
            rng: np.random.Generator) -> EditSample | None:
    spec = EDIT_FAMILIES[family]
    prompt, args = spec.instruction(rng, heldout)
    source = np.asarray(stylize(view).convert("RGB"))
    if spec.prepare is not None:
        source = spec.prepare(source, args)
        if source is None:
            return None
    if not heldout and spec.train_augment is not None:
        source = spec.train_augment(source, args, rng)
    return EditSample(np.ascontiguousarray(source), prompt, family, name, args, domain)


def edit_samples(photos: dict[str, Image.Image], count: int, size: int, families: tuple[str, ...],
                 heldout: bool, rng: np.random.Generator, min_scale: float = 0.3,
                 domains: dict[str, Stylizer | Pool] | None = None,
                 shares: dict[str, float] | None = None) -> list[EditSample]:
    """`count` triplets: random crops in a random input domain, families planned by `shares` and
    shuffled, instructions from the training (heldout=False) or held-out (heldout=True) wording.
    A view a family cannot use (recolour: too little or too much of colour A) is replaced by a crop
    of a random photo."""
    domains = domains or DOMAINS
    names, domain_names = list(photos), list(domains)
    samples = []
    for i, family in enumerate(tqdm(family_plan(count, families, shares or {}, rng), desc="edit inputs",
                                    unit="img")):
        for attempt in range(50):
            # A retry draws its photo at random: taking the next one in order handed every slot of the
            # photos with no colour (camera, brick, grass, gravel, hubble) to `retina`, the one after them.
            name = names[i % len(names)] if attempt == 0 else names[int(rng.integers(0, len(names)))]
            domain = domain_names[int(rng.integers(0, len(domain_names)))]
            made = domains[domain]
            if isinstance(made, list):
                name, view = made[int(rng.integers(0, len(made)))]
                made = DOMAINS["photo"]
            else:
                view = random_crop(photos[name], size, rng, min_scale)
            sample = _sample(family, view, domain, made, name, heldout, rng)
            if sample is not None:
                samples.append(sample)
                break
        else:
            raise ValueError(f"{family}: no usable view in 50 crops of {names}")
    return samples


def heldout_edit_samples(per_family: int, size: int, seed: int = 0,
                         families: tuple[str, ...] = tuple(EDIT_FAMILIES)) -> list[EditSample]:
    """Evaluation triplets from held-out photos and held-out wording, `per_family` per family,
    alternating plain photos and their cartoon. The first views are the photos' centred squares. Every
    registered family is drawn (one random stream) and `families` selects from them, so a family's samples
    do not depend on which others are asked for (tests evaluate subsets of the README's table). Families
    after the last one asked for cannot change the earlier ones' draws, so they are not drawn."""
    photos = load_photos(HELDOUT)
    rng = np.random.default_rng(seed)
    names, domain_names = list(photos), list(DOMAINS)
    registered = list(EDIT_FAMILIES)
    samples = []
    for f_index, family in enumerate(registered[:1 + max(map(registered.index, families), default=-1)]):
        made = 0
        for i in range(per_family * 50):
            if made == per_family:
                break
            # Offset by family index so the first samples of all families do not share one photo.
            name = names[(i + f_index) % len(names)]
            view = center_square(photos[name], size) if i < len(names) else \
                random_crop(photos[name], size, rng, min_scale=0.5)
            domain = domain_names[(i + f_index) % len(domain_names)]
            sample = _sample(family, view, domain, DOMAINS[domain], name, True, rng)
            if sample is not None:
                samples.append(sample)
                made += 1
    return [sample for sample in samples if sample.family in families]
