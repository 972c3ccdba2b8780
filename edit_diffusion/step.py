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
              dropout_prob: float, generator: torch.Generator | None = None, region_weight: float = 0.0
              ) -> tuple[torch.Tensor, dict]:
    """MSE between the UNet output and the target for one batch; returns (loss, logs). A batch of pixels is
    encoded here; a batch from the latent cache (it has "latent_mean") goes to cached_edit_loss, with `null_ids`
    then the cache's null text (embeddings when the text is cached). `region_weight`: see edit_region_weights."""
    scaling_factor = vae.config.scaling_factor
    if "latent_mean" in batch:
        return cached_edit_loss(unet, text_encoder, noise_scheduler, batch, null_ids, dropout_prob,
                                scaling_factor, generator, region_weight)
    latents, image_latents = encode_pair(vae, batch["input_pixels"], batch["edited_pixels"], generator)
    weights = edit_region_weights(latents, image_latents * scaling_factor, region_weight)
    return denoising_loss(unet, text_encoder, noise_scheduler, latents, image_latents, batch["input_ids"], null_ids,
                          dropout_prob, generator, weights)


def edit_region_weights(latents: torch.Tensor, input_latents: torch.Tensor, strength: float) -> torch.Tensor | None:
    """Per-position loss weights (B, 1, h, w) = 1 + strength * min(|edited - input| channel mean, 1), both latents
    scaled (unit std), so a position the edit moves by a full latent std counts 1 + strength times; None at
    strength 0 (the stock uniform MSE). Why: a local edit (a recolour) changes a small share of the positions,
    and under a uniform MSE the model that copies the input there and only part-turns the hue loses little.
    Measured on the bundled editor in docs/bundled.md: more of colour A recoloured, and more spill."""
    if not strength:
        return None
    change = (latents.float() - input_latents.float()).abs().mean(dim=1, keepdim=True)
    return 1.0 + strength * change.clamp(max=1.0)


def sample_latents(mean: torch.Tensor, std: torch.Tensor | None, generator: torch.Generator | None = None
                   ) -> torch.Tensor:
    """A posterior sample of the edited images drawn as encode_pair draws it: diffusers' DiagonalGaussianDistribution
    .sample (mean + std * N(0, 1)) over the stacked [input; edited] batch, of which the edited half is kept, so a
    cached run consumes the random stream exactly as an uncached one. `std` None: deterministic latents
    (AutoencoderTiny), nothing drawn."""
    if std is None:
        return mean
    shape = (2 * mean.shape[0], *mean.shape[1:])
    return mean + std * torch.randn(shape, generator=generator, device=mean.device, dtype=mean.dtype)[mean.shape[0]:]


def cached_edit_loss(unet, text_encoder, noise_scheduler, batch: dict[str, torch.Tensor], null_text: torch.Tensor,
                     dropout_prob: float, scaling_factor: float, generator: torch.Generator | None = None,
                     region_weight: float = 0.0) -> tuple[torch.Tensor, dict]:
    """edit_loss on a batch from the latent cache (latent_cache.CachedEditDataset): the edited image's posterior
    is sampled here, the text is cached embeddings (null_text: the empty prompt's, (1, L, D)) or token ids
    (null_text: the empty prompt's ids) when the text encoder is trained."""
    latents = sample_latents(batch["latent_mean"], batch.get("latent_std"), generator) * scaling_factor
    text = batch["encoder_hidden_states"] if "encoder_hidden_states" in batch else batch["input_ids"]
    weights = edit_region_weights(latents, batch["image_latents"] * scaling_factor, region_weight)
    return denoising_loss(unet, text_encoder, noise_scheduler, latents, batch["image_latents"], text, null_text,
                          dropout_prob, generator, weights)


def denoising_loss(unet, text_encoder, noise_scheduler, latents: torch.Tensor, image_latents: torch.Tensor,
                   text: torch.Tensor, null_text: torch.Tensor, dropout_prob: float,
                   generator: torch.Generator | None = None, weights: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, dict]:
    """Noise the (scaled) target latents, drop conditionings, predict, MSE. `text`: ids (B, L), encoded here, or
    embeddings (B, L, D). `weights` (B, 1, h, w): a weighted mean of the squared errors instead of the plain one."""
    device = latents.device
    noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
    steps = noise_scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (latents.shape[0],), generator=generator, device=device).long()
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)

    text, image_latents = apply_conditioning_dropout(text, null_text, image_latents, dropout_prob, generator)
    if text.dtype == torch.long:  # token ids: run the text encoder (trained or not)
        with torch.set_grad_enabled(torch.is_grad_enabled() and text_encoder.training):
            hidden = encode_text(text_encoder, text)
    else:
        hidden = text
    unet_dtype = next(unet.parameters()).dtype
    model_input = torch.cat([noisy, image_latents.to(noisy.dtype)], dim=1)  # (B, 8, h, w)
    pred = unet(model_input.to(unet_dtype), timesteps, hidden.to(unet_dtype), return_dict=False)[0]
    target = training_target(noise_scheduler.config.prediction_type, noise_scheduler, latents, noise, timesteps)
    if weights is None:
        loss = F.mse_loss(pred.float(), target.float())
    else:
        squared = (pred.float() - target.float()) ** 2
        loss = (squared * weights).sum() / (weights.sum() * squared.shape[1])
    return loss, {"loss/train": float(loss.detach())}
