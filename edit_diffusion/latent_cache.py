"""Cached conditioning for the UNet phase: the frozen VAE and (when frozen) the text encoder are deterministic
functions of the training data, so each image view is encoded once and each distinct instruction once, and
every step trains from the cache. Per item and view (flip orientation when --random_flip):

- `image_latents` (C, h, w): the input image's unscaled `latent_dist.mode()` (what the stock recipe conditions on);
- `edited_mean` / `edited_std` (C, h, w): the edited image's posterior, sampled every step as `latent_dist.sample()`
  would (mean + std * N(0, 1)); AutoencoderTiny has no posterior: its latents are stored in `edited_mean`, no std;
- `text_hidden` (P, L, D) per distinct instruction plus `null_hidden` (1, L, D) for the empty prompt (text dropout),
  with `prompt_index` (N,); absent when the text encoder is trained (it then runs on the ids every step).

The cache is one safetensors file under `<output_dir>/latent_cache/`, named by a hash of the model weights, the
resolution / crop / flip settings and the decoded training pixels and ids: written once per run by the main process
(streamed row by row, so it may exceed memory), reused by resumes and by the other ranks, rebuilt when anything
hashed changes. It is read into memory when it fits MEMORY_BUDGET_BYTES, memory-mapped otherwise.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import time
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from common.checkpoints import atomic_write

from .data import EditDataset, crop_flip_params
from .scratch import decoder_modules
from .step import encode_text

logger = logging.getLogger(__name__)
CACHE_FOLDER = "latent_cache"       # <output_dir>/<this>: training data, not part of the saved pipeline
CACHE_VERSION = "2"              # bump when the layout or the encoding recipe changes
MEMORY_BUDGET_BYTES = 2 * 1024**3  # above this the file is memory-mapped instead of read into memory
ENCODE_BATCH = 16                # image views per VAE call while building
SAFETENSORS_DTYPES = {torch.float32: "F32", torch.int64: "I64"}


# --- what can be cached ------------------------------------------------------------------------------------------

def cache_skip_reason(dataset: EditDataset) -> str | None:
    """None when every item's crop window is fixed (centre crops, or pairs already at the resolution), so an
    item has at most two views (flips); else the reason the cache cannot apply."""
    if dataset.center_crop:
        return None
    res = dataset.resolution
    loose = sum(tuple(dataset.pair(i).shape[-2:]) != (res, res) for i in range(len(dataset)))
    if loose:
        return (f"random crops: {loose} of {len(dataset)} image pairs are larger than --resolution {res} after "
                "the resize, so their crop window changes every epoch (cache them with --center_crop or square "
                "images)")
    return None


def views(dataset: EditDataset) -> tuple[bool, ...]:
    """The flip orientations an item can take: (unflipped,) or (unflipped, flipped)."""
    return (False, True) if dataset.random_flip else (False,)


def view_pixels(dataset: EditDataset, index: int, flipped: bool) -> torch.Tensor:
    """(2, 3, R, R) in [-1, 1]: the input and edited image of one view, as EditDataset would produce them."""
    pair = dataset.pair(index)
    top, left, _ = crop_flip_params(*pair.shape[-2:], dataset.resolution, True, False, None)
    pair = pair[..., top:top + dataset.resolution, left:left + dataset.resolution]
    return (pair.flip(-1) if flipped else pair).float() / 127.5 - 1.0


# --- identity of a cache ------------------------------------------------------------------------------------------

def _hash_module(digest, module, skip: tuple[str, ...] = ()) -> None:
    digest.update(type(module).__name__.encode())
    for name, tensor in sorted(module.state_dict().items()):
        if name.startswith(skip):
            continue
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def _decoder_prefixes(vae) -> tuple[str, ...]:
    """State-dict prefixes of the VAE's decoder side: no cached tensor depends on them, so a decoder-only
    fine-tune (--vae_train_decoder_only) keeps the cache."""
    decoders = decoder_modules(vae)
    return tuple(f"{name}." for name, child in vae.named_children() if any(child is d for d in decoders))


def fingerprint(vae, text_encoder, dataset: EditDataset, null_ids: torch.Tensor) -> str:
    """sha256 of everything a cached tensor depends on: weights (the VAE's encoder side only), resolution / crop /
    flips, pixels, ids."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": CACHE_VERSION, "resolution": dataset.resolution,
                              "center_crop": dataset.center_crop, "views": views(dataset),
                              "text": text_encoder is not None}).encode())
    _hash_module(digest, vae, skip=_decoder_prefixes(vae))
    if text_encoder is not None:
        _hash_module(digest, text_encoder)
    for i in range(len(dataset)):
        digest.update(dataset.pair(i).numpy().tobytes())
    digest.update(dataset.input_ids.numpy().tobytes())
    digest.update(null_ids.numpy().tobytes())
    return digest.hexdigest()


