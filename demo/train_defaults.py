"""Rebuild the bundled default models from scratch on a CPU: demo data, stage-1 GAN, stage-2 editor,
evaluation. One command, reproducible with the seed:

    python -m demo.train_defaults            # ~1 h on 2 CPU cores; writes checkpoints/ and the eval table

Both trainers run as separate processes (one thread each, side by side: small models use two cores
better that way than one process with two threads). Each is this project's own entry point
(`train_gan.py`, `train_edit.py`) with the settings below, so the defaults are reproducible by hand.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from chain.defaults import CHECKPOINTS, REPO_ROOT, STYLES
from common.cli import OneLineErrorParser
from common.errors import cli_errors

CONFIGS = Path(__file__).parent / "configs"


@dataclass
class DefaultsConfig:
    work_dir: str = "work_data"        # data, runs and logs (not committed)
    seed: int = 0
    gan_steps: int = 1800              # optimizer steps of the GAN (init phase included)
    edit_steps: int = 5000             # UNet optimizer steps of the editor
    vae_steps: int = 2000              # VAE pre-training steps of the editor
    skip_data: bool = False            # reuse <work_dir>/demo if it is already built
    only: str = "both"                 # both / gan / editor

    def __post_init__(self):
        for name in ("gan_steps", "edit_steps", "vae_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if self.only not in ("both", "gan", "editor"):
            raise ValueError(f"--only must be both, gan or editor, got {self.only!r}")


def gan_command(data: Path, run: Path, cfg: DefaultsConfig) -> list[str]:
    """train_gan.py settings of the bundled cartoon generator (AnimeGAN losses, offline backbone)."""
    return [sys.executable, str(REPO_ROOT / "train_gan.py"),
            "--data-dir", str(data / "gan"), "--dataset", "Cartoon", "--image-size", "128",
            "--batch-size", "4", "--gen-width", "16", "--gen-depth", "3", "--gen-res-blocks", "2",
            "--disc-width", "32", "--disc-layers", "3", "--content_backbone", "efficientnet_lite0",
            # Tuned for four style photos and a CPU budget: a residual generator (starts at the identity, so
            # no content-only init phase), a discriminator that judges luminance structure only, adversarial
            # weight 20 instead of AnimeGANv2's 300, and the learned ink layer. Without the ink layer this
            # recipe ended at 1.01x the photo's L1 to the filter: the generator never learned where outlines
            # go. With it, the outlines carry the style and the paint should stay the photo's, hence a YUV
            # colour weight of 160: at 40 and 80 the paint drifted on textures (README, stage 1).
            "--gen-residual", "--luma-discriminator", "--gen-ink",
            "--adversarial_loss_gen_weight", "20", "--adversarial_loss_disc_weight", "20",
            "--chromatic_loss_weight", "160", "--threads", "1",
            "--initial-epochs", "0", "--epochs", "1000", "--max-steps", str(cfg.gan_steps),
            "--initial-lr", "1e-3", "--lr-generator", "2e-4", "--lr-discriminator", "4e-4",
            "--save-interval", "2", "--log-interval", "20", "--seed", str(cfg.seed),
            "--checkpoint-dir", str(run), "--save-image-dir", str(run / "images"), "--overwrite"]


def edit_command(data: Path, run: Path, cfg: DefaultsConfig) -> list[str]:
    """train_edit.py settings of the bundled editor: tiny SD-style model from scratch, real CLIP tokenizer.
    A norm-free factor-1 VAE (the editor_vae.json comment says why), x0 ("sample") prediction on a
    zero-terminal-SNR schedule (SD's schedule leaks the target into x_T, which sampling never has), and
    48 px crops: the model is convolutional, and small crops buy several times more steps per CPU hour."""
    return [sys.executable, str(REPO_ROOT / "train_edit.py"),
            "--unet_config", str(CONFIGS / "editor_unet.json"), "--vae_config", str(CONFIGS / "editor_vae.json"),
            "--text_encoder_config", str(CONFIGS / "editor_text_encoder.json"), "--tokenizer", "clip",
            "--train_text_encoder", "--prediction_type", "sample", "--rescale_betas_zero_snr",
            "--vae_pretrain_steps", str(cfg.vae_steps),
            "--train_data_dir", str(data / "edit" / "train"), "--resolution", "48", "--random_flip",
            "--train_batch_size", "8", "--max_train_steps", str(cfg.edit_steps), "--learning_rate", "5e-4",
            "--lr_scheduler", "cosine", "--lr_warmup_steps", "100", "--seed", str(cfg.seed),
            "--checkpointing_steps", "1000", "--checkpoints_total_limit", "1", "--output_dir", str(run),
            "--default_steps", "4", "--default_cfg_text", "1.0", "--default_cfg_image", "1.0",
            "--default_scheduler", "ddim"]


def _run_parallel(jobs: dict[str, list[str]], logs: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    logs.mkdir(parents=True, exist_ok=True)
    procs = {}
    for name, cmd in jobs.items():
        print(f"[{name}] {' '.join(cmd)}\n[{name}] log: {logs / (name + '.log')}", flush=True)
        procs[name] = subprocess.Popen(cmd, stdout=open(logs / f"{name}.log", "w"), stderr=subprocess.STDOUT, env=env)
    failed = [name for name, proc in procs.items() if proc.wait() != 0]
    if failed:
        raise SystemExit(f"error: training failed: {', '.join(failed)} (see {logs})")


def main(cfg: DefaultsConfig) -> None:
    work = Path(cfg.work_dir)
    data, runs = work / "demo", work / "runs"
    if not cfg.skip_data:
        subprocess.run([sys.executable, "-m", "demo.build", "--out", str(data), "--seed", str(cfg.seed),
                        "--overwrite"], check=True)
    jobs = {}
    if cfg.only in ("both", "gan"):
        jobs["gan"] = gan_command(data, runs / "gan", cfg)
    if cfg.only in ("both", "editor"):
        jobs["editor"] = edit_command(data, runs / "editor", cfg)
    _run_parallel(jobs, runs / "logs")
    if "gan" in jobs:
        STYLES["cartoon"].parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(runs / "gan" / "generator.safetensors", STYLES["cartoon"])
    if "editor" in jobs:
        target = CHECKPOINTS / "editor"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(runs / "editor", target,
                        ignore=shutil.ignore_patterns("checkpoint-*", "logs", "validation*", "*.tmp"))
    subprocess.run([sys.executable, "-m", "demo.evaluate", "--gan", str(STYLES["cartoon"]),
                    "--editor", str(CHECKPOINTS / "editor"), "--json", str(runs / "eval.json"), "--overwrite"], check=False)


@cli_errors
def cli(argv: list[str] | None = None) -> None:
    p = OneLineErrorParser(description=__doc__.strip().splitlines()[0])
    for field, value in DefaultsConfig().__dict__.items():
        flag = "--" + field.replace("_", "-")
        if isinstance(value, bool):
            p.add_argument(flag, action="store_true")
        else:
            p.add_argument(flag, type=type(value), default=value)
    main(DefaultsConfig(**vars(p.parse_args(argv))))


if __name__ == "__main__":
    cli()
