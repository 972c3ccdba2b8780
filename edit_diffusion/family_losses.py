"""The per-family training losses of the modern editors, one small function each: (pipe, input pixels, edited
pixels, prompts, generator) -> scalar. FLUX.1 Kontext as diffusers' train_dreambooth_lora_flux_kontext.py
(rectified flow, the input's latents as context tokens), Qwen-Image-Edit the same way with Qwen's VL prompt (our
own: diffusers has no script), SDXL InstructPix2Pix as InstructPix2Pix §3.2 with SDXL's conditioning."""
from __future__ import annotations

import torch
from diffusers.training_utils import compute_density_for_timestep_sampling

KONTEXT_TRAIN_GUIDANCE = 1.0  # distilled-guidance input while training (diffusers' Kontext LoRA example: --guidance_scale=1)


# --- per-family losses: (pipe, input pixels, edited pixels, prompts, generator) -> scalar ---------------------

def _flow_noise(latents: torch.Tensor, scheduler, generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rectified flow (SD3 / Flux): x_t = (1 - sigma) x_0 + sigma noise, target noise - x_0; sigma one of the
    scheduler's training sigmas, drawn uniformly (diffusers' scripts, weighting "none"; with dynamic shifting, as
    Kontext and Qwen, they are unshifted). Returns (noisy, sigmas = timesteps / 1000, target)."""
    b = latents.shape[0]
    u = compute_density_for_timestep_sampling("none", b, generator=generator)
    indices = (u * scheduler.config.num_train_timesteps).long()
    sigmas = type(scheduler).from_config(scheduler.config).sigmas[indices]  # a fresh copy: never set_timesteps'd
    sigmas = sigmas.to(latents.device, latents.dtype).view(b, *[1] * (latents.ndim - 1))
    noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
    return (1 - sigmas) * latents + sigmas * noise, sigmas.flatten(), noise - latents


def kontext_loss(pipe, source, edited, prompts, generator) -> torch.Tensor:
    """diffusers' Kontext LoRA step: edited latents noised, the input's latents appended as context tokens
    (their position ids' first axis set to 1), prediction over the edited tokens only."""
    device, dtype = pipe.transformer.device, pipe.transformer.dtype
    with torch.no_grad():
        prompt_embeds, pooled, text_ids = pipe.encode_prompt(prompts, prompt_2=None, device=device)
        target_latents = pipe._encode_vae_image(edited.to(device, pipe.vae.dtype), None).to(dtype)
        context = pipe._encode_vae_image(source.to(device, pipe.vae.dtype), None).to(dtype)
    b, c, h, w = target_latents.shape
    noisy, sigmas, target = _flow_noise(target_latents, pipe.scheduler, generator)
    ids = pipe._prepare_latent_image_ids(b, h // 2, w // 2, device, dtype)
    context_ids = ids.clone()
    context_ids[..., 0] = 1
    tokens = pipe._pack_latents(noisy, b, c, h, w)
    hidden = torch.cat([tokens, pipe._pack_latents(context, b, c, h, w)], dim=1)
    guidance = (torch.full((b,), KONTEXT_TRAIN_GUIDANCE, device=device, dtype=dtype)
                if pipe.transformer.config.guidance_embeds else None)
    pred = pipe.transformer(hidden_states=hidden, timestep=sigmas, guidance=guidance, pooled_projections=pooled,
                            encoder_hidden_states=prompt_embeds, txt_ids=text_ids,
                            img_ids=torch.cat([ids, context_ids], dim=0), return_dict=False)[0]
    pred = pred[:, :tokens.shape[1]]  # (B, h/2 * w/2, 4C): the edited image's tokens
    return torch.nn.functional.mse_loss(pred.float(), pipe._pack_latents(target, b, c, h, w).float())


def qwen_loss(pipe, source, edited, prompts, generator) -> torch.Tensor:
    """Our Qwen-Image-Edit step: the prompt encoded with the input image by Qwen2.5-VL (as the pipeline does),
    edited latents noised, the input's latents appended as context tokens, rectified-flow target."""
    from PIL import Image
    device, dtype = pipe.transformer.device, pipe.transformer.dtype
    pictures = [Image.fromarray(((s.permute(1, 2, 0) + 1) * 127.5).clamp(0, 255).byte().numpy()) for s in source]
    with torch.no_grad():
        embeds, mask = _qwen_prompts(pipe, list(prompts), pictures, device)
        # the VAE is a video VAE: (B, 3, frames=1, H, W)
        target_latents = pipe._encode_vae_image(edited[:, :, None].to(device, pipe.vae.dtype), None).to(dtype)
        context = pipe._encode_vae_image(source[:, :, None].to(device, pipe.vae.dtype), None).to(dtype)
    b, c, _, h, w = target_latents.shape
    noisy, sigmas, target = _flow_noise(target_latents, pipe.scheduler, generator)
    tokens = pipe._pack_latents(noisy, b, c, h, w)
    hidden = torch.cat([tokens, pipe._pack_latents(context, b, c, h, w)], dim=1)
    pred = pipe.transformer(hidden_states=hidden, timestep=sigmas, guidance=None, encoder_hidden_states_mask=mask,
                            encoder_hidden_states=embeds, img_shapes=[[(1, h // 2, w // 2)] * 2] * b,
                            return_dict=False)[0][:, :tokens.shape[1]]
    return torch.nn.functional.mse_loss(pred.float(), pipe._pack_latents(target, b, c, h, w).float())


def _qwen_prompts(pipe, prompts: list[str], pictures: list, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L, D) embeddings and (B, L) mask, one prompt with its own picture per row (the 2509 pipeline reads a
    list of pictures as several inputs of one prompt), right-padded to the longest row."""
    rows = [pipe.encode_prompt(prompt=[p], image=[im], device=device) for p, im in zip(prompts, pictures)]
    # the pipelines return no mask when every token is valid
    rows = [(e, torch.ones(e.shape[:2], dtype=torch.long, device=e.device) if m is None else m) for e, m in rows]
    length = max(e.shape[1] for e, _ in rows)
    embeds = torch.cat([torch.nn.functional.pad(e, (0, 0, 0, length - e.shape[1])) for e, _ in rows])
    mask = torch.cat([torch.nn.functional.pad(m, (0, length - m.shape[1])) for _, m in rows])
    return embeds, mask


def sdxl_ip2p_loss(pipe, source, edited, prompts, generator) -> torch.Tensor:
    """InstructPix2Pix §3.2 on SDXL: noisy edited latents ++ the input's latents (8 channels), SDXL's pooled text
    and size conditioning (original = target = the crop, no crop offset)."""
    from diffusers import DDPMScheduler
    device, dtype = pipe.unet.device, pipe.unet.dtype
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(list(prompts), device=device, do_classifier_free_guidance=False)
        scale = pipe.vae.config.scaling_factor
        latents = pipe.vae.encode(edited.to(device, pipe.vae.dtype)).latent_dist.sample(generator) * scale
        context = pipe.vae.encode(source.to(device, pipe.vae.dtype)).latent_dist.mode()  # unscaled, as the pipeline
    b = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator).to(device, dtype)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator).to(device)
    noisy = scheduler.add_noise(latents.to(dtype), noise, timesteps)
    size = tuple(edited.shape[-2:])
    time_ids = torch.tensor([size + (0, 0) + size] * b, device=device, dtype=dtype)
    pred = pipe.unet(torch.cat([noisy, context.to(dtype)], dim=1), timesteps, embeds.to(dtype),
                     added_cond_kwargs={"text_embeds": pooled.to(dtype), "time_ids": time_ids}).sample
    kind = scheduler.config.prediction_type
    target = noise if kind == "epsilon" else scheduler.get_velocity(latents.to(dtype), noise, timesteps)
    return torch.nn.functional.mse_loss(pred.float(), target.float())


LOSSES = {"kontext": kontext_loss, "qwen": qwen_loss, "sdxl_ip2p": sdxl_ip2p_loss}
