"""Benchmark two demo-editor UNet layouts on the CPU: one denoising forward at several latent sizes for
the bundled demo/configs/editor_unet.json (four levels, attention only at 1/8 of the latent size) against
the earlier demo/configs/editor_unet_3level.json (three levels, attention at 1/4). With a factor-1 VAE
(demo/configs/editor_vae.json) the latent is as large as the image, so where attention sits decides
whether a 512 px edit takes seconds or minutes. Random weights (speed does not depend on them).
Prints a table with ratios.

    python bench/bench_editor_layout.py                    # latents of 128 and 256
    python bench/bench_editor_layout.py --sizes 128 256 512 --repeats 1
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from edit_diffusion.scratch import build_unet
from timing import best_time  # bench/timing.py (scripts run from bench/)

CONFIGS = Path(__file__).resolve().parent.parent / "demo" / "configs"


def forward_seconds(config: dict, size: int, repeats: int) -> float:
    torch.manual_seed(0)
    unet = build_unet({k: v for k, v in config.items() if not k.startswith("_")}).eval()
    latents = torch.randn(1, unet.config.in_channels, size, size)
    text = torch.randn(1, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        return best_time(lambda: unet(latents, 999, text), repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bundled = json.loads((CONFIGS / "editor_unet.json").read_text())
    earlier = json.loads((CONFIGS / "editor_unet_3level.json").read_text())
    print("| latent side | bundled 4 levels: attention at 1/8 (s) | earlier 3 levels: attention at 1/4 (s) | ratio |")
    print("|---:|---:|---:|---:|")
    for size in args.sizes:
        ours, theirs = forward_seconds(bundled, size, args.repeats), forward_seconds(earlier, size, args.repeats)
        print(f"| {size} | {ours:.3f} | {theirs:.3f} | {ours / theirs:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
