"""Components built from configs (UNet, VAE, CLIP text encoder, noise schedule) for training from
scratch, and the VAE pre-training phase a from-scratch VAE needs before the UNet can learn in its
latent space (LDM §3: autoencoder first, then diffusion on its frozen latents)."""
from __future__ import annotations

import itertools
import json
import logging
import math
import os
from pathlib import Path
from typing import Callable, Iterator

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from common.errors import UserInputError, one_line

from .text_encoders import load_text_encoder, pretrained_folder, text_width

logger = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).parent / "configs"
# Bundled configs usable by name (`--unet_config tiny`): name -> {kind: file}.
BUNDLED_CONFIGS = {
    "tiny": {"unet": "tiny_unet.json", "vae": "tiny_vae.json", "text_encoder": "tiny_text_encoder.json"},
    "sd15": {"unet": "sd15_unet.json", "vae": "sd15_vae.json", "text_encoder": "sd15_text_encoder.json"},
}
# Stable Diffusion's training noise schedule, the default for from-scratch models.
SD_BETA_START, SD_BETA_END, SD_TRAIN_TIMESTEPS = 0.00085, 0.012, 1000


def read_config(spec: str | os.PathLike | dict, kind: str) -> dict:
    """A config given as a dict, a JSON file, or a bundled name (`tiny`, `sd15`)."""
    if isinstance(spec, dict):
        return dict(spec)
    spec = str(spec)
    if spec in BUNDLED_CONFIGS and kind in BUNDLED_CONFIGS[spec]:
        spec = str(CONFIG_DIR / BUNDLED_CONFIGS[spec][kind])
    path = Path(spec)
    if not path.is_file():
        names = [n for n, kinds in BUNDLED_CONFIGS.items() if kind in kinds]
        raise UserInputError(f"--{kind}_config {spec}: file not found (bundled names: {', '.join(names)})")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(f"--{kind}_config {spec}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise UserInputError(f"--{kind}_config {spec}: expected a JSON object")
    return config


def _public(config: dict) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def build_unet(spec: str | dict) -> UNet2DConditionModel:
    try:
        return UNet2DConditionModel.from_config(_public(read_config(spec, "unet")))
    except (TypeError, ValueError) as err:
        raise UserInputError(f"--unet_config: cannot build a UNet2DConditionModel ({err})") from None


# VAE classes a config may name in `_class_name`: SD's KL autoencoder, or the norm-free TAESD-style one.
VAE_CLASSES: dict[str, type] = {"AutoencoderKL": AutoencoderKL, "AutoencoderTiny": AutoencoderTiny}


def build_vae(spec: str | dict) -> AutoencoderKL | AutoencoderTiny:
    """A fresh VAE from a config, or a trained one from a diffusers VAE folder (config.json + weights):
    the VAE only reconstructs images, so one trained on the same images serves a new UNet as it is."""
    if not isinstance(spec, dict) and (Path(spec) / "config.json").is_file():
        return _load_vae_folder(Path(spec))
    config = read_config(spec, "vae")
    name = config.get("_class_name", "AutoencoderKL")
    if name not in VAE_CLASSES:
        raise UserInputError(f"--vae_config _class_name {name!r}: choose one of {', '.join(VAE_CLASSES)}")
    try:
        return VAE_CLASSES[name].from_config(_public(config))
    except (TypeError, ValueError) as err:
        raise UserInputError(f"--vae_config: cannot build an {name} ({err})") from None


def _load_vae_folder(folder: Path) -> AutoencoderKL | AutoencoderTiny:
    name = read_config(folder / "config.json", "vae").get("_class_name", "AutoencoderKL")
    if name not in VAE_CLASSES:
        raise UserInputError(f"--vae_config {folder}: _class_name {name!r}; choose one of {', '.join(VAE_CLASSES)}")
    try:
        return VAE_CLASSES[name].from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise UserInputError(f"--vae_config {folder}: cannot load the VAE ({one_line(err)})") from None


def latents_of(encoded, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Unscaled latents from a `vae.encode(...)` output: a posterior sample or its mode for AutoencoderKL,
    the deterministic latents for AutoencoderTiny (which has no posterior)."""
    if hasattr(encoded, "latent_dist"):
        return encoded.latent_dist.sample(generator) if sample else encoded.latent_dist.mode()
    return encoded.latents


def encode_latents(vae, pixels: torch.Tensor, sample: bool = False,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Unscaled latents of (B, 3, H, W) pixels (see `latents_of`)."""
    return latents_of(vae.encode(pixels), sample, generator)


def build_text_encoder(spec: str | dict):
    """A from-scratch CLIPTextModel from a JSON config (or 'tiny'), or a pretrained encoder: 'minilm' or a
    transformers model folder (edit_diffusion/text_encoders.py)."""
    folder = None if isinstance(spec, dict) else pretrained_folder(spec)
    if folder is not None:
        return load_text_encoder(folder)
    config = read_config(spec, "text_encoder")
    config.pop("architectures", None)
    config.pop("model_type", None)
    try:
        return CLIPTextModel(CLIPTextConfig(**config))
    except (TypeError, ValueError) as err:
        raise UserInputError(f"--text_encoder_config: cannot build a CLIPTextModel ({err})") from None


def build_noise_scheduler(prediction_type: str = "epsilon", beta_schedule: str = "scaled_linear",
                          rescale_betas_zero_snr: bool = False) -> DDPMScheduler:
    """SD's 1000-step schedule; 'trailing' spacing so few-step samplers start at t=999 (pure noise only
    with `rescale_betas_zero_snr`; SD's own schedule keeps a trace of the image there)."""
    return DDPMScheduler(num_train_timesteps=SD_TRAIN_TIMESTEPS, beta_start=SD_BETA_START, beta_end=SD_BETA_END,
                         beta_schedule=beta_schedule, prediction_type=prediction_type, clip_sample=False,
                         timestep_spacing="trailing", steps_offset=1, rescale_betas_zero_snr=rescale_betas_zero_snr)


def check_compatible(unet: UNet2DConditionModel, vae: AutoencoderKL | AutoencoderTiny, text_encoder) -> None:
    """Shapes that must agree across separately configured components, reported by flag."""
    hidden, width = text_encoder.config.hidden_size, text_width(unet)
    if width != hidden:
        what = "encoder_hid_dim" if unet.config.encoder_hid_dim else "cross_attention_dim"
        raise UserInputError(f"--unet_config {what} {width} must equal the text encoder hidden size {hidden}")
    latent = vae.config.latent_channels
    if unet.config.out_channels != latent or unet.config.in_channels not in (latent, 2 * latent):
        raise UserInputError(f"--unet_config in/out channels ({unet.config.in_channels}/{unet.config.out_channels}) "
                             f"do not fit the VAE's {latent} latent channels (expected {2 * latent}/{latent})")


# --- VAE pre-training ------------------------------------------------------------------------------

def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)), averaged over elements."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()