# --- building --------------------------------------------------------------------------------------------------

@torch.no_grad()
def encode_views(vae, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B, 2, 3, R, R) views -> float32 {"image_latents", "edited_mean"[, "edited_std"]} of (B, C, h, w)."""
    batch = pixels.shape[0]
    device = next(vae.parameters()).device
    flat = torch.cat([pixels[:, 0], pixels[:, 1]]).to(device=device, dtype=vae.dtype)
    encoded = vae.encode(flat)
    if not hasattr(encoded, "latent_dist"):  # AutoencoderTiny: deterministic latents
        latents = encoded.latents.float()
        return {"image_latents": latents[:batch], "edited_mean": latents[batch:]}
    dist = encoded.latent_dist
    return {"image_latents": dist.mode()[:batch].float(), "edited_mean": dist.mean[batch:].float(),
            "edited_std": dist.std[batch:].float()}


class StreamingSafetensors:
    """Writes a safetensors file whose tensor shapes are known up front, rows at a time (the file can exceed
    memory). Layout per the safetensors spec: u64 header length, JSON header (offsets relative to the data),
    then the tensors' bytes back to back."""

    def __init__(self, path: str, shapes: dict[str, tuple[tuple[int, ...], torch.dtype]], metadata: dict[str, str]):
        header, offset = {"__metadata__": metadata}, 0
        self.offsets, self.row_bytes = {}, {}
        for name, (shape, dtype) in shapes.items():
            size = torch.tensor([], dtype=dtype).element_size()
            self.row_bytes[name] = size * int(torch.Size(shape[1:]).numel())
            nbytes = self.row_bytes[name] * shape[0]
            header[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(shape),
                            "data_offsets": [offset, offset + nbytes]}
            self.offsets[name] = offset
            offset += nbytes
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)  # the spec pads the header to 8-byte alignment
        self.data_start = 8 + len(text)
        self.file = open(path, "wb")
        self.file.write(struct.pack("<Q", len(text)) + text)
        self.file.truncate(self.data_start + offset)

    def write_rows(self, name: str, first_row: int, rows: torch.Tensor) -> None:
        self.file.seek(self.data_start + self.offsets[name] + first_row * self.row_bytes[name])
        self.file.write(rows.detach().cpu().contiguous().numpy().tobytes())

    def close(self) -> None:
        self.file.close()


def _shapes(vae, text_encoder, dataset: EditDataset, prompts: int) -> dict:
    """Tensor name -> (shape, dtype) of a cache; one view is encoded to learn the latent shape."""
    probe = encode_views(vae, view_pixels(dataset, 0, False)[None])
    rows = len(dataset) * len(views(dataset))
    shapes = {name: ((rows, *t.shape[1:]), torch.float32) for name, t in probe.items()}
    if text_encoder is not None:
        length, hidden = dataset.input_ids.shape[1], text_encoder.config.hidden_size
        shapes.update(text_hidden=((prompts, length, hidden), torch.float32),
                      null_hidden=((1, length, hidden), torch.float32),
                      prompt_index=((len(dataset),), torch.int64))
    return shapes


def cache_bytes(shapes: dict) -> int:
    return sum(torch.Size(shape).numel() * torch.tensor([], dtype=dtype).element_size()
               for shape, dtype in shapes.values())


@torch.no_grad()
def write_cache(path: str, vae, text_encoder, dataset: EditDataset, null_ids: torch.Tensor,
                shapes: dict, metadata: dict[str, str]) -> None:
    """Encode every view of every item (row = index * views + flipped) and every distinct instruction."""
    writer = StreamingSafetensors(path, shapes, metadata)
    try:
        flips = views(dataset)
        keys = [(i, f) for i in range(len(dataset)) for f in flips]
        for start in range(0, len(keys), ENCODE_BATCH):
            chunk = keys[start:start + ENCODE_BATCH]
            pixels = torch.stack([view_pixels(dataset, i, f) for i, f in chunk])
            for name, rows in encode_views(vae, pixels).items():
                writer.write_rows(name, start, rows)
        if text_encoder is not None:
            distinct, index = torch.unique(dataset.input_ids, dim=0, return_inverse=True)  # (P, L), (N,)
            device = next(text_encoder.parameters()).device
            for start in range(0, len(distinct), ENCODE_BATCH):
                ids = distinct[start:start + ENCODE_BATCH].to(device)
                writer.write_rows("text_hidden", start, encode_text(text_encoder, ids).float())
            writer.write_rows("null_hidden", 0, encode_text(text_encoder, null_ids[None].to(device)).float())
            writer.write_rows("prompt_index", 0, index)
    finally:
        writer.close()


