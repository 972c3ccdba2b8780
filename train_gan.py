"""Train the stage-1 conditional GAN: photo -> anime (unpaired, AnimeGAN losses) or source -> target (paired,
pix2pix). Accepts the AnimeGAN-style trainer flags under their known names.

    python train_gan.py --dataset Hayao --data-dir dataset/ --content_backbone efficientnet_lite0
    python train_gan.py --mode paired --data-dir pairs/ --epochs 200
    accelerate launch train_gan.py ...   # same script on several GPUs
"""
from __future__ import annotations

from common.cli import parse_config
from common.errors import cli_errors
from stylize_gan.config import GanTrainConfig


def parse_args(argv: list[str] | None = None) -> GanTrainConfig:
    """Command line -> validated config (a bad value exits 2 with one line); flags from GanTrainConfig."""
    return parse_config(GanTrainConfig, argv, prog="train_gan.py", description=__doc__.split("\n")[0])


def main(config: GanTrainConfig) -> dict:
    """Train; returns {"step", "epoch", "losses", "output_dir", "files"} (common.training.RESULT_KEYS)."""
    from stylize_gan.trainer import train  # heavy imports only once the flags are valid
    return train(config)


@cli_errors
def cli(argv: list[str] | None = None) -> dict:
    result = main(parse_args(argv))
    if result.get("stopped_by"):  # SIGINT / SIGTERM: checkpoint written, exit 128 + signal like the shell expects
        raise SystemExit(result["exit_code"])
    return result


if __name__ == "__main__":
    cli()
