"""Editing triplets (input image, instruction, edited image) from three sources, and the training
transform that keeps the two images aligned:

- a `datasets` hub name or `save_to_disk` folder (columns configurable);
- a local folder with `metadata.jsonl` rows {"input_image": rel path, "edit_prompt": str, "edited_image": rel path};
- the original InstructPix2Pix generated layout: one folder per prompt with `prompt.json`
  ({"edit": ...}) and `<seed>_0.jpg` (input) / `<seed>_1.jpg` (edited)."""
from __future__ import annotations

import io
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image

from common.errors import UserInputError
from common.images import load_image

logger = logging.getLogger(__name__)
# Decoding once and keeping images in memory pays off on CPU; above this budget images stay on disk.
CACHE_BUDGET_BYTES = 2 * 1024**3


@dataclass
class Triplet:
    input_image: Any   # path, PIL image, DatasetCell, or datasets image dict ({"bytes"/"path"})
    edit_prompt: str
    edited_image: Any


@dataclass
class DatasetCell:
    """One image cell of a `datasets` table, decoded when first needed (large datasets stay on disk)."""
    dataset: Any
    row: int
    column: str

    def load(self) -> Any:
        return self.dataset[self.row][self.column]


@dataclass
class Columns:
    input_image: str = "input_image"
    edit_prompt: str = "edit_prompt"
    edited_image: str = "edited_image"


# --- sources ------------------------------------------------------------------------------------------

FILE_NAME_SUFFIX = "_file_name"  # datasets' imagefolder: `input_image_file_name` -> image column `input_image`


def metadata_row(row: dict) -> dict:
    """A metadata.jsonl row with imagefolder's `<column>_file_name` keys also under `<column>`, as the
    `datasets` imagefolder builder (and so the diffusers recipe) exposes them."""
    named = {k[:-len(FILE_NAME_SUFFIX)]: v for k, v in row.items() if k.endswith(FILE_NAME_SUFFIX)}
    return {**named, **row}


def read_metadata_folder(folder: Path, columns: Columns) -> list[Triplet]:
    """Rows of every `metadata.jsonl` under `folder` (imagefolder reads them recursively), image paths relative
    to the metadata file's own folder."""
    rows = []
    for meta in sorted(folder.rglob("metadata.jsonl")):
        rows += _read_metadata(meta, columns)
    return rows


