"""Make a paired sketch -> photo training set from a photo folder:
    python -m stylize_gan.make_sketches --input photos/ --output pairs/ --method xdog
then  python train_gan.py --mode paired --data-dir pairs/"""
from __future__ import annotations

from dataclasses import dataclass

from common.cli import OneLineErrorParser
from common.errors import cli_errors

from .sketches import SKETCHERS, make_paired_set


@dataclass
class SketchConfig:
    input: str                # folder of photos
    output: str               # gets A/ (sketches) and B/ (photos)
    method: str = "xdog"      # canny or xdog
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.method not in SKETCHERS:
            raise ValueError(f"--method: unknown {self.method!r} (valid: {', '.join(sorted(SKETCHERS))})")


def parse_args(argv: list[str] | None = None) -> SketchConfig:
    p = OneLineErrorParser(prog="python -m stylize_gan.make_sketches", description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--method", choices=sorted(SKETCHERS), default="xdog")
    p.add_argument("--overwrite", action="store_true")
    return SketchConfig(**vars(p.parse_args(argv)))


def main(config: SketchConfig) -> int:
    return make_paired_set(config.input, config.output, config.method, config.overwrite)


@cli_errors
def cli(argv: list[str] | None = None) -> int:
    count = main(parse_args(argv))
    print(f"wrote {count} pairs")
    return count


if __name__ == "__main__":
    cli()
