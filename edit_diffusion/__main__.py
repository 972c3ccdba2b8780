"""CLI: `python -m edit_diffusion --model M --input in.png --edit "make it sunny" --output out.png`."""
from __future__ import annotations

import time
from pathlib import Path

from common.cli import OneLineErrorParser
from common.errors import cli_errors
from common.images import check_output_path, load_image, save_image

from .editor import SCHEDULERS, EditSettings, edit_image, load_editor, variant_paths


def build_parser() -> OneLineErrorParser:
    p = OneLineErrorParser(prog="python -m edit_diffusion", description="Edit an image with an instruction.")
    p.add_argument("--model", required=True, help="hub id, diffusers folder, or single .ckpt/.safetensors")
    p.add_argument("--input", required=True, help="image to edit")
    p.add_argument("--edit", required=True, help="the instruction, e.g. 'make it look like winter'")
    p.add_argument("--output", required=True, help="output image; variants get -1, -2, ... suffixes")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--cfg-text", type=float, default=None, help="text guidance (default 7.5)")
    p.add_argument("--cfg-image", type=float, default=None, help="image guidance, >= 1 (default 1.5)")
    p.add_argument("--seed", type=int, default=None, help="random and printed when omitted")
    p.add_argument("--scheduler", choices=list(SCHEDULERS), default=None)
    p.add_argument("--resolution", type=int, default=512, help="cap of the long side the model runs at")
    p.add_argument("--variants", type=int, default=1)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--original_config", default=None, help="diffusers config folder for single-file models")
    return p


@cli_errors
def cli(argv: list[str] | None = None) -> list[Path]:
    args = build_parser().parse_args(argv)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging
    diffusers_logging.disable_progress_bar()  # loading bars would bury the one result line
    transformers_logging.disable_progress_bar()
    settings = EditSettings(steps=args.steps, cfg_text=args.cfg_text, cfg_image=args.cfg_image, seed=args.seed,
                            scheduler=args.scheduler, resolution=args.resolution, num_variants=args.variants)
    image = load_image(args.input)
    paths = [check_output_path(p, [args.input], args.overwrite) for p in variant_paths(args.output, args.variants)]
    pipe = load_editor(args.model, device=args.device, original_config=args.original_config)
    start = time.perf_counter()
    outputs, used = edit_image(pipe, image, args.edit, settings)
    for img, path in zip(outputs, paths):
        save_image(img, path)
    print(f"edited in {time.perf_counter() - start:.1f}s: steps={used.steps} cfg_text={used.cfg_text} "
          f"cfg_image={used.cfg_image} scheduler={used.scheduler} seed={used.seed} -> "
          + ", ".join(str(p) for p in paths))
    return paths


if __name__ == "__main__":
    cli()