def _read_metadata(meta: Path, columns: Columns) -> list[Triplet]:
    rows = []
    for lineno, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserInputError(f"{meta}:{lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise UserInputError(f"{meta}:{lineno}: expected a JSON object per line")
        row = metadata_row(row)
        missing = [c for c in (columns.input_image, columns.edit_prompt, columns.edited_image) if c not in row]
        if missing:
            raise UserInputError(f"{meta}:{lineno}: missing column(s) {missing} (see the *_column flags; image "
                                 f"columns may also be given as <column>{FILE_NAME_SUFFIX})")
        rows.append(Triplet(meta.parent / row[columns.input_image], str(row[columns.edit_prompt]),
                            meta.parent / row[columns.edited_image]))
    return rows


def read_generated_layout(folder: Path) -> list[Triplet]:
    """The InstructPix2Pix generated dataset: per-prompt folders, one triplet per seed."""
    rows = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        prompt_file = sub / "prompt.json"
        if not prompt_file.is_file():
            continue
        try:
            edit = json.loads(prompt_file.read_text(encoding="utf-8"))["edit"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise UserInputError(f"{prompt_file}: expected a JSON object with an 'edit' field ({err})") from None
        for first in sorted(sub.glob("*_0.jpg")):
            second = first.with_name(first.name[:-len("_0.jpg")] + "_1.jpg")
            if second.is_file():
                rows.append(Triplet(first, str(edit), second))
    return rows


def read_hf_dataset(name: str, columns: Columns, split: str = "train", config_name: str | None = None,
                    cache_dir: str | None = None) -> list[Triplet]:
    """A `save_to_disk` folder or a hub dataset (offline: from the `datasets` cache, else one line)."""
    try:
        import datasets
    except ImportError:
        raise UserInputError("--dataset_name needs the `datasets` package (pip install datasets)") from None
    path = Path(name)
    try:
        if path.is_dir():
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(name, config_name, cache_dir=cache_dir)
    except (FileNotFoundError, ConnectionError, OSError, ValueError) as err:
        hint = (" (not in the datasets cache and the hub cannot be reached: offline or no network; use a "
                "save_to_disk folder or --train_data_dir)") if not path.exists() else ""
        raise UserInputError(f"--dataset_name {name}: cannot load{hint}: {' '.join(str(err).split())[:300]}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise UserInputError(f"--dataset_name {name}: no '{split}' split (has {list(ds)})")
        ds = ds[split]
    missing = [c for c in (columns.input_image, columns.edit_prompt, columns.edited_image) if c not in ds.column_names]
    if missing:
        raise UserInputError(f"--dataset_name {name}: missing column(s) {missing}; columns are {ds.column_names} "
                             "(see --original_image_column / --edit_prompt_column / --edited_image_column)")
    prompts = ds[columns.edit_prompt]  # only the text column is read up front; images decode on use
    return [Triplet(DatasetCell(ds, i, columns.input_image), str(prompt), DatasetCell(ds, i, columns.edited_image))
            for i, prompt in enumerate(prompts)]


def read_triplets(dataset_name: str | None = None, train_data_dir: str | None = None,
                  columns: Columns | None = None, dataset_config_name: str | None = None,
                  cache_dir: str | None = None) -> list[Triplet]:
    """Dispatch on what the user gave; the folder layout is recognised by its files."""
    columns = columns or Columns()
    if dataset_name is not None:
        rows = read_hf_dataset(dataset_name, columns, config_name=dataset_config_name, cache_dir=cache_dir)
        source = f"--dataset_name {dataset_name}"
    else:
        folder = Path(train_data_dir)
        if not folder.is_dir():
            raise UserInputError(f"--train_data_dir {train_data_dir}: not a folder")
        if next(folder.rglob("metadata.jsonl"), None) is not None:
            rows = read_metadata_folder(folder, columns)
        else:
            rows = read_generated_layout(folder)
        source = f"--train_data_dir {train_data_dir}"
    if not rows:
        raise UserInputError(f"{source}: no triplets found (expected metadata.jsonl, per-prompt folders with "
                             "prompt.json and <seed>_0.jpg/<seed>_1.jpg, or a datasets folder)")
    return rows


def load_validation_image(spec: str) -> Image.Image:
    """--validation_image / --val_image_url: a local path, or an http(s) URL fetched now (before any work)."""
    if not spec.startswith(("http://", "https://")):
        return load_image(spec)
    from diffusers.utils import load_image as load_url
    try:
        return load_url(spec).convert("RGB")
    except Exception as err:  # noqa: BLE001 - requests / PIL errors come in many types
        raise UserInputError(f"--val_image_url {spec}: cannot download ({type(err).__name__}; offline or no "
                             "network?); give a local image path instead") from None


def to_pil(source: Any) -> Image.Image:
    """Any image source a triplet may hold -> RGB PIL."""
    if isinstance(source, DatasetCell):
        source = source.load()
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, dict):  # datasets Image feature without decoding
        if source.get("bytes"):
            return Image.open(io.BytesIO(source["bytes"])).convert("RGB")
        source = source.get("path")
    return load_image(source)


# --- transform -----------------------------------------------------------------------------------------

def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """Aspect-preserving resize so the shorter side is `size`."""
    w, h = img.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    return img if new == (w, h) else img.resize(new, Image.BICUBIC)


def to_uint8_pair(triplet: Triplet, resolution: int) -> torch.Tensor:
    """(2, 3, H, W) uint8: input and edited image, aligned (edited resized to the input's size)."""
    first = to_pil(triplet.input_image)
    second = to_pil(triplet.edited_image)
    if second.size != first.size:
        second = second.resize(first.size, Image.BICUBIC)
    first, second = resize_shorter(first, resolution), resize_shorter(second, resolution)
    return torch.from_numpy(np.stack([np.asarray(first), np.asarray(second)])).permute(0, 3, 1, 2).contiguous()


def crop_flip_params(h: int, w: int, resolution: int, center: bool, flip: bool,
                     rng: random.Random) -> tuple[int, int, bool]:
    """(top, left, flipped) for an H x W image: the draws joint_crop_flip makes (the latent cache replays them)."""
    if center:
        top, left = (h - resolution) // 2, (w - resolution) // 2
    else:
        top, left = rng.randint(0, h - resolution), rng.randint(0, w - resolution)
    return top, left, flip and rng.random() < 0.5


def joint_crop_flip(pair: torch.Tensor, resolution: int, center: bool, flip: bool,
                    rng: random.Random) -> torch.Tensor:
    """Same crop window and same flip for both images of a (2, 3, H, W) pair."""
    top, left, flipped = crop_flip_params(*pair.shape[-2:], resolution, center, flip, rng)
    pair = pair[..., top:top + resolution, left:left + resolution]
    return pair.flip(-1) if flipped else pair


class EditDataset(torch.utils.data.Dataset):
    """Training items {"input_pixels", "edited_pixels": (3, R, R) in [-1, 1], "input_ids": (L,)}."""

    def __init__(self, triplets: list[Triplet], tokenizer, resolution: int, center_crop: bool = False,
                 random_flip: bool = False, cache: str = "auto", seed: int | None = None):
        self.triplets = triplets
        # crops / flips are drawn from (seed, epoch, index); None: a seed drawn from torch's RNG
        self.seed = int(torch.randint(0, 2**31 - 1, (1,))) if seed is None else seed
        self.epoch = 0
        self.resolution = resolution
        self.center_crop, self.random_flip = center_crop, random_flip
        self.input_ids = tokenize_prompts(tokenizer, [t.edit_prompt for t in triplets])
        estimate = len(triplets) * 2 * 3 * resolution * resolution * 1.5
        self.cached = cache == "always" or (cache == "auto" and estimate <= CACHE_BUDGET_BYTES)
        self._pairs = [to_uint8_pair(t, resolution) for t in triplets] if self.cached else None

    def __len__(self) -> int:
        return len(self.triplets)

    def pair(self, index: int) -> torch.Tensor:
        return self._pairs[index] if self.cached else to_uint8_pair(self.triplets[index], self.resolution)

    def set_epoch(self, epoch: int) -> None:
        """accelerate's loader calls this every epoch (and on a resumed, batch-skipping loader)."""
        self.epoch = epoch

    def rng(self, index: int) -> random.Random:
        """The crop / flip draws of item `index` this epoch."""
        return random.Random(f"{self.seed}/{self.epoch}/{index}")

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        # A pure function of (seed, epoch, index), not of the global RNG: the loader prefetches a batch ahead, so
        # global draws would interleave with the training step's and a resumed run could not redraw the same ones
        pair = joint_crop_flip(self.pair(index), self.resolution, self.center_crop, self.random_flip,
                               self.rng(index))
        pixels = pair.float() / 127.5 - 1.0
        return {"input_pixels": pixels[0], "edited_pixels": pixels[1], "input_ids": self.input_ids[index]}


def tokenize_prompts(tokenizer, prompts: list[str]) -> torch.Tensor:
    """(N, model_max_length) ids padded to the tokenizer's own length; truncation reported once."""
    limit = tokenizer.model_max_length
    full = tokenizer(prompts, truncation=False, padding=False).input_ids
    too_long = sum(len(ids) > limit for ids in full)
    if too_long:
        logger.warning("%d of %d instructions exceed the tokenizer's %d tokens and were truncated",
                       too_long, len(prompts), limit)
    return tokenizer(prompts, truncation=True, padding="max_length", max_length=limit,
                     return_tensors="pt").input_ids


def image_batches(dataset: EditDataset, pairs_per_batch: int, generator: torch.Generator,
                  crop: int | None = None) -> Iterator[torch.Tensor]:
    """Endless batches of single images (inputs and edited alike, 2 per pair) for VAE pre-training,
    optionally randomly cropped to `crop` px."""
    while True:
        order = torch.randperm(len(dataset), generator=generator).tolist()
        for start in range(0, len(order), pairs_per_batch):
            items = [dataset[i] for i in order[start:start + pairs_per_batch]]
            images = torch.stack([x for it in items for x in (it["input_pixels"], it["edited_pixels"])])
            if crop is not None and crop < images.shape[-1]:
                top, left = (int(v) for v in torch.randint(0, images.shape[-1] - crop + 1, (2,), generator=generator))
                images = images[..., top:top + crop, left:left + crop]
            yield images
