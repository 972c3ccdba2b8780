"""Datasets: the AnimeGAN unpaired layout and pix2pix-style paired data, decoded once into uint8 tensors.

Unpaired (AnimeGAN dataset as published):  <root>/train_photo/*.jpg, <root>/<Style>/style/*.jpg,
<root>/<Style>/smooth/*.jpg (generated once when missing), <root>/test/test_photo/*.jpg (sample grids).
Paired: <dir>/A + <dir>/B with matching file names, or side-by-side AB images in <dir> (or <dir>/train), or two
folders given separately. Unreadable / wrong-shaped files are skipped with a warning that names them.

Sampling is a pure function of (seed, epoch, index), so a resumed run sees exactly the batches it would have.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import kornia.augmentation as K
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from common.errors import UserInputError
from common.images import list_images, load_image

from .smoothing import ensure_smooth_dir

TEST_SUBDIRS = ("test_photo", "real", "test_photo256")  # AnimeGAN's test/ subfolders, in order of preference
MAX_SAMPLE_IMAGES = 4


def fit_square(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` and centre-crop to size x size."""
    scale = size / min(img.size)
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    img = img.resize((w, h), Image.BICUBIC, reducing_gap=3.0)
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def _to_uint8(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)  # (3, S, S)


def _warn_skipped(kind: str, problems: list[str]) -> None:
    if problems:
        shown = "; ".join(problems[:10]) + (f"; ... ({len(problems) - 10} more)" if len(problems) > 10 else "")
        warnings.warn(f"skipped {len(problems)} {kind}: {shown}", stacklevel=3)


def load_stack(groups: list[tuple[Path, ...]], size: int, desc: str,
               split_ab: bool = False) -> tuple[torch.Tensor, list[tuple[Path, ...]]]:
    """Decode each group of same-sized images (one photo, a style+smooth pair, a source+target pair, or one AB
    image when `split_ab`) into a (N, 3*k, size, size) uint8 tensor. Bad groups are skipped and named."""
    tensors, kept, problems = [], [], []
    for group in tqdm(groups, desc=desc, unit="img", disable=len(groups) < 50):
        try:
            images = [load_image(p) for p in group]
            if split_ab:
                (ab,) = images
                if ab.width % 2:
                    raise UserInputError(f"{group[0]}: AB image of odd width {ab.width}, expected two equal halves")
                half = ab.width // 2
                images = [ab.crop((0, 0, half, ab.height)), ab.crop((half, 0, ab.width, ab.height))]
            if any(im.size != images[0].size for im in images):
                sizes = ", ".join(f"{p.name} {im.size[0]}x{im.size[1]}" for p, im in zip(group, images))
                raise UserInputError(f"{group[0]}: images of one pair differ in size ({sizes})")
        except UserInputError as err:
            problems.append(str(err))
            continue
        tensors.append(torch.cat([_to_uint8(fit_square(im, size)) for im in images]))
        kept.append(group)
    _warn_skipped(f"{desc} file(s)", problems)
    if not tensors:
        raise UserInputError(f"{desc}: no usable images" + (f" ({problems[0]})" if problems else ""))
    return torch.stack(tensors), kept


def _match_by_stem(a_paths: list[Path], b_paths: list[Path], what: str) -> list[tuple[Path, Path]]:
    b_by_stem = {p.stem: p for p in b_paths}
    pairs = [(a, b_by_stem[a.stem]) for a in a_paths if a.stem in b_by_stem]
    unmatched = [str(a) for a in a_paths if a.stem not in b_by_stem]
    _warn_skipped(f"{what} without a partner of the same name", unmatched)
    return pairs


@dataclass
class UnpairedFiles:
    photos: list[Path]
    styles: list[tuple[Path, Path]]  # (style, smooth)
    test_photos: list[Path]


