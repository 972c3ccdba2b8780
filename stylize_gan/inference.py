"""Stylize images, folders and videos with a trained generator, at any size.

Images larger than `tile` are processed in overlapping tiles blended with linear ramps. The generator's
normalization layers use image statistics, which would differ from tile to tile and show as seams; so the
statistics are first recorded on the whole image (downscaled to at most `stats_size` pixels per side) and every
tile reuses them. Images up to `stats_size` therefore tile to the same result as one pass, up to border effects.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from common.checkpoints import atomic_write
from common.errors import UserInputError
from common.images import (IMAGE_EXTS, PROCESS_MAX_PIXELS, VIDEO_EXTS, check_output_path, folder_targets,
                           load_image_capped, pil_to_tensor, save_image, tensor_to_pil)

from .networks import set_norm_mode

STATS_SIZE = 1024  # longest side of the copy on which tiled inference measures normalization statistics
UNTILED_MAX_SIDE = 2048  # longest side run in one pass by generators that cannot be tiled (animegan.py)
FOURCC = {".mp4": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID", ".webm": "VP80"}


def _tile_starts(length: int, tile: int, overlap: int, multiple: int) -> list[int]:
    """Tile origins covering [0, length), neighbours sharing at least `overlap` pixels. Origins are multiples of
    the generator's stride (2**depth) so every tile sees the same down-sampling grid as the whole image; the last
    tile may be shorter than `tile` and then ends exactly where the image ends (same padding as one pass)."""
    if length <= tile:
        return [0]
    stride = max(multiple, (tile - overlap) // multiple * multiple)
    last = -(-(length - tile) // multiple) * multiple  # first aligned origin whose tile reaches the end
    return list(range(0, last, stride)) + [last]


def _ramp(length: int, overlap: int, fade_start: bool, fade_end: bool) -> torch.Tensor:
    """1-D blending weight of a tile: a raised-cosine rise from 0 over `overlap` pixels on each side that has a
    neighbouring tile (tile borders see padding, not image, so they get no say), flat 1 on image borders."""
    weight = torch.ones(length)
    rise = 0.5 - 0.5 * torch.cos(torch.linspace(0, torch.pi, min(overlap, length)))  # (overlap,) 0 -> 1
    if fade_start:
        weight[:len(rise)] = torch.minimum(weight[:len(rise)], rise)
    if fade_end:
        weight[-len(rise):] = torch.minimum(weight[-len(rise):], rise.flip(0))
    return weight


def _stylize_untiled(generator: nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One pass for generators whose normalisation is whole-image (tiles would each see other statistics):
    above UNTILED_MAX_SIDE the image is stylized at that size and resized back, with a notice."""
    h, w = x.shape[-2:]
    scale = UNTILED_MAX_SIDE / max(h, w)
    if scale >= 1:
        return generator(x.to(device)).float().cpu()
    small = (max(1, round(h * scale)), max(1, round(w * scale)))
    warnings.warn(f"{w}x{h} image: {type(generator).__name__} normalises over the whole image and cannot be tiled; "
                  f"stylizing it at {small[1]}x{small[0]} and resizing the result back", stacklevel=4)
    y = generator(F.interpolate(x, size=small, mode="area").to(device)).float().cpu()
    return F.interpolate(y, size=(h, w), mode="bicubic", align_corners=False).clamp(-1, 1)


@torch.no_grad()
def stylize_tensor(generator: nn.Module, x: torch.Tensor, tile: int = 1024, overlap: int = 64,
                   stats_size: int = STATS_SIZE) -> torch.Tensor:
    """(1, 3, H, W) in [-1, 1] -> (1, 3, H, W) in [-1, 1] on the CPU, tiled when H or W exceeds `tile`."""
    if tile < 2 * overlap + 16:
        raise ValueError(f"tile ({tile}) must be at least 2 * overlap ({overlap}) + 16")
    param = next(generator.parameters(), None)  # an onnxruntime generator has none
    device = param.device if param is not None else torch.device("cpu")
    generator.eval()
    h, w = x.shape[-2:]
    if not getattr(generator, "tileable", True):
        return _stylize_untiled(generator, x, device)
    if h <= tile and w <= tile:
        return generator(x.to(device)).float().cpu()
    scale = min(1.0, stats_size / max(h, w))
    # explicit size: a scale factor would round a very thin image's short side down to 0 pixels
    thumb = x if scale == 1.0 else F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))),
                                                 mode="area")
    multiple = getattr(generator, "multiple", 1)
    if tile % multiple:
        raise ValueError(f"tile ({tile}) must be a multiple of the generator stride {multiple}")
    out = torch.zeros(1, 3, h, w)
    weight = torch.zeros(1, 1, h, w)
    try:
        set_norm_mode(generator, "record")
        generator(thumb.to(device))
        set_norm_mode(generator, "frozen")
        for top in _tile_starts(h, tile, overlap, multiple):
            for left in _tile_starts(w, tile, overlap, multiple):
                patch = x[..., top:top + tile, left:left + tile]
                y = generator(patch.to(device)).float().cpu()
                th, tw = y.shape[-2:]
                wgt = (_ramp(th, overlap, top > 0, top + th < h)[:, None]
                       * _ramp(tw, overlap, left > 0, left + tw < w)[None, :])  # (th, tw)
                out[..., top:top + th, left:left + tw] += y * wgt
                weight[..., top:top + th, left:left + tw] += wgt
    finally:
        set_norm_mode(generator, "normal")
    return out / weight


