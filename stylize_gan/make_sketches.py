"""Make a paired sketch -> photo training set from a photo folder:
    python -m stylize_gan.make_sketches --input photos/ --output pairs/ --method xdog
then  python train_gan.py --mode paired --data-dir pairs/"""
from __future__ import annotations

from dataclasses import dataclass

from common.cli import check_fields, option, parse_config
from common.errors import cli_errors

from .sketches import SKETCHERS, make_paired_set


@dataclass
class SketchConfig:
    input: str = option(help="folder of photos")
    output: str = option(help="new folder; gets A/ (sketches) and B/ (photos)")
    method: str = option("xdog", "sketch filter", choices=tuple(sorted(SKETCHERS)))
    overwrite: bool = option(False, "replace existing pairs")

    def __post_init__(self) -> None:
        check_fields(self)  # --method


def parse_args(argv: list[str] | None = None) -> SketchConfig:
    return parse_config(SketchConfig, argv, prog="python -m stylize_gan.make_sketches",
                        description=__doc__.split("\n")[0])


def main(config: SketchConfig) -> int:
    return make_paired_set(config.input, config.output, config.method, config.overwrite)


@cli_errors
def cli(argv: list[str] | None = None) -> int:
    count = main(parse_args(argv))
    print(f"wrote {count} pairs")
    return count


if __name__ == "__main__":
    cli()