def find_unpaired(root: str | Path, style: str) -> UnpairedFiles:
    """Locate the AnimeGAN layout under `root` for style `style`, generating `smooth/` if it is missing."""
    root = Path(root)
    photo_dir, style_dir = root / "train_photo", root / style / "style"
    for folder, hint in ((root, "--data-dir"), (photo_dir, "the photos"), (style_dir, "--dataset")):
        if not folder.is_dir():
            raise UserInputError(f"{folder}: folder not found (expected the AnimeGAN layout: <data-dir>/train_photo, "
                                 f"<data-dir>/<dataset>/style; check {hint})")
    photos = list_images(photo_dir)
    if not photos:
        raise UserInputError(f"{photo_dir}: no images found")
    smooth = ensure_smooth_dir(style_dir, root / style / "smooth")
    styles = _match_by_stem(list_images(style_dir), smooth, "style image(s)")
    test_photos = []
    for sub in TEST_SUBDIRS:
        if (root / "test" / sub).is_dir():
            test_photos = list_images(root / "test" / sub)[:MAX_SAMPLE_IMAGES]
            break
    return UnpairedFiles(photos, styles, test_photos)


def find_paired(data_dir: str | None, paired_a: str | None, paired_b: str | None) -> tuple[list[tuple[Path, ...]], bool]:
    """Paired groups and whether they are AB images to split. Accepts A/B folders or AB images."""
    if paired_a and paired_b:
        a_dir, b_dir = Path(paired_a), Path(paired_b)
    elif (Path(data_dir) / "A").is_dir() and (Path(data_dir) / "B").is_dir():
        a_dir, b_dir = Path(data_dir) / "A", Path(data_dir) / "B"
    else:
        folder = Path(data_dir) / "train" if (Path(data_dir) / "train").is_dir() else Path(data_dir)
        ab = list_images(folder)
        if not ab:
            raise UserInputError(f"{data_dir}: no paired data (expected A/ and B/ folders or side-by-side AB images)")
        return [(p,) for p in ab], True
    pairs = _match_by_stem(list_images(a_dir), list_images(b_dir), f"file(s) in {a_dir}")
    if not pairs:
        raise UserInputError(f"{a_dir} and {b_dir}: no file names in common")
    return pairs, False


def sample_index(seed: int, epoch: int, index: int, n: int) -> int:
    """Deterministic pseudo-random pick in [0, n) for (seed, epoch, index); same in every worker and on resume."""
    gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch * 10_007 + index) % (2**63))
    return int(torch.randint(n, (1,), generator=gen))


class UnpairedDataset(Dataset):
    """Item `epoch * n + i`: photo i with a style image drawn for (seed, epoch, i)."""

    def __init__(self, photos: torch.Tensor, styles: torch.Tensor, seed: int):
        self.photos, self.styles, self.seed = photos, styles, seed  # (N, 3, S, S), (M, 6, S, S) uint8

    def __len__(self) -> int:
        return len(self.photos)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        epoch, i = divmod(idx, len(self.photos))
        j = sample_index(self.seed, epoch, i, len(self.styles))
        return {"photo": self.photos[i], "style": self.styles[j]}


class PairedDataset(Dataset):
    def __init__(self, pairs: torch.Tensor):
        self.pairs = pairs  # (N, 6, S, S) uint8: source then target

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        return {"pair": self.pairs[idx % len(self.pairs)]}


class EpochSampler(Sampler):
    """A fresh permutation per epoch from (seed, epoch); yields `epoch * n + i` so items know their epoch."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 7_919 + self.epoch)
        offset = self.epoch * self.n
        return iter((offset + torch.randperm(self.n, generator=gen)).tolist())


def make_augment(size: int) -> K.AugmentationSequential:
    """Random resized crop + horizontal flip. Stacked channels (style+smooth, source+target) share one draw."""
    return K.AugmentationSequential(
        K.RandomResizedCrop((size, size), scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)),
        K.RandomHorizontalFlip(),
    )


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float in [-1, 1]."""
    return batch.float() / 127.5 - 1.0
