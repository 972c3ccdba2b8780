"""The InstructPix2Pix training loss (§3.2): denoise the edited image's latents conditioned on the
instruction and on the input image's latents concatenated as 4 extra UNet input channels."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .dropout import apply_conditioning_dropout
from .scratch import latents_of


def training_target(prediction_type: str, scheduler, latents: torch.Tensor, noise: torch.Tensor,
                    timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet regresses, read from `scheduler.config.prediction_type`."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)  # v = sqrt(a) eps - sqrt(1-a) x0
    if prediction_type == "sample":
        return latents
    raise ValueError(f"unknown prediction_type {prediction_type!r} (epsilon, v_prediction, sample)")


@torch.no_grad()
def encode_pair(vae, input_pixels: torch.Tensor, edited_pixels: torch.Tensor,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One VAE pass for both images: edited -> scaled posterior sample (the diffusion target space),
    input -> unscaled posterior mode (the conditioning, as the stock pipeline encodes it)."""
    batch = input_pixels.shape[0]
    encoded = vae.encode(torch.cat([input_pixels, edited_pixels]).to(vae.dtype))
    image_latents = latents_of(encoded)[:batch]
    edited = latents_of(encoded, sample=True, generator=generator)[batch:] * vae.config.scaling_factor
    return edited, image_latents


def encode_text(text_encoder, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, L) ids -> (B, L, D) last hidden states (what SD's UNet cross-attends to)."""
    return text_encoder(input_ids, return_dict=False)[0]


def edit_loss(unet, vae, text_encoder, noise_scheduler, batch: dict[str, torch.Tensor], null_ids: torch.Tensor,
              dropout_prob: float, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """MSE between the UNet output and the target for one batch; returns (loss, logs)."""
    device = batch["input_pixels"].device
    latents, image_latents = encode_pair(vae, batch["input_pixels"], batch["edited_pixels"], generator)
    noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
    steps = noise_scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (latents.shape[0],), generator=generator, device=device).long()
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)

    ids, image_latents = apply_conditioning_dropout(batch["input_ids"], null_ids, image_latents, dropout_prob,
                                                    generator)
    with torch.set_grad_enabled(torch.is_grad_enabled() and text_encoder.training):
        hidden = encode_text(text_encoder, ids)
    unet_dtype = next(unet.parameters()).dtype
    model_input = torch.cat([noisy, image_latents.to(noisy.dtype)], dim=1)  # (B, 8, h, w)
    pred = unet(model_input.to(unet_dtype), timesteps, hidden.to(unet_dtype), return_dict=False)[0]
    target = training_target(noise_scheduler.config.prediction_type, noise_scheduler, latents, noise, timesteps)
    loss = F.mse_loss(pred.float(), target.float())
    return loss, {"loss/train": float(loss.detach())}
