"""Assemble the training components from a config: pretrained ones from a model source, any of them
replaced by a from-scratch build when its config flag is given, then the 8-channel input surgery."""
from __future__ import annotations

import logging
import warnings

from .config import EditTrainConfig
from .loading import Components, load_components, noise_scheduler_from
from .recipe import hub_options
from .scratch import (build_noise_scheduler, build_text_encoder, build_unet, build_vae, check_compatible)
from .surgery import expand_conv_in
from .text_encoders import round_to_fp16
from .tokenizer import load_tokenizer

logger = logging.getLogger(__name__)
# Default editing scheduler per training target: Euler ancestral cannot step an x0 ("sample") model.
DEFAULT_EDIT_SCHEDULER = {"epsilon": "euler_a", "v_prediction": "euler_a", "sample": "ddim"}


def build_components(config: EditTrainConfig) -> tuple[Components, object]:
    """(components with an 8-channel UNet, DDPM noise scheduler for training)."""
    base = load_components(config.pretrained_model_name_or_path, config.original_config, hub_options(config),
                           config.original_config_file) \
        if config.pretrained_model_name_or_path else None
    unet = build_unet(config.unet_config) if config.unet_config else base.unet
    vae = build_vae(config.vae_config) if config.vae_config else base.vae
    text_encoder = build_text_encoder(config.text_encoder_config) if config.text_encoder_config else base.text_encoder
    tokenizer = load_tokenizer(config.tokenizer) if (config.tokenizer or base is None) else base.tokenizer
    if base is not None and not config.unet_config:
        noise_scheduler = noise_scheduler_from(base.scheduler, config.prediction_type, config.beta_schedule,
                                               config.rescale_betas_zero_snr)
    else:
        noise_scheduler = build_noise_scheduler(config.prediction_type or "epsilon",
                                                config.beta_schedule or "scaled_linear",
                                                config.rescale_betas_zero_snr)
    if text_encoder.config.vocab_size < len(tokenizer):
        raise ValueError(f"--text_encoder_config vocab_size {text_encoder.config.vocab_size} is smaller than the "
                         f"tokenizer's {len(tokenizer)} tokens")
    if config.lora_rank is not None and (config.unet_config or unet.config.in_channels != 8):
        # LoRA adapters cannot learn the new input weights of a widened conv_in, and
        # load_lora_weights could not restore them: LoRA starts from an InstructPix2Pix model.
        raise ValueError("--lora_rank needs an 8-channel InstructPix2Pix base model for "
                         "--pretrained_model_name_or_path (e.g. timbrooks/instruct-pix2pix); train fully otherwise")
    if config.text_encoder_fp16_storage:
        round_to_fp16(text_encoder)  # the UNet learns on exactly the weights that fp16 storage will hold
    expand_conv_in(unet)  # InstructPix2Pix §3.2: 4 noisy + 4 input-image latent channels
    check_compatible(unet, vae, text_encoder)
    return Components(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                      scheduler=noise_scheduler), noise_scheduler


def edit_scheduler_name(config: EditTrainConfig, prediction_type: str) -> str:
    """The scheduler saved with the final pipeline (and used for validation edits)."""
    return config.default_scheduler or DEFAULT_EDIT_SCHEDULER[prediction_type]


def enable_attention_backend(unet, xformers: bool) -> None:
    """xformers when asked and installed, else PyTorch SDPA (diffusers' default) with a warning."""
    if not xformers:
        return
    try:
        import xformers  # noqa: F401
    except ImportError:
        warnings.warn("--enable_xformers_memory_efficient_attention: xformers is not installed; "
                      "using PyTorch scaled_dot_product_attention instead", stacklevel=2)
        return
    unet.enable_xformers_memory_efficient_attention()
