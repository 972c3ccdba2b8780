"""Benchmark the bundled editor's UNet layout on the CPU: one denoising forward at several image sizes for
the bundled config (demo/configs/editor_unet.json: four levels, attention only at 1/8 of the latent size)
against the same UNet with one level fewer (attention at 1/4, the previous layout). With the factor-1 VAE
the latent is as large as the image, so where attention sits decides whether a 512 px edit takes
seconds or minutes. Random weights (speed does not depend on them). Prints a table with ratios.

    python bench/bench_editor_layout.py                    # 128 and 256 px
    python bench/bench_editor_layout.py --sizes 128 256 512 --repeats 1
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from edit_diffusion.scratch import build_unet
from timing import best_time  # bench/timing.py (scripts run from bench/)

BUNDLED = Path(__file__).resolve().parent.parent / "demo" / "configs" / "editor_unet.json"


def one_level_fewer(config: dict) -> dict:
    """The same UNet without its highest-resolution level: attention moves up to 1/4 of the latent size."""
    return {**config, "block_out_channels": config["block_out_channels"][1:],
            "down_block_types": config["down_block_types"][1:], "up_block_types": config["up_block_types"][:-1]}


def forward_seconds(config: dict, size: int, repeats: int) -> float:
    torch.manual_seed(0)
    unet = build_unet({k: v for k, v in config.items() if not k.startswith("_")}).eval()
    latents = torch.randn(1, unet.config.in_channels, size, size)  # factor-1 VAE: latent side = image side
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
    bundled = json.loads(BUNDLED.read_text())
    baseline = one_level_fewer(bundled)
    print("| image px | bundled: attention at 1/8 (s) | baseline: attention at 1/4 (s) | bundled / baseline |")
    print("|---:|---:|---:|---:|")
    for size in args.sizes:
        ours, theirs = forward_seconds(bundled, size, args.repeats), forward_seconds(baseline, size, args.repeats)
        print(f"| {size} | {ours:.3f} | {theirs:.3f} | {ours / theirs:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
