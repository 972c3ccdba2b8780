"""Typed training configuration for the conditional GAN (stage 1).

Defaults follow AnimeGANv2 for unpaired photo->anime training and pix2pix for paired training. Weights left
at `None` are resolved per mode in `__post_init__` (the resolved values are what `config.json` stores).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

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
    mode: str = "unpaired"                 # unpaired (AnimeGAN photo->style) or paired (pix2pix source->target)
    data_dir: str | None = None            # unpaired: AnimeGAN dataset root; paired: folder with A/ + B/ or AB images
    dataset: str | None = None             # unpaired: style name, images in <data_dir>/<dataset>/style (e.g. Hayao)
    paired_a: str | None = None            # paired: folder of source images (e.g. sketches)
    paired_b: str | None = None            # paired: folder of target images, same file names as paired_a
    image_size: int = 256                  # training crop size (pixels, square)
    workers: int = 0                       # DataLoader workers (0: data cached in memory, decoded once)

    # --- networks
    generator: str = "unet"                # key of networks.GENERATORS
    gen_width: int = 32                    # channels of the first generator level (doubles per level, capped x8)
    gen_depth: int = 3                     # number of stride-2 levels; inputs are padded to 2**gen_depth
    gen_res_blocks: int = 4                # residual blocks at the lowest resolution
    gen_residual: bool = False             # generator predicts a change of the input (starts at the identity)
    gen_ink: bool = False                  # learned ink layer: outlines where the photo has dark edges (ink.py)
    norm: str = "layer"                    # generator normalization: instance / layer / group (AnimeGANv2: layer)
    discriminator: str = "patch"           # key of networks.DISCRIMINATORS
    disc_width: int = 64                   # channels of the first discriminator conv
    disc_layers: int = 3                   # stride-2 convs of the PatchGAN (receptive field 70 px at 3)
    luma_discriminator: bool = False       # unpaired: D sees luminance only (keeps the photo's colours)
    use_spectral_norm: bool = True         # spectral norm on every discriminator conv
    content_backbone: str = "vgg19"        # key of backbones.BACKBONES (efficientnet_lite0 works offline)
    vgg_weights: str | None = None         # torchvision vgg19 weights file (default: the torch hub cache)

    # --- optimisation
    epochs: int = 100                      # total epochs, the initial (content-only) epochs included
    initial_epochs: int | None = None      # content-only generator epochs first (unpaired 10, paired 0)
    batch_size: int = 8
    initial_lr: float = 2e-4               # generator LR in the init phase (AnimeGANv2)
    lr_generator: float = 2e-5             # AnimeGANv2 g_lr
    lr_discriminator: float = 4e-5         # AnimeGANv2 d_lr
    ink_lr_scale: float = 1.0              # LR multiplier of the ink layer's few parameters (--gen-ink)
    lr_decay_fraction: float = 0.0         # linearly decay both LRs to 0 over this last fraction of adversarial steps
    max_steps: int | None = None           # stop after this many optimizer steps (counted over all phases)
    seed: int = 0
    mixed_precision: str = "no"            # accelerate mixed precision: no / fp16 / bf16
    max_nonfinite_steps: int = 10          # stop with an error after this many non-finite (skipped) steps in a row
    threads: int | None = None             # CPU threads for torch (default: torch's choice); 1 is fastest on a
                                           # busy machine, where OpenMP threads spin against other processes

    # --- losses (None = per-mode default from MODE_DEFAULTS)
    adv_loss: str = "lsgan"                # key of losses.ADVERSARIAL_LOSSES
    adversarial_loss_gen_weight: float | None = None
    adversarial_loss_disc_weight: float | None = None
    content_loss_weight: float | None = None
    gram_loss_weight: float | None = None
    chromatic_loss_weight: float | None = None
    tv_loss_weight: float | None = None
    l1_loss_weight: float | None = None    # paired: L1 to the target (pix2pix lambda)
    # Gaussian sigma (px) applied to both images before the colour loss; 0 = AnimeGANv2's per-pixel loss.
    # Blurred, it keeps the photo's colours region by region and no longer charges flattening texture
    # into paint (a zero-mean change), which it otherwise fights pixel by pixel.
    color_loss_blur: float = 0.0
    # Unpaired: weight of the L1 pull towards an edge-preserving flattened copy of the output (losses.
    # structure_loss); 0 = off, as in AnimeGAN. Flat paint is half of a cartoon look.
    structure_loss_weight: float = 0.0

    # --- outputs
    checkpoint_dir: str = "checkpoints/gan"
    save_interval: int = 1                 # save a checkpoint (and image grid) every N epochs
    save_image_dir: str | None = None      # also write sample grids here as PNG
    log_dir: str | None = None             # TensorBoard folder (default: <checkpoint_dir>/logs)
    log_interval: int = 10                 # write scalars every N steps
    resume_cond: str = "none"              # none: fresh; gen: load generator weights; gen_dis: resume exactly
    overwrite: bool = False                # allow a fresh run to replace checkpoints already in checkpoint_dir

    def __post_init__(self) -> None:
        from .backbones import BACKBONES
        from .losses import ADVERSARIAL_LOSSES
        from .networks import DISCRIMINATORS, GENERATORS, NORMS

        _choice("--mode", self.mode, MODES)
        _choice("--resume_cond", self.resume_cond, RESUME_CONDITIONS)
        _choice("--mixed_precision", self.mixed_precision, MIXED_PRECISION)
        _choice("--adv_loss", self.adv_loss, ADVERSARIAL_LOSSES)
        _choice("--content_backbone", self.content_backbone, BACKBONES)
        _choice("--norm", self.norm, NORMS)
        _choice("--generator", self.generator, GENERATORS)
        _choice("--discriminator", self.discriminator, DISCRIMINATORS)
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
        _positive("--image-size", self.image_size, minimum=16)
        _positive("--batch-size", self.batch_size)
        _positive("--epochs", self.epochs)
        _positive("--gen-width", self.gen_width)
        _positive("--gen-depth", self.gen_depth)
        _positive("--disc-width", self.disc_width)
        _positive("--disc-layers", self.disc_layers)
        _positive("--save-interval", self.save_interval)
        _positive("--log-interval", self.log_interval)
        _positive("--max-nonfinite-steps", self.max_nonfinite_steps)
        if self.gen_depth > 6:
            raise ValueError(f"--gen-depth must be at most 6, got {self.gen_depth}")
        if self.gen_res_blocks < 0:
            raise ValueError(f"--gen-res-blocks must be >= 0, got {self.gen_res_blocks}")
        if self.threads is not None:
            _positive("--threads", self.threads)
        if self.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {self.workers}")
        if self.max_steps is not None:
            _positive("--max-steps", self.max_steps)
        if not 0 <= self.initial_epochs <= self.epochs:
            raise ValueError(f"--initial-epochs must be in [0, --epochs={self.epochs}], got {self.initial_epochs}")
        for flag, value in (("--initial-lr", self.initial_lr), ("--lr-generator", self.lr_generator),
                            ("--lr-discriminator", self.lr_discriminator), ("--ink-lr-scale", self.ink_lr_scale)):
            if not 0 < value < float("inf"):
                raise ValueError(f"{flag} must be a finite number > 0, got {value}")
        if self.ink_lr_scale != 1.0 and not self.gen_ink:
            raise ValueError("--ink-lr-scale only applies with --gen-ink")
        if not 0.0 <= self.lr_decay_fraction <= 1.0:
            raise ValueError(f"--lr-decay-fraction must be in [0, 1], got {self.lr_decay_fraction}")
        for flag in ("structure_loss_weight", "color_loss_blur"):
            if not 0.0 <= getattr(self, flag) < float("inf"):  # also refuses NaN
                raise ValueError(f"--{flag} must be a finite number >= 0, got {getattr(self, flag)}")
        if self.initial_epochs > 0 and self.content_loss_weight <= 0 and self.l1_loss_weight <= 0:
            raise ValueError("--initial-epochs > 0 needs --content_loss_weight > 0 (or --l1_loss_weight when paired)")
        for name in MODE_DEFAULTS["unpaired"]:
            # `not >= 0` also refuses nan (which compares False with everything); inf is refused too
            if name != "initial_epochs" and not 0 <= getattr(self, name) < float("inf"):
                raise ValueError(f"--{name} must be a finite number >= 0, got {getattr(self, name)}")

    @property
    def needs_backbone(self) -> bool:
        """The pretrained CNN is only built when a loss uses it."""
        return self.content_loss_weight > 0 or self.gram_loss_weight > 0

    def generator_kwargs(self) -> dict:
        return dict(in_channels=3, out_channels=3, width=self.gen_width, depth=self.gen_depth,
                    res_blocks=self.gen_res_blocks, norm=self.norm, residual=self.gen_residual,
                    ink=self.gen_ink)

    def discriminator_kwargs(self) -> dict:
        in_channels = 6 if self.mode == "paired" else 3  # paired D sees cat(source, target)
        return dict(in_channels=in_channels, width=self.disc_width, n_layers=self.disc_layers,
                    spectral_norm=self.use_spectral_norm)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _choice(flag: str, value: str, valid) -> None:
    if value not in valid:
        raise ValueError(f"{flag}: unknown value {value!r} (valid: {', '.join(sorted(valid))})")


def _positive(flag: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or value < minimum:
        raise ValueError(f"{flag} must be an integer >= {minimum}, got {value!r}")
