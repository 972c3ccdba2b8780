"""CLI: `python -m edit_diffusion --model M --input in.png --edit "make it sunny" --output out.png`."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from common.cli import option, parse_config
from common.errors import cli_errors
from common.images import check_output_path, load_image, save_image

from .families import preflight
from .editor import EditSettings, load_editor, variant_paths
from .load_settings import LoadSettings


@dataclass
class EditCliConfig:
    model: str = option(help="hub id, diffusers folder, or single .ckpt/.safetensors")
    input: str = option(help="image to edit")
    edit: str = option(help="the instruction, e.g. 'make it look like winter'")
    output: str = option(help="output image; variants get -1, -2, ... suffixes")
    settings: EditSettings = field(default_factory=EditSettings)  # --steps, --cfg-text, ... (shared with infer.py)
    overwrite: bool = option(False, "replace existing output files")
    load: LoadSettings = field(default_factory=LoadSettings)  # --device, --dtype, ... --lora (LoadSettings' flags)
    original_config: str | None = option(None, "diffusers config folder for single-file models",
                                         flag="--original_config")


def parse_args(argv: list[str] | None = None) -> EditCliConfig:
    return parse_config(EditCliConfig, argv, prog="python -m edit_diffusion",
                        description="Edit an image with an instruction.")


@cli_errors
def cli(argv: list[str] | None = None) -> list[Path]:
    config = parse_args(argv)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging
    diffusers_logging.disable_progress_bar()  # loading bars would bury the one result line
    transformers_logging.disable_progress_bar()
    image = load_image(config.input)
    paths = [check_output_path(p, [config.input], config.overwrite)
             for p in variant_paths(config.output, config.settings.num_variants)]
    preflight(config.model, config.settings)  # flags the editor's family has no use for: refused before loading
    editor = load_editor(config.model, config.load.device, config.load.dtype, config.original_config,
                         **config.load.editor_kwargs())
    start = time.perf_counter()
    outputs, used = editor.edit(image, config.edit, config.settings)
    for img, path in zip(outputs, paths):
        save_image(img, path)
    print(f"edited in {time.perf_counter() - start:.1f}s: steps={used.steps} cfg_text={used.cfg_text} "
          f"cfg_image={used.cfg_image} scheduler={used.scheduler} seed={used.seed} -> "
          + ", ".join(str(p) for p in paths))
    return paths


if __name__ == "__main__":
    cli()
