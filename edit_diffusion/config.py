"""Typed configuration of an InstructPix2Pix training run; every check names the flag it is about."""
from __future__ import annotations

from dataclasses import asdict, dataclass

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
MIXED_PRECISION = ("no", "fp16", "bf16")
# The names diffusers.optimization.get_scheduler understands.
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
# Names of editing schedulers (the registry itself lives in editor.py; kept as names here so the config
# module imports nothing heavy).
SCHEDULER_NAMES = ("euler_a", "ddim", "dpmpp", "lcm")


def _positive(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or not 0 < value < float("inf"):  # `not 0 < v` also refuses nan
        raise ValueError(f"--{name} must be a finite positive number, got {value!r}")


@dataclass
class EditTrainConfig:
    # --- model --------------------------------------------------------------------------------------
    pretrained_model_name_or_path: str | None = None  # hub id, diffusers folder or single .ckpt/.safetensors
    unet_config: str | None = None          # JSON file: build the UNet from scratch (in_channels 8)
    vae_config: str | None = None           # JSON file: build the VAE from scratch (then pre-train it)
    text_encoder_config: str | None = None  # JSON file: build a CLIPTextModel from scratch
    tokenizer: str | None = None            # "clip" = rebuilt SD 1.5 tokenizer, or a tokenizer folder
    original_config: str | None = None      # local diffusers config folder for a single-file checkpoint
    prediction_type: str | None = None      # training target; None keeps the base model's (epsilon from scratch)
    beta_schedule: str | None = None        # noise schedule for from-scratch models (scaled_linear default)
    # Zero terminal SNR (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed"):
    # SD's schedule leaves sqrt(alpha_bar) = 0.068 of the target in x_T, so a model learns to read the
    # target's colours from "noise" that sampling never has. Needs a v_prediction or sample target.
    rescale_betas_zero_snr: bool = False
    train_text_encoder: bool = False        # jointly train the text encoder (from-scratch models)
    vae_pretrain_steps: int = 0             # reconstruction steps for the VAE before the UNet phase
    vae_learning_rate: float = 1e-3
    vae_kl_weight: float = 1e-6             # small KL keeps latents near N(0, 1) without blurring
    vae_pretrain_crop: int = 64             # random crops for VAE pre-training (convolutional: small crops
                                            # teach it as well, several times faster)
    lora_rank: int | None = None            # train LoRA adapters (peft) instead of the full UNet
    enable_xformers_memory_efficient_attention: bool = False
    # --- data ---------------------------------------------------------------------------------------
    dataset_name: str | None = None         # datasets hub name or a save_to_disk folder
    train_data_dir: str | None = None       # metadata.jsonl folder or InstructPix2Pix generated layout
    original_image_column: str = "input_image"
    edit_prompt_column: str = "edit_prompt"
    edited_image_column: str = "edited_image"
    max_train_samples: int | None = None
    resolution: int = 256
    center_crop: bool = False               # else random crop (same window for both images)
    random_flip: bool = False               # same flip for both images
    cache_images: str = "auto"              # decode once and keep in memory: auto (small data) / always / never
    dataloader_num_workers: int = 0
    # --- optimisation -------------------------------------------------------------------------------
    train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    num_train_epochs: int = 100
    max_train_steps: int | None = None      # overrides num_train_epochs
    learning_rate: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 500
    conditioning_dropout_prob: float = 0.05  # InstructPix2Pix §3.2.1: each of text / image / both
    mixed_precision: str = "no"
    use_ema: bool = False
    ema_decay: float = 0.9999
    seed: int | None = None
    max_nonfinite_steps: int = 5            # non-finite losses are skipped with a warning; stop after this many in a row
    # --- checkpoints, logging, validation ------------------------------------------------------------
    output_dir: str = "instruct-pix2pix-model"
    logging_dir: str = "logs"               # relative to output_dir
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = None
    resume_from_checkpoint: str | None = None  # "latest" or a checkpoint-<step> name / path
    validation_image: str | None = None
    validation_prompt: str | None = None
    validation_steps: int = 100
    num_validation_images: int = 1
    validation_inference_steps: int | None = None  # None: the run's default_steps
    push_to_hub: bool = False
    hub_model_id: str | None = None
    # --- editing defaults written to edit_defaults.json in the final folder ----------------------------
    default_steps: int | None = None
    default_cfg_text: float | None = None
    default_cfg_image: float | None = None
    default_scheduler: str | None = None    # None: euler_a, or ddim for sample prediction (Euler-a lacks it)

    def __post_init__(self) -> None:
        scratch = [self.unet_config, self.vae_config, self.text_encoder_config]
        if self.pretrained_model_name_or_path is None and not all(scratch):
            raise ValueError("--pretrained_model_name_or_path is required unless --unet_config, --vae_config "
                             "and --text_encoder_config are all given (training from scratch)")
        if self.dataset_name is None and self.train_data_dir is None:
            raise ValueError("--dataset_name or --train_data_dir is required")
        if self.dataset_name is not None and self.train_data_dir is not None:
            raise ValueError("--dataset_name and --train_data_dir are exclusive; give one")
        if self.prediction_type is not None and self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"--prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        if self.beta_schedule is not None and self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"--beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        if self.rescale_betas_zero_snr and self.prediction_type not in ("v_prediction", "sample"):
            raise ValueError("--rescale_betas_zero_snr needs --prediction_type v_prediction or sample (at zero "
                             "terminal SNR an epsilon model cannot recover the image at the first step)")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"--mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"--lr_scheduler must be one of {LR_SCHEDULERS}, got {self.lr_scheduler!r}")
        if self.cache_images not in ("auto", "always", "never"):
            raise ValueError(f"--cache_images must be auto, always or never, got {self.cache_images!r}")
        if not 0.0 <= self.conditioning_dropout_prob <= 1.0 / 3.0:
            raise ValueError("--conditioning_dropout_prob must lie in [0, 1/3] (it is applied to text, image "
                             f"and both), got {self.conditioning_dropout_prob}")
        for name in ("max_nonfinite_steps", "resolution", "vae_pretrain_crop", "train_batch_size", "gradient_accumulation_steps", "num_train_epochs",
                     "learning_rate", "checkpointing_steps", "validation_steps", "num_validation_images"):
            _positive(name, getattr(self, name))
        for name in ("max_train_steps", "checkpoints_total_limit", "lora_rank", "default_steps",
                     "validation_inference_steps", "max_train_samples"):
            _positive(name, getattr(self, name), allow_none=True)
        if self.resolution % 8:
            raise ValueError(f"--resolution must be a multiple of 8, got {self.resolution}")
        for name in ("vae_pretrain_steps", "lr_warmup_steps", "dataloader_num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"--max_grad_norm must be positive, got {self.max_grad_norm}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"--ema_decay must lie in (0, 1), got {self.ema_decay}")
        if (self.validation_image is None) != (self.validation_prompt is None):
            raise ValueError("--validation_image and --validation_prompt go together; give both or neither")
        if self.lora_rank is not None and (self.use_ema or self.train_text_encoder):
            raise ValueError("--lora_rank cannot be combined with --use_ema or --train_text_encoder")
        if self.default_cfg_image is not None and self.default_cfg_image < 1.0:
            raise ValueError("--default_cfg_image must be >= 1 (below 1 the stock pipeline disables all guidance)")
        if self.default_cfg_text is not None and self.default_cfg_text < 0:
            raise ValueError(f"--default_cfg_text must be >= 0, got {self.default_cfg_text}")
        if self.default_scheduler is not None and self.default_scheduler not in SCHEDULER_NAMES:
            raise ValueError(f"--default_scheduler must be one of {SCHEDULER_NAMES}, got {self.default_scheduler!r}")
        if self.default_scheduler == "euler_a" and self.prediction_type == "sample":
            raise ValueError("--default_scheduler euler_a does not support --prediction_type sample; "
                             "use ddim, dpmpp or lcm")

    @property
    def from_scratch(self) -> bool:
        return self.unet_config is not None

    def to_dict(self) -> dict:
        return asdict(self)
