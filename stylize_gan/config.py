"""Typed training configuration for the conditional GAN (stage 1).

Defaults follow AnimeGANv2 for unpaired photo->anime training and pix2pix for paired training. Weights left
at `None` are resolved per mode in `__post_init__` (the resolved values are what `config.json` stores).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from common.checkpoints import refuse_bundled_output
from common.cli import check_fields, option
from common.training import NONFINITE_HELP

from .backbones import BACKBONES
from .losses import ADVERSARIAL_LOSSES
from .networks import DISCRIMINATORS, GENERATORS, NORMS

MODES = ("unpaired", "paired")
RESUME_CONDITIONS = ("none", "gen", "gen_dis")
MIXED_PRECISION = ("no", "fp16", "bf16")

# Per-mode defaults for the loss weights left at None. Unpaired = AnimeGANv2 (G adversarial 300 with the D term
# scaled the same, content 1.5 on conv4_4, gram 3.0, colour 10, TV 1); paired = pix2pix (adversarial 1, L1 100).
MODE_DEFAULTS = {
    "unpaired": dict(adversarial_loss_gen_weight=300.0, adversarial_loss_disc_weight=300.0, content_loss_weight=1.5,
                     gram_loss_weight=3.0, chromatic_loss_weight=10.0, tv_loss_weight=1.0, l1_loss_weight=0.0,
                     initial_epochs=10),
    "paired": dict(adversarial_loss_gen_weight=1.0, adversarial_loss_disc_weight=1.0, content_loss_weight=0.0,
                   gram_loss_weight=0.0, chromatic_loss_weight=0.0, tv_loss_weight=0.0, l1_loss_weight=100.0,
                   initial_epochs=0),
}


@dataclass
class GanTrainConfig:
    """Everything `train_gan.py` needs; one field per flag."""

    # --- data
    mode: str = option("unpaired", "unpaired: AnimeGAN photo->style; paired: pix2pix source->target", choices=MODES)
    data_dir: str | None = option(None, "unpaired: AnimeGAN dataset root; paired: folder with A/ + B/ or AB images")
    dataset: str | None = option(None, "unpaired: style folder under --data-dir, images in <data-dir>/<dataset>/style "
                                       "(e.g. Hayao)")
    paired_a: str | None = option(None, "paired: folder of source images (e.g. sketches)")
    paired_b: str | None = option(None, "paired: folder of target images with the same file names as --paired-a")
    image_size: int = option(256, "training crop size (pixels, square; memory grows with its square)", ge=16,
                             le=4096)
    workers: int = option(0, "DataLoader workers (0: data cached in memory, decoded once)", ge=0, le=64)

    # --- networks
    generator: str = option("unet", "generator architecture", choices=tuple(sorted(GENERATORS)))
    gen_width: int = option(32, "channels of the first generator level (doubles per level, capped x8)", ge=1,
                            le=1024)
    gen_depth: int = option(3, "stride-2 generator levels; inputs are padded to 2**depth", ge=1, le=6)
    gen_res_blocks: int = option(4, "residual blocks at the lowest resolution", ge=0, le=64)
    gen_residual: bool = option(False, "predict a change of the input photo (identity at start; good for small data)")
    gen_ink: bool = option(False, "learned ink layer: outlines drawn where the photo is darker than its surroundings")
    norm: str | None = option(None, "unet normalization (default layer, as AnimeGANv2; animegan_v2 has its own)",
                              choices=tuple(sorted(NORMS)))
    align_corners: bool = option(True, "animegan_v2 upsampling: align_corners True (the published model's default) "
                                       "or False (animegan2-pytorch's test script)")
    init_generator: str | None = option(None, "fine-tune: start G from this file, ours (.safetensors) or a published "
                                              "AnimeGAN .pt / .pth of the same architecture")
    discriminator: str = option("patch", "discriminator architecture", choices=tuple(sorted(DISCRIMINATORS)))
    disc_width: int = option(64, "channels of the first discriminator conv", ge=1, le=1024)
    disc_layers: int = option(3, "stride-2 convs of the PatchGAN (receptive field 70 px at 3)", ge=1, le=8)
    luma_discriminator: bool = option(False, "unpaired: D judges luminance less its mean, so colours and exposure "
                                             "follow the photo")
    use_spectral_norm: bool = option(True, "spectral norm on every D conv (`--use_spectral_norm False` turns it off)",
                                     flag="--use_spectral_norm")
    content_backbone: str = option("vgg19", "CNN of the content and gram losses (efficientnet_lite0 works offline)",
                                   choices=tuple(sorted(BACKBONES)), flag="--content_backbone")
    vgg_weights: str | None = option(None, "torchvision vgg19 weights file (default: the torch hub cache)",
                                     flag="--vgg_weights")

    # --- optimisation
    epochs: int = option(100, "total epochs, the initial (content-only) epochs included", ge=1)
    initial_epochs: int | None = option(None, "content-only generator epochs first (default: 10 unpaired, 0 paired)",
                                        ge=0)
    batch_size: int = option(8, "images per step (memory grows with it)", ge=1, le=1024)
    initial_lr: float = option(2e-4, "generator LR in the init phase (AnimeGANv2)", gt=0)
    lr_generator: float = option(2e-5, "generator LR (AnimeGANv2 g_lr)", gt=0)
    lr_discriminator: float = option(4e-5, "discriminator LR (AnimeGANv2 d_lr)", gt=0)
    ink_lr_scale: float = option(1.0, "LR multiplier of the ink layer's threshold, sharpness, scale mix and colour "
                                      "(--gen-ink)", gt=0)
    lr_decay_fraction: float = option(0.0, "linearly decay both LRs to 0 over this last fraction of adversarial "
                                           "steps", ge=0, le=1)
    max_steps: int | None = option(None, "stop after this many optimizer steps (counted over all phases)", ge=1)
    seed: int = option(0, "random seed (each process adds its rank)", ge=0, lt=2**63)
    mixed_precision: str = option("no", "accelerate mixed precision", choices=MIXED_PRECISION, flag="--mixed_precision")
    max_nonfinite_steps: int = option(10, NONFINITE_HELP, ge=1)
    # 1 is fastest on a busy machine, where OpenMP threads spin against other processes
    threads: int | None = option(None, "torch CPU threads (1 is fastest when other jobs share the CPU)", ge=1)

    # --- losses (None = per-mode default from MODE_DEFAULTS)
    adv_loss: str = option("lsgan", "adversarial loss", choices=tuple(sorted(ADVERSARIAL_LOSSES)), flag="--adv_loss")
    adversarial_loss_gen_weight: float | None = option(None, "G adversarial weight (default: 300 unpaired, 1 paired)",
                                                       ge=0, flag="--adversarial_loss_gen_weight")
    adversarial_loss_disc_weight: float | None = option(None, "D loss weight (default: 300 unpaired, 1 paired)",
                                                        ge=0, flag="--adversarial_loss_disc_weight")
    content_loss_weight: float | None = option(None, "content loss weight (default: 1.5 unpaired, 0 paired)", ge=0,
                                               flag="--content_loss_weight")
    gram_loss_weight: float | None = option(None, "gram (style) loss weight (default: 3 unpaired, 0 paired)", ge=0,
                                            flag="--gram_loss_weight")
    chromatic_loss_weight: float | None = option(None, "YUV colour loss weight (default: 10 unpaired, 0 paired)", ge=0,
                                                 flag="--chromatic_loss_weight")
    tv_loss_weight: float | None = option(None, "total variation weight (default: 1 unpaired, 0 paired)", ge=0,
                                          flag="--tv_loss_weight")
    l1_loss_weight: float | None = option(None, "paired: L1 to the target, pix2pix lambda (default: 100 paired, "
                                                "0 unpaired)", ge=0, flag="--l1_loss_weight")
    # 0 = AnimeGANv2's per-pixel loss. Blurred, it keeps the photo's colours region by region and no longer
    # charges flattening texture into paint (a zero-mean change), which it otherwise fights pixel by pixel.
    color_loss_blur: float = option(0.0, "Gaussian sigma (px) before the colour loss: keep regional colour, free "
                                         "texture (0: off)", ge=0, flag="--color_loss_blur")
    # losses.structure_loss; 0 = off, as in AnimeGAN. Flat paint is half of a cartoon look.
    structure_loss_weight: float = option(0.0, "unpaired: L1 pull towards an edge-preserving flattened copy of the "
                                               "output (0: off)", ge=0, flag="--structure_loss_weight")

    # --- outputs
    checkpoint_dir: str = option("runs/gan", "checkpoint folder (never inside the bundled checkpoints/ unless "
                                             "--allow-overwrite-bundled)")
    save_interval: int = option(1, "epochs between checkpoints (and image grids)", ge=1)
    save_image_dir: str | None = option(None, "also save sample grids here as PNG")
    log_dir: str | None = option(None, "TensorBoard folder (default <checkpoint-dir>/logs)")
    log_interval: int = option(10, "steps between TensorBoard scalars", ge=1)
    resume_cond: str = option("none", "none: fresh; gen: load generator weights; gen_dis: resume exactly",
                              choices=RESUME_CONDITIONS, flag="--resume_cond")
    overwrite: bool = option(False, "let a fresh run replace an existing checkpoint")
    allow_overwrite_bundled: bool = option(False, "allow outputs inside the bundled checkpoints/ folder")

    def __post_init__(self) -> None:
        check_fields(self)  # bounds, NaN/inf and choices of every field, from its metadata
        for flag, path in (("--checkpoint-dir", self.checkpoint_dir), ("--log-dir", self.log_dir),
                           ("--save-image-dir", self.save_image_dir)):
            refuse_bundled_output(flag, path, self.allow_overwrite_bundled)
        for name, value in MODE_DEFAULTS[self.mode].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.mode == "unpaired":
            if not self.data_dir:
                raise ValueError("--data-dir is required in unpaired mode (the AnimeGAN dataset root)")
            if not self.dataset:
                raise ValueError("--dataset is required in unpaired mode (style folder name, e.g. Hayao)")
        elif not self.data_dir and not (self.paired_a and self.paired_b):
            raise ValueError("paired mode needs --data-dir or both --paired-a and --paired-b")
        elif bool(self.paired_a) != bool(self.paired_b):
            raise ValueError("--paired-a and --paired-b must be given together")
        if not 0 <= self.initial_epochs <= self.epochs:
            raise ValueError(f"--initial-epochs must be in [0, --epochs={self.epochs}], got {self.initial_epochs}")
        self._check_generator_options()
        if self.ink_lr_scale != 1.0 and not self.gen_ink:
            raise ValueError("--ink-lr-scale only applies with --gen-ink")
        if self.initial_epochs > 0 and self.content_loss_weight <= 0 and self.l1_loss_weight <= 0:
            raise ValueError("--initial-epochs > 0 needs --content_loss_weight > 0 (or --l1_loss_weight when paired)")

    def _check_generator_options(self) -> None:
        """Options of one architecture are refused with the other; unet's norm defaults to layer."""
        if self.generator == "animegan_v2":
            fixed = [flag for flag, given in (("--gen-ink", self.gen_ink), ("--gen-residual", self.gen_residual),
                                              ("--norm", self.norm is not None)) if given]
            if fixed:
                raise ValueError(f"{', '.join(fixed)}: not options of --generator animegan_v2 (its layers are the "
                                 f"published ones: GroupNorm(1) throughout, no ink layer, no residual output)")
        else:
            self.norm = self.norm or "layer"
            if not self.align_corners:
                raise ValueError("--align-corners only applies to --generator animegan_v2")
        if self.init_generator is not None:
            if self.resume_cond != "none":
                raise ValueError("--init-generator starts a fresh run; to continue one use --resume_cond alone")
            if self.init_generator.lower().endswith(".onnx"):
                raise ValueError(f"--init-generator {self.init_generator}: ONNX generators cannot be trained")

    @property
    def needs_backbone(self) -> bool:
        """The pretrained CNN is only built when a loss uses it."""
        return self.content_loss_weight > 0 or self.gram_loss_weight > 0

    def generator_kwargs(self) -> dict:
        if self.generator == "animegan_v2":
            return dict(align_corners=self.align_corners)
        return dict(in_channels=3, out_channels=3, width=self.gen_width, depth=self.gen_depth,
                    res_blocks=self.gen_res_blocks, norm=self.norm, residual=self.gen_residual,
                    ink=self.gen_ink)

    def discriminator_kwargs(self) -> dict:
        in_channels = 6 if self.mode == "paired" else 3  # paired D sees cat(source, target)
        return dict(in_channels=in_channels, width=self.disc_width, n_layers=self.disc_layers,
                    spectral_norm=self.use_spectral_norm)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

