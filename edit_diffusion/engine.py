"""Our InstructPix2Pix sampler over the diffusers components (UNet, VAE, text encoder, a fresh scheduler per
call): eq. 3 with only the UNet branches the two guidance scales need, variants and branches in
memory-bounded chunks, one generator per variant so chunking never changes an image.

The stock pipeline always runs three branches when s_T > 1 (one of them wasted when s_I = 1) and one
branch otherwise (then it ignores s_I, so s_T = 1, s_I = 1.8 edits like s_I = 1). Here:
  s_T = s_I = 1 -> 1 branch:  e = e(c_I, c_T)
  s_I = 1       -> 2 branches: e = e(c_I, 0) + s_T (e(c_I, c_T) - e(c_I, 0))
  otherwise     -> 3 branches: eq. 3 (with s_T = 1: e = e(c_I, c_T) + (s_I - 1)(e(c_I, 0) - e(0, 0)))
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor

from .scratch import latents_of

# UNet batch rows, in the stock pipeline's order: (image cond, text cond) per branch (InstructPix2Pix §3.3).
TEXT_AND_IMAGE, IMAGE_ONLY, UNCONDITIONAL = "c_I,c_T", "c_I,0", "0,0"
# Decode with the VAE's own tiled decoder (AutoencoderKL) when the image's long side exceeds this (px):
# SD's decoder keeps 128-512 channels at full resolution plus a mid-block attention over every latent pixel.
VAE_TILE_ABOVE = 1024
# Share of the free CUDA/MPS memory one edit may plan its UNet rows into (the rest: VAE, fragmentation,
# a second edit running at the same time in the web app).
MEMORY_SHARE = 0.4
# CPU: one UNet row per call once a row's full-resolution activation (block_out_channels[0] x h x w) reaches this
# many bytes; below it, the branches of one variant share a call (per-call overhead matters for small rows). Every
# activation is a fresh allocation, and glibc serves blocks above its mmap threshold (32 MiB at most) with new pages
# the kernel zeroes on first touch, every step: the bundled editor (factor-1 VAE) at 512 px faults ~1.87M pages
# (7 GB) per 3-row call against ~1.38M for three 1-row calls (its smaller, deeper levels go back to the heap).
# CPU seconds per 3-row step, one thread (docs/benchmarks.md): bundled 512 px 20.1 -> 18.2, 256 px 3.6 -> 2.6;
# tiny SD-shaped model 1024 px 4.8 -> 4.0, but 512 px (2 MiB rows) 0.69 -> 0.72, hence the threshold.
CPU_SPLIT_ABOVE = 4 * 2**20


def branches_for(cfg_text: float, cfg_image: float) -> tuple[str, ...]:
    """The UNet branches eq. 3 needs for these scales (see the module docstring)."""
    if cfg_image == 1.0:
        return (TEXT_AND_IMAGE,) if cfg_text == 1.0 else (TEXT_AND_IMAGE, IMAGE_ONLY)
    return (TEXT_AND_IMAGE, IMAGE_ONLY, UNCONDITIONAL)


def dual_guidance(pred_text_img: torch.Tensor, pred_img: torch.Tensor, pred_uncond: torch.Tensor,
                  cfg_text: float, cfg_image: float) -> torch.Tensor:
    """InstructPix2Pix eq. 3: e = e(0,0) + s_I (e(c_I,0) - e(0,0)) + s_T (e(c_I,c_T) - e(c_I,0))."""
    return pred_uncond + cfg_text * (pred_text_img - pred_img) + cfg_image * (pred_img - pred_uncond)


def combine(preds: dict[str, torch.Tensor], cfg_text: float, cfg_image: float) -> torch.Tensor:
    """Guided prediction from the branches `branches_for` chose (eq. 3 with the constant terms dropped)."""
    if UNCONDITIONAL in preds:
        return dual_guidance(preds[TEXT_AND_IMAGE], preds[IMAGE_ONLY], preds[UNCONDITIONAL], cfg_text, cfg_image)
    if IMAGE_ONLY in preds:  # s_I = 1: the e(0,0) terms cancel
        return preds[IMAGE_ONLY] + cfg_text * (preds[TEXT_AND_IMAGE] - preds[IMAGE_ONLY])
    return preds[TEXT_AND_IMAGE]


@dataclass(frozen=True)
class Conditioning:
    """What every branch is built from (batch 1; repeated per variant and branch)."""
    text: torch.Tensor    # (1, L, D) hidden states of the instruction
    null: torch.Tensor    # (1, L, D) hidden states of "" (the pipeline's unconditional text)
    image: torch.Tensor   # (1, C, h, w) unscaled image latents (posterior mode), as the pipeline encodes them


@torch.no_grad()
def encode_text(text_encoder, tokenizer, texts: list[str], device) -> torch.Tensor:
    """(N, L, D) last hidden states, padded/truncated to the tokenizer's length like the pipeline."""
    ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt")
    mask = ids.attention_mask.to(device) if getattr(text_encoder.config, "use_attention_mask", False) else None
    return text_encoder(ids.input_ids.to(device), attention_mask=mask)[0]


