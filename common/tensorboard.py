"""One logging path for both stages: TensorBoard scalars and image grids under stable tags
(`loss/...`, `lr/...`, `images/...`), plus the same grids saved as PNG files."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision.utils as vutils

from .images import save_image, tensor_to_pil


def image_grid(columns: list[torch.Tensor], max_rows: int = 4) -> torch.Tensor:
    """Side-by-side grid: each entry of `columns` is a (B, 3, H, W) batch in [-1, 1]; row i shows
    sample i of every column (e.g. input | output | target). Returns (3, H', W') in [0, 1]."""
    rows = min(max_rows, min(c.shape[0] for c in columns))
    height, width = columns[0].shape[-2:]
    tiles = []
    for i in range(rows):
        for col in columns:
            tile = col[i].detach().float().cpu()
            if tile.shape[0] == 1:
                tile = tile.expand(3, -1, -1)
            if tile.shape[-2:] != (height, width):
                tile = torch.nn.functional.interpolate(tile[None], size=(height, width), mode="bilinear",
                                                       align_corners=False)[0]
            tiles.append(tile)
    grid = vutils.make_grid(torch.stack(tiles), nrow=len(columns), padding=2, normalize=False, pad_value=1.0)
    return ((torch.nan_to_num(grid).clamp(-1, 1) + 1) / 2)


def log_grid(writer, tag: str, grid01: torch.Tensor, step: int, save_dir: str | os.PathLike | None = None) -> None:
    """Write a [0, 1] grid to TensorBoard under `tag` and, if `save_dir` is set, as `<tag>_<step>.png`."""
    if writer is not None:
        writer.add_image(tag, grid01, global_step=step, dataformats="CHW")
    if save_dir is not None:
        name = tag.replace("/", "_") + f"_{step:07d}.png"
        save_image(tensor_to_pil(grid01 * 2 - 1), Path(save_dir) / name)


def log_scalars(writer, scalars: dict[str, float], step: int) -> None:
    """Write a dict of already-tagged scalars (`loss/...`, `lr/...`)."""
    if writer is None:
        return
    for tag, value in scalars.items():
        writer.add_scalar(tag, float(value), global_step=step)
