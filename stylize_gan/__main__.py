"""Stylize with a trained generator:
    python -m stylize_gan --checkpoint generator.safetensors --input photo.jpg --output out.png
Input may be an image, a folder of images (output: a folder) or a video (output: a video)."""
from __future__ import annotations

from dataclasses import dataclass

from common.cli import check_fields, option, parse_config
from common.devices import device_option, resolve_device
from common.errors import cli_errors


@dataclass
class StylizeConfig:
    checkpoint: str = option(help="generator: .safetensors written by train_gan.py, a published AnimeGAN .pt / "
                                  ".pth, or an .onnx generator (AnimeGANv3, export_onnx.py)")
    input: str = option(help="image, folder or video")
    output: str = option(help="image, folder or video (same kind as the input)")
    overwrite: bool = option(False, "replace existing output files (never the input)")
    device: str = device_option()
    tile: int = option(1024, "images larger than this are processed in overlapping tiles (memory grows with its "
                                   "square)", ge=16, le=2048)
    overlap: int = option(64, "pixels shared by neighbouring tiles", ge=0, le=4096)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.tile < 2 * self.overlap + 16:
            raise ValueError(f"--tile must be at least 2 * --overlap + 16, got {self.tile} and {self.overlap}")


def parse_args(argv: list[str] | None = None) -> StylizeConfig:
    return parse_config(StylizeConfig, argv, prog="python -m stylize_gan",
                        description="Stylize images, folders or videos.")


def main(config: StylizeConfig) -> list[str]:
    """Returns the written output paths."""
    from .checkpoint import load_generator
    from .inference import stylize_path
    device = resolve_device(config.device)  # auto: CUDA, else MPS, else CPU (the generator runs in float32)
    generator = load_generator(config.checkpoint, device=device)
    outputs = stylize_path(generator, config.input, config.output, overwrite=config.overwrite,
                           tile=config.tile, overlap=config.overlap)
    return [str(p) for p in outputs]


@cli_errors
def cli(argv: list[str] | None = None) -> list[str]:
    outputs = main(parse_args(argv))
    print(f"wrote {len(outputs)} file(s)" + (f": {outputs[0]}" if len(outputs) == 1 else ""))
    return outputs


if __name__ == "__main__":
    cli()