@torch.no_grad()
def conditioning(text_encoder, tokenizer, vae, processor: VaeImageProcessor, image, instruction: str,
                 device, dtype) -> Conditioning:
    """Encode the instruction, the empty text and the image once per edit."""
    hidden = encode_text(text_encoder, tokenizer, [instruction, ""], device).to(dtype)
    pixels = processor.preprocess(image).to(device=device, dtype=vae.dtype)  # (1, 3, H, W) in [-1, 1]
    latents = latents_of(vae.encode(pixels)).to(dtype)  # AutoencoderKL: mode; AutoencoderTiny: its latents
    return Conditioning(text=hidden[:1], null=hidden[1:], image=latents)


def unet_rows(branches: tuple[str, ...], latents: torch.Tensor, cond: Conditioning
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The UNet batch, branch-major like the pipeline: (B n, C + C_img, h, w) inputs, (B n, L, D) texts.
    Built once per loop: `denoise` overwrites only the first C channels (the noisy latents) each step."""
    n = latents.shape[0]
    zeros = torch.zeros_like(cond.image)
    image = {TEXT_AND_IMAGE: cond.image, IMAGE_ONLY: cond.image, UNCONDITIONAL: zeros}
    text = {TEXT_AND_IMAGE: cond.text, IMAGE_ONLY: cond.null, UNCONDITIONAL: cond.null}
    inputs = torch.cat([torch.cat([latents, image[b].expand(n, -1, -1, -1)], 1) for b in branches])
    hidden = torch.cat([text[b].expand(n, -1, -1) for b in branches])
    return inputs, hidden


def step_kwargs(scheduler, generators: list[torch.Generator]) -> dict:
    """`eta` / `generator` for schedulers whose `step` takes them (the pipeline's prepare_extra_step_kwargs)."""
    params = inspect.signature(scheduler.step).parameters
    return {**({"eta": 0.0} if "eta" in params else {}), **({"generator": generators} if "generator" in params else {})}


@torch.no_grad()
def denoise(unet, scheduler, cond: Conditioning, generators: list[torch.Generator], steps: int,
            cfg_text: float, cfg_image: float, rows_per_call: int) -> torch.Tensor:
    """One chunk of variants (one generator each) from noise to latents: (n, C, h, w).
    `scheduler` must be fresh (its step index and history belong to this call)."""
    branches = branches_for(cfg_text, cfg_image)
    device, dtype = cond.image.device, cond.image.dtype
    scheduler.set_timesteps(steps, device=device)
    shape = (len(generators), unet.config.out_channels, *cond.image.shape[-2:])
    latents = randn_tensor(shape, generator=generators, device=device, dtype=dtype) * scheduler.init_noise_sigma
    extra = step_kwargs(scheduler, generators)
    inputs, hidden = unet_rows(branches, latents, cond)
    noisy = inputs.view(len(branches), len(generators), *inputs.shape[1:])[:, :, :shape[1]]  # (B, n, C, h, w) view
    for t in scheduler.timesteps:
        noisy.copy_(scheduler.scale_model_input(latents, t))  # into every branch's rows; image/text rows stay
        preds = [unet(x, t, encoder_hidden_states=h, return_dict=False)[0]
                 for x, h in zip(inputs.split(rows_per_call), hidden.split(rows_per_call))]
        pred = preds[0] if len(preds) == 1 else torch.cat(preds)
        guided = combine(dict(zip(branches, pred.chunk(len(branches)))), cfg_text, cfg_image)
        latents = scheduler.step(guided, t, latents, **extra, return_dict=False)[0]
    return latents


@torch.no_grad()
def decode(vae, processor: VaeImageProcessor, latents: torch.Tensor) -> np.ndarray:
    """(n, C, h, w) latents -> (n, H, W, 3) floats in [0, 1], one image at a time (VAE slicing); tiled
    above VAE_TILE_ABOVE px where the VAE has a tiled decoder."""
    out = []
    for z in latents.split(1):
        z = z.to(vae.dtype) / vae.config.scaling_factor
        side = max(z.shape[-2:]) * processor.config.vae_scale_factor
        tiled = side > VAE_TILE_ABOVE and hasattr(vae, "tiled_decode")
        image = vae.tiled_decode(z, return_dict=False)[0] if tiled else vae.decode(z, return_dict=False)[0]
        out.append(processor.postprocess(image, output_type="np"))
    return np.concatenate(out)


def row_bytes(unet, latent_hw: tuple[int, int], dtype: torch.dtype) -> int:
    """Rough activation bytes of one UNet row at this latent size (the widest skip tensors of every level,
    kept for the decoder, times a margin for the resnet/attention temporaries)."""
    h, w = latent_hw
    levels = unet.config.block_out_channels
    skips = sum(c * (h // 2 ** i) * (w // 2 ** i) for i, c in enumerate(levels))
    return int(skips * torch.finfo(dtype).bits // 8 * 24)


def free_bytes(device: torch.device) -> int | None:
    """Free accelerator memory, or None on the CPU (where batching rows does not speed anything up)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "mps":
        return max(0, torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    return None


def plan_rows(unet, latent_hw: tuple[int, int], dtype: torch.dtype, device: torch.device, branches: int,
              variants: int, batch_size: int | None) -> int:
    """UNet rows per call: --batch-size if given, else what MEMORY_SHARE of the free device memory holds,
    else (CPU) `cpu_rows`; never more than the edit has."""
    if batch_size is None:
        free = free_bytes(device)
        if free is None:
            batch_size = cpu_rows(unet, latent_hw, dtype, branches)
        else:
            batch_size = int(free * MEMORY_SHARE) // max(1, row_bytes(unet, latent_hw, dtype))
    return max(1, min(batch_size, branches * variants))


def cpu_rows(unet, latent_hw: tuple[int, int], dtype: torch.dtype, branches: int) -> int:
    """CPU rows per call: 1 when a row's full-resolution activation reaches CPU_SPLIT_ABOVE, else `branches`."""
    top = unet.config.block_out_channels[0] * latent_hw[0] * latent_hw[1] * torch.finfo(dtype).bits // 8
    return 1 if top >= CPU_SPLIT_ABOVE else branches


def variant_chunks(variants: int, branches: int, rows: int) -> list[range]:
    """Variant index ranges run as one denoising loop each: as many whole variants as `rows` holds."""
    per_chunk = max(1, rows // branches)
    return [range(i, min(i + per_chunk, variants)) for i in range(0, variants, per_chunk)]