# --- reading ---------------------------------------------------------------------------------------------------

class LatentStore:
    """Rows of a cache file, from memory or memory-mapped (opened lazily, so loader workers reopen it)."""

    def __init__(self, path: str | os.PathLike, in_memory: bool):
        self.path, self.in_memory = str(path), in_memory
        self.tensors = load_file(self.path) if in_memory else None
        self._handle = None
        with safe_open(self.path, framework="pt") as f:
            self.names = set(f.keys())

    def row(self, name: str, index: int) -> torch.Tensor:
        if self.tensors is not None:
            return self.tensors[name][index]
        if self._handle is None:
            self._handle = safe_open(self.path, framework="pt")
        return self._handle.get_slice(name)[index]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None}


class CachedEditDataset(torch.utils.data.Dataset):
    """EditDataset's items from the cache: the same (seed, epoch, index) flip draws, latents instead of pixels:
    {"image_latents", "latent_mean"[, "latent_std"]: (C, h, w), "encoder_hidden_states": (L, D) | "input_ids": (L,)}."""

    def __init__(self, base: EditDataset, store: LatentStore):
        self.base, self.store = base, store
        self.flips = len(views(base))

    def __len__(self) -> int:
        return len(self.base)

    @property
    def seed(self) -> int:
        return self.base.seed

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        res = self.base.resolution  # cached items are res x res before the crop: the same draws as EditDataset
        _, _, flipped = crop_flip_params(res, res, res, self.base.center_crop, self.base.random_flip,
                                         self.base.rng(index))
        row = index * self.flips + int(flipped)
        item = {"image_latents": self.store.row("image_latents", row),
                "latent_mean": self.store.row("edited_mean", row)}
        if "edited_std" in self.store.names:
            item["latent_std"] = self.store.row("edited_std", row)
        if "text_hidden" in self.store.names:
            item["encoder_hidden_states"] = self.store.row("text_hidden", int(self.store.row("prompt_index", index)))
        else:
            item["input_ids"] = self.base.input_ids[index]
        return item

    def null_text(self) -> torch.Tensor | None:
        """(1, L, D) empty-prompt embedding for text dropout, or None when text is not cached."""
        return self.store.row("null_hidden", slice(0, 1)) if "null_hidden" in self.store.names else None


# --- the trainer's entry point -------------------------------------------------------------------------------------

def open_latent_cache(dataset: EditDataset, vae, text_encoder, null_ids: torch.Tensor, folder: Path,
                      max_bytes: float, is_main: bool, barrier: Callable[[], None]) -> CachedEditDataset | None:
    """The cached dataset, building the cache file first when the main process has none for this hash;
    None (with the reason logged) when it does not apply. `text_encoder` is None when it is being trained."""
    reason = cache_skip_reason(dataset)
    if reason is not None:
        logger.warning("latent cache off (%s); the VAE encodes every batch", reason)
        return None
    if text_encoder is not None:
        text_encoder.eval()  # frozen: the same forward pass as the uncached step
    prompts = len(torch.unique(dataset.input_ids, dim=0)) if text_encoder is not None else 0
    shapes = _shapes(vae, text_encoder, dataset, prompts)
    nbytes = cache_bytes(shapes)
    if nbytes > max_bytes:
        logger.warning("latent cache off: it would take %.2f GB, above --latent_cache_max_gb %.2f; the VAE encodes "
                       "every batch", nbytes / 1e9, max_bytes / 1e9)
        return None
    path = folder / f"latents-{fingerprint(vae, text_encoder, dataset, null_ids)[:20]}.safetensors"
    if is_main and not path.is_file():
        for stale in folder.glob("latents-*.safetensors"):  # built for other weights / data / settings
            stale.unlink()
        start = time.perf_counter()
        atomic_write(path, lambda tmp: write_cache(tmp, vae, text_encoder, dataset, null_ids, shapes,
                                                   {"version": CACHE_VERSION}))
        logger.warning("latent cache built in %.1f s: %d items x %d views%s, %.1f MB at %s",
                       time.perf_counter() - start, len(dataset), len(views(dataset)),
                       f", {prompts} distinct instructions" if prompts else "", nbytes / 1e6, path)
    barrier()  # the other ranks read the main process's file
    in_memory = nbytes <= MEMORY_BUDGET_BYTES
    logger.warning("latent cache: %s (%s)", path, "in memory" if in_memory else "memory-mapped")
    return CachedEditDataset(dataset, LatentStore(path, in_memory))