def vae_loss(vae: AutoencoderKL | AutoencoderTiny, images: torch.Tensor, kl_weight: float,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Reconstruction L1 (+ small KL for a KL autoencoder) for images (B, 3, H, W) in [-1, 1]."""
    output = vae.encode(images)
    if not hasattr(output, "latent_dist"):  # AutoencoderTiny: deterministic, reconstruction only
        l1 = (vae.decode(output.latents).sample - images).abs().mean()
        return l1, {"loss/vae_l1": l1.item()}
    posterior = output.latent_dist
    recon = vae.decode(posterior.sample(generator)).sample
    l1 = (recon - images).abs().mean()
    kl = kl_to_standard_normal(posterior.mean, posterior.logvar)
    total = l1 + kl_weight * kl
    return total, {"loss/vae_l1": l1.item(), "loss/vae_kl": kl.item()}


@torch.no_grad()
def fold_latent_std(vae: AutoencoderTiny, images: torch.Tensor, target_std: float) -> float:
    """Rescale an AutoencoderTiny so that its raw latents of `images` have `target_std`; returns the gain.

    Why: the InstructPix2Pix UNet reads the input image's latents unscaled (stock pipeline and recipe
    alike; only the target is multiplied by `scaling_factor`). SD's raw latents have std about 5; the
    bundled factor-1 tiny VAE's about 0.3, so the UNet's image path starts almost blind and learns slowly
    (an Adam step moves the output by lr x input). Multiplying the encoder's last conv and dividing the
    decoder's first conv by the same gain keeps the reconstruction, up to DecoderTiny's tanh clamp at +-3,
    which the pre-training steps that follow adapt to. Measured on the bundled editor's copy task (500
    steps, 16 training images, 128 px): mean change 0.044 at gain 1, 0.035 at 2, 0.032 at 3."""
    if not isinstance(vae, AutoencoderTiny):
        raise UserInputError(f"--vae_latent_std needs an AutoencoderTiny VAE, got {type(vae).__name__}")
    gain = target_std / float(encode_latents(vae, images).std().clamp_min(1e-6))
    encoder_out, decoder_in = vae.encoder.layers[-1], vae.decoder.layers[0]
    encoder_out.weight.mul_(gain)
    encoder_out.bias.mul_(gain)
    decoder_in.weight.div_(gain)
    return gain


def pretrain_vae(vae: AutoencoderKL | AutoencoderTiny, batches: Iterator[torch.Tensor], steps: int, lr: float,
                 kl_weight: float, log: Callable[[int, dict], None] | None = None,
                 progress: bool = True, latent_std: float | None = None,
                 decoder_only: bool = False) -> AutoencoderKL | AutoencoderTiny:
    """Train `vae` for `steps` batches of images, then freeze it and calibrate `scaling_factor`. With
    `latent_std`, first rescale its raw latents to that std on the first batch (`fold_latent_std`).

    `decoder_only`: train the decoder alone (the way Stability tuned sd-vae-ft-mse): the encoder, hence every
    latent and the `scaling_factor` a trained UNet relies on, stays bit for bit as it was, while the decoder
    learns to reconstruct better. The KL term then has no trainable input and only the reconstruction counts."""
    from tqdm.auto import tqdm
    device = next(vae.parameters()).device
    if decoder_only and latent_std is not None:
        raise UserInputError("--vae_latent_std rescales the encoder; it cannot be combined with a decoder-only phase")
    trained = decoder_modules(vae) if decoder_only else [vae]
    if latent_std is not None:
        first = next(batches).to(device)
        gain = fold_latent_std(vae, first, latent_std)
        batches = itertools.chain([first], batches)
        logger.info("VAE latents rescaled by %.3f to std %.2f", gain, latent_std)
    vae.requires_grad_(False).train()
    params = [p for module in trained for p in module.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    # cosine decay: the tiny VAE converges much further with a falling lr in a few hundred steps
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    seen = []
    bar = tqdm(range(steps), desc="vae pretrain", disable=not progress)
    for step in bar:
        images = next(batches).to(device)
        loss, logs = vae_loss(vae, images, kl_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        bar.set_postfix(l1=f"{logs['loss/vae_l1']:.4f}")
        if log is not None:
            log(step, logs)
        if len(seen) < 8:
            seen.append(images.detach())
    vae.requires_grad_(False).eval()
    if not decoder_only:  # the latents did not move: the UNet's scale must not either
        calibrate_scaling_factor(vae, torch.cat(seen))
    return vae


def decoder_modules(vae: AutoencoderKL | AutoencoderTiny) -> list[torch.nn.Module]:
    """The modules that turn latents into pixels: AutoencoderKL's post_quant_conv and decoder (its encoder
    side is encoder + quant_conv), AutoencoderTiny's decoder."""
    return [getattr(vae, name) for name in ("post_quant_conv", "decoder") if getattr(vae, name, None) is not None]


@torch.no_grad()
def calibrate_scaling_factor(vae: AutoencoderKL | AutoencoderTiny, images: torch.Tensor) -> float:
    """LDM §4.3.2: scale latents to unit variance; stored as `vae.config.scaling_factor`."""
    latents = encode_latents(vae, images, sample=True)
    factor = float(1.0 / latents.flatten().std().clamp_min(1e-6))
    vae.register_to_config(scaling_factor=factor)
    return factor
