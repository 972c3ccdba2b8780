"""Stylize a photo with stage 1, then edit it by an instruction with stage 2.

    python infer.py --input photo.jpg --edit "make it black and white" --output out.png
    python infer.py --app          # the local web app (see app.py for its flags)
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from chain.defaults import DEFAULT_STYLE, STYLES
from common.cli import check_fields, option, parse_config
from common.devices import resolve_device
from common.errors import UserInputError, cli_errors
from common.images import (PROCESS_MAX_PIXELS, check_output_path, folder_targets, load_image_capped,
                           refuse_shared_outputs, save_image)
from edit_diffusion.editor import EditSettings, variant_paths
from edit_diffusion.load_settings import LoadSettings


# Default cap on the long side of an input photo: stage 1 tiles any size, but a 100-megapixel photo would
# take minutes on a CPU and stage 2 edits at --resolution anyway.
MAX_SIDE = 2048


@dataclass
class InferConfig:
    input: str = option(help="image file or folder of images", aliases=("--source_file_path",))
    output: str = option(help="output image (a folder when --input is a folder)",
                         aliases=("--destination_file_path",))
    edit: str | None = option(None, "edit instruction, e.g. 'make it sepia'; required unless --skip-edit",
                              aliases=("--edit_condition",))
    gan_checkpoint: str | None = option(None, "stage-1 generator: .safetensors, a published AnimeGAN .pt / .pth or "
                                              "an .onnx (default: the bundled --style)",
                                        aliases=("--checkpoint_path",))
    style: str = option(DEFAULT_STYLE, "bundled stage-1 style", choices=tuple(sorted(STYLES)))
    editor: str | None = option(None, "stage-2 editor: pipeline folder, hub id or .safetensors/.ckpt "
                                      "(default: bundled)")
    skip_stylize: bool = option(False, "edit the input photo as it is (no stage 1)")
    skip_edit: bool = option(False, "stylize only (no stage 2)")
    save_intermediate: bool = option(False, "also write the stage-1 result as <output>_stylized.png")
    settings: EditSettings = field(default_factory=EditSettings)  # --steps, --cfg-text, ... (EditSettings' flags)
    load: LoadSettings = field(default_factory=LoadSettings)  # --device, --dtype, ... --lora (LoadSettings' flags)
    overwrite: bool = option(False, "replace existing output files")
    max_side: int = option(MAX_SIDE, "shrink larger inputs to this long side, with a notice (0: full size, tiled)",
                           ge=0, le=65535)

    def __post_init__(self):
        check_fields(self)
        if self.skip_stylize and self.skip_edit:
            raise ValueError("--skip-stylize and --skip-edit together leave nothing to do")
        if not self.skip_edit and (self.edit is None or not self.edit.strip()):
            raise ValueError("--edit: the instruction is empty; write what to change, e.g. \"make it black and white\"")
        resolve_device(self.load.device)  # an unknown or absent device fails before any work

    def edit_settings(self) -> EditSettings:
        return self.settings


def parse_args(argv: list[str] | None = None) -> InferConfig:
    """Flags from InferConfig, the edit flags from EditSettings (shared with `python -m edit_diffusion`)."""
    return parse_config(InferConfig, argv, prog="infer.py", description=__doc__.strip().splitlines()[0])


def _jobs(config: InferConfig) -> list[tuple[Path, Path]]:
    """(input, output) pairs, every output checked before any work starts."""
    src, dst = Path(config.input), Path(config.output)
    if not src.exists():
        raise UserInputError(f"{src}: file not found")
    if src.is_dir():
        pairs = folder_targets(src, dst, suffix=".png")
        refuse_shared_outputs([(image, _outputs_of(out, config)) for image, out in pairs])  # variants too
        if not dst.parent.exists():
            raise UserInputError(f"{dst.parent}: output folder does not exist")
        if not dst.exists():  # created by main() once the models are loaded: a failed run leaves nothing behind
            return pairs
    else:
        pairs = [(src, dst)]
    for image, out in pairs:
        for path in _outputs_of(out, config):  # variants and the intermediate too: refused before any work
            check_output_path(path, [image], overwrite=config.overwrite)
    return pairs


def _outputs_of(out: Path, config: InferConfig) -> list[Path]:
    """Every file one input will produce."""
    variants = 1 if config.skip_edit else config.settings.num_variants
    paths = variant_paths(out, variants)
    if config.save_intermediate and not config.skip_stylize:
        paths.append(_stylized_path(out))
    return paths


def _stylized_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}_stylized{out.suffix}")


def _load(path: Path, max_side: int):
    """The input as upright RGB, shrunk to `max_side` (0: no cap) with a notice."""
    img, (w, h) = load_image_capped(path, max_side or None, PROCESS_MAX_PIXELS)
    if img.size != (w, h):
        print(f"note: {path} is {w}x{h}; processing it at {img.width}x{img.height} "
              f"(--max-side {max_side}; --max-side 0 keeps the full size, processed in tiles)")
    return img


def main(config: InferConfig) -> list[Path]:
    """Run the chain; returns the written files."""
    from chain.pipeline import load_models, run_chain  # heavy imports after argument checks

    jobs = _jobs(config)
    single = len(jobs) == 1 and not Path(config.input).is_dir()
    first = _load(jobs[0][0], config.max_side) if single else None  # a bad image fails before the models load
    if not config.skip_edit:
        from edit_diffusion.families import preflight
        preflight(config.editor, config.settings)  # e.g. --cfg-image for Kontext: refused before loading
    models = load_models(config.gan_checkpoint, config.style, config.editor, config.skip_stylize,
                         config.skip_edit, config.load.device, config.load.dtype, config.load.compile,
                         config.load.channels_last, config.load.cpu_offload, config.load.lora)
    if not single:
        Path(config.output).mkdir(exist_ok=True)
    settings, written, skipped = config.edit_settings(), [], []
    for image_path, out in tqdm(jobs, disable=len(jobs) == 1, desc="images"):
        try:
            image = first if single else _load(image_path, config.max_side)
        except UserInputError as err:  # one unreadable photo in a folder does not stop the others
            print(f"warning: skipped {err}", file=sys.stderr)
            skipped.append(image_path)
            continue
        result = run_chain(models, image, config.edit, settings)
        if config.save_intermediate and not config.skip_stylize:
            inter = _stylized_path(out)
            save_image(result.stylized, inter)
            written.append(inter)
        outputs = result.edited or [result.stylized]
        for img, path in zip(outputs, variant_paths(out, len(outputs))):
            save_image(img, path)
            written.append(path)
    for path in written:
        print(f"wrote {path}")
    if skipped and not written:
        raise UserInputError(f"{config.input}: none of the {len(skipped)} image(s) could be read")
    return written


@cli_errors
def cli(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--app" in argv:  # `python infer.py --app [app flags]`: the local web app (app.py) instead of a batch run
        import app
        argv.remove("--app")
        return app.main(app.parse_args(argv))
    return main(parse_args(argv))


if __name__ == "__main__":
    cli()
