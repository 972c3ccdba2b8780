"""Train the stage-1 conditional GAN: photo -> anime (unpaired, AnimeGAN losses) or source -> target (paired,
pix2pix). Accepts the AnimeGAN-style trainer flags under their known names.

    python train_gan.py --dataset Hayao --data-dir dataset/ --content_backbone efficientnet_lite0
    python train_gan.py --mode paired --data-dir pairs/ --epochs 200
    accelerate launch train_gan.py ...   # same script on several GPUs
"""
from __future__ import annotations

import argparse

from common.cli import OneLineErrorParser, str2bool
from common.errors import cli_errors
from stylize_gan.backbones import BACKBONES
from stylize_gan.config import MIXED_PRECISION, MODES, RESUME_CONDITIONS, GanTrainConfig
from stylize_gan.losses import ADVERSARIAL_LOSSES
from stylize_gan.networks import DISCRIMINATORS, GENERATORS, NORMS


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="train_gan.py", description=__doc__.split("\n")[0])
    d = GanTrainConfig.__dataclass_fields__  # defaults come from the config, not repeated here

    def default(name):
        return d[name].default

    data = p.add_argument_group("data")
    data.add_argument("--mode", choices=MODES, default=default("mode"))
    data.add_argument("--data-dir", dest="data_dir", help="AnimeGAN dataset root (unpaired) or paired data folder")
    data.add_argument("--dataset", help="style folder under --data-dir, e.g. Hayao (unpaired)")
    data.add_argument("--paired-a", dest="paired_a", help="paired: folder of source images")
    data.add_argument("--paired-b", dest="paired_b", help="paired: folder of target images with the same names")
    data.add_argument("--image-size", dest="image_size", type=int, default=default("image_size"))
    data.add_argument("--workers", type=int, default=default("workers"))

    net = p.add_argument_group("networks")
    net.add_argument("--generator", choices=sorted(GENERATORS), default=default("generator"))
    net.add_argument("--gen-width", dest="gen_width", type=int, default=default("gen_width"))
    net.add_argument("--gen-depth", dest="gen_depth", type=int, default=default("gen_depth"))
    net.add_argument("--gen-res-blocks", dest="gen_res_blocks", type=int, default=default("gen_res_blocks"))
    net.add_argument("--luma-discriminator", dest="luma_discriminator", action="store_true",
                     help="unpaired: D judges luminance less its mean, so colours and exposure follow the photo")
    net.add_argument("--gen-residual", dest="gen_residual", action="store_true",
                     help="predict a change of the input photo (identity at start; good for small data)")
    net.add_argument("--gen-ink", dest="gen_ink", action="store_true",
                     help="learned ink layer: outlines drawn where the photo is darker than its surroundings")
    net.add_argument("--norm", choices=sorted(NORMS), default=default("norm"))
    net.add_argument("--discriminator", choices=sorted(DISCRIMINATORS), default=default("discriminator"))
    net.add_argument("--disc-width", dest="disc_width", type=int, default=default("disc_width"))
    net.add_argument("--disc-layers", dest="disc_layers", type=int, default=default("disc_layers"))
    net.add_argument("--use_spectral_norm", type=str2bool, nargs="?", const=True, default=default("use_spectral_norm"),
                     help="spectral norm on every D conv (default on; `--use_spectral_norm False` turns it off)")
    net.add_argument("--content_backbone", choices=sorted(BACKBONES), default=default("content_backbone"))
    net.add_argument("--vgg_weights", help="torchvision vgg19 weights file (default: the torch hub cache)")

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, default=default("epochs"))
    opt.add_argument("--initial-epochs", dest="initial_epochs", type=int,
                     help="content-only epochs first (default: 10 unpaired, 0 paired)")
    opt.add_argument("--batch-size", dest="batch_size", type=int, default=default("batch_size"))
    opt.add_argument("--initial-lr", dest="initial_lr", type=float, default=default("initial_lr"))
    opt.add_argument("--lr-generator", dest="lr_generator", type=float, default=default("lr_generator"))
    opt.add_argument("--lr-discriminator", dest="lr_discriminator", type=float, default=default("lr_discriminator"))
    opt.add_argument("--ink-lr-scale", dest="ink_lr_scale", type=float, default=default("ink_lr_scale"),
                     help="LR multiplier of the ink layer's threshold, sharpness, scale mix and colour (--gen-ink)")
    opt.add_argument("--lr-decay-fraction", dest="lr_decay_fraction", type=float, default=default("lr_decay_fraction"))
    opt.add_argument("--max-steps", dest="max_steps", type=int)
    opt.add_argument("--seed", type=int, default=default("seed"))
    opt.add_argument("--mixed_precision", choices=MIXED_PRECISION, default=default("mixed_precision"))
    opt.add_argument("--max-nonfinite-steps", dest="max_nonfinite_steps", type=int,
                     default=default("max_nonfinite_steps"),
                     help="non-finite steps are skipped with a warning; stop after this many in a row")
    opt.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest when other jobs share the CPU)")

    loss = p.add_argument_group("losses (defaults: AnimeGANv2 when unpaired, pix2pix when paired)")
    loss.add_argument("--adv_loss", choices=sorted(ADVERSARIAL_LOSSES), default=default("adv_loss"))
    for name in ("adversarial_loss_gen_weight", "adversarial_loss_disc_weight", "content_loss_weight",
                 "gram_loss_weight", "chromatic_loss_weight", "tv_loss_weight", "l1_loss_weight"):
        loss.add_argument(f"--{name}", type=float)
    loss.add_argument("--color_loss_blur", type=float, default=default("color_loss_blur"),
                      help="Gaussian sigma (px) before the colour loss: keep regional colour, free texture (0: off)")
    loss.add_argument("--structure_loss_weight", type=float, default=default("structure_loss_weight"),
                      help="unpaired: L1 pull towards an edge-preserving flattened copy of the output (0: off)")

    out = p.add_argument_group("outputs")
    out.add_argument("--checkpoint-dir", dest="checkpoint_dir", default=default("checkpoint_dir"))
    out.add_argument("--save-interval", dest="save_interval", type=int, default=default("save_interval"),
                     help="epochs between checkpoints")
    out.add_argument("--save-image-dir", dest="save_image_dir", help="also save sample grids here as PNG")
    out.add_argument("--log-dir", dest="log_dir", help="TensorBoard folder (default <checkpoint-dir>/logs)")
    out.add_argument("--log-interval", dest="log_interval", type=int, default=default("log_interval"))
    out.add_argument("--resume_cond", choices=RESUME_CONDITIONS, default=default("resume_cond"))
    out.add_argument("--overwrite", action="store_true", help="let a fresh run replace an existing checkpoint")
    return p


def parse_args(argv: list[str] | None = None) -> GanTrainConfig:
    """Command line -> validated config (a bad value exits 2 with one line)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return GanTrainConfig(**vars(args))
    except ValueError as err:
        parser.error(str(err))


def main(config: GanTrainConfig) -> dict:
    """Train; returns {"step", "epoch", "losses", "generator", "discriminator", "training_state", "config"}."""
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