def stylize_pil(generator: nn.Module, img: Image.Image, tile: int = 1024, overlap: int = 64) -> Image.Image:
    """Stylize one image; the result has exactly the input's size (odd sizes and 1x1 included)."""
    x = pil_to_tensor(img.convert("RGB"))[None]
    return tensor_to_pil(stylize_tensor(generator, x, tile, overlap)[0])


def _stylize_file(generator: nn.Module, src: Path, dst: Path, tile: int, overlap: int) -> None:
    image = load_image_capped(src, None, PROCESS_MAX_PIXELS)[0]  # refused before decoding when too large
    save_image(stylize_pil(generator, image, tile, overlap), dst)


def _stylize_folder(generator: nn.Module, src: Path, dst: Path, overwrite: bool, tile: int, overlap: int) -> list[Path]:
    images, targets = zip(*folder_targets(src, dst))
    clashes = [str(t) for t in targets if t.exists()]
    if clashes and not overwrite:
        raise UserInputError(f"{clashes[0]}: already exists ({len(clashes)} file(s); pass --overwrite to replace)")
    dst.mkdir(parents=True, exist_ok=True)
    done, failed = [], []
    for path, target in tqdm(list(zip(images, targets)), desc="stylize", unit="img", disable=len(images) < 2):
        try:
            _stylize_file(generator, path, target, tile, overlap)
            done.append(target)
        except UserInputError as err:
            failed.append(str(err))
    if failed:
        warnings.warn(f"skipped {len(failed)} unreadable image(s): " + "; ".join(failed[:5]), stacklevel=3)
    if not done:
        raise UserInputError(f"{src}: none of the images could be read ({failed[0]})")
    return done


def _stylize_video(generator: nn.Module, src: Path, dst: Path, tile: int, overlap: int) -> None:
    """Frame by frame through OpenCV; written to a temp file then renamed (audio is not copied)."""
    cap = cv2.VideoCapture(str(src))
    if not cap.isOpened():
        raise UserInputError(f"{src}: not a readable video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None

    def write(tmp: str) -> None:
        tmp_video = tmp + dst.suffix  # OpenCV picks the container from the extension
        writer, count = None, 0
        try:
            for _ in tqdm(range(frames or 10**9), desc="stylize video", unit="frame", total=frames):
                ok, bgr = cap.read()
                if not ok:
                    break
                out = stylize_pil(generator, Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), tile, overlap)
                if writer is None:
                    writer = cv2.VideoWriter(tmp_video, cv2.VideoWriter_fourcc(*FOURCC[dst.suffix.lower()]), fps,
                                             out.size)
                    if not writer.isOpened():
                        raise UserInputError(f"{dst}: OpenCV cannot write {dst.suffix} video here")
                writer.write(cv2.cvtColor(np.asarray(out), cv2.COLOR_RGB2BGR))
                count += 1
        finally:
            if writer is not None:
                writer.release()
        if count == 0:
            raise UserInputError(f"{src}: video has no readable frames")
        os.replace(tmp_video, tmp)

    try:
        atomic_write(dst, write)
    finally:
        cap.release()
        for leftover in dst.parent.glob(f".{dst.name}.*.tmp{dst.suffix}"):
            leftover.unlink()


def stylize_path(generator: nn.Module, input: str | os.PathLike, output: str | os.PathLike,
                 overwrite: bool = False, tile: int = 1024, overlap: int = 64) -> list[Path]:
    """Stylize an image file, a folder of images (-> a folder) or a video (-> a video); returns the outputs.
    Never writes over the input, and over existing files only with `overwrite`."""
    src, dst = Path(input), Path(output)
    if not src.exists():
        raise UserInputError(f"{src}: not found")
    if src.is_dir():
        return _stylize_folder(generator, src, dst, overwrite, tile, overlap)
    suffix = src.suffix.lower()
    if suffix in VIDEO_EXTS:
        if dst.suffix.lower() not in VIDEO_EXTS:
            raise UserInputError(f"{dst}: the input is a video; give a video output ({', '.join(VIDEO_EXTS)})")
        check_output_path(dst, [src], overwrite)
        _stylize_video(generator, src, dst, tile, overlap)
        return [dst]
    if suffix not in IMAGE_EXTS:
        raise UserInputError(f"{src}: unsupported input type {suffix!r} (images: {', '.join(IMAGE_EXTS)}; "
                             f"videos: {', '.join(VIDEO_EXTS)})")
    if dst.suffix.lower() not in IMAGE_EXTS:
        raise UserInputError(f"{dst}: the input is an image; give an image output ({', '.join(IMAGE_EXTS)})")
    check_output_path(dst, [src], overwrite)
    _stylize_file(generator, src, dst, tile, overlap)
    return [dst]
