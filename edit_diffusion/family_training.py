"""Fine-tuning the modern editors on our triplets (input_image, edit_prompt, edited_image; every data source of
read_triplets): a LoRA for FLUX.1 Kontext (the input as its context image, rectified-flow loss, as diffusers'
train_dreambooth_lora_flux_kontext.py), a LoRA for Qwen-Image-Edit (the same loss with Qwen's VL prompt and
packed context latents: diffusers has no script), full or LoRA fine-tuning of SDXL InstructPix2Pix (the input's
latents concatenated to the noisy ones, InstructPix2Pix §3.2; an SDXL text-to-image base gets its conv_in
widened to 8 channels first, as for SD 1.5). LoRAs are saved with the pipeline's own saver
(`pytorch_lora_weights.safetensors`, read by `pipe.load_lora_weights` and by `--editor ... --lora`)."""
from __future__ import annotations

import dataclasses
import logging
import math
import random
from pathlib import Path

import torch
from diffusers.training_utils import compute_density_for_timestep_sampling
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from common.checkpoints import save_json
from common.errors import TrainingStopped, UserInputError
from common.training import train_result

from .data import Columns, joint_crop_flip, read_triplets, to_uint8_pair
from .families import FAMILIES, Family, family_of, read_model_index
from .lora import LORA_TARGETS, LORA_WEIGHTS

logger = logging.getLogger(__name__)
# Base models each recipe also starts from (text-to-image SDXL: conv_in widened to an editor's 8 channels)
TRAIN_BASES = {"StableDiffusionXLPipeline": "StableDiffusionXLInstructPix2PixPipeline"}
KONTEXT_TRAIN_GUIDANCE = 1.0  # distilled-guidance input while training (diffusers' Kontext LoRA example: --guidance_scale=1)
# Flags this loop honours; any other flag set away from its default is refused (never silently ignored)
HONOURED = {"pretrained_model_name_or_path", "dataset_name", "train_data_dir", "original_image_column",
            "edit_prompt_column", "edited_image_column", "max_train_samples", "resolution", "center_crop",
            "random_flip", "train_batch_size", "num_train_epochs", "max_train_steps", "learning_rate", "adam_beta1",
            "adam_beta2", "adam_weight_decay", "adam_epsilon", "max_grad_norm", "lora_rank", "seed", "output_dir",
            "dataset_config_name", "cache_dir", "revision", "allow_overwrite_bundled", "max_nonfinite_steps"}


def family_to_train(config) -> str | None:
    """model_index.json's class name when --pretrained_model_name_or_path is a modern editor (or a base a recipe
    starts from, TRAIN_BASES), else None (the SD 1.5 trainer)."""
    from .loading import source_kind
    model = config.pretrained_model_name_or_path
    if model is None:
        return None
    try:
        kind = source_kind(model)
    except UserInputError:
        return None  # the SD trainer reports a bad path
    index = read_model_index(model, kind, config.revision, config.cache_dir)
    name = (index or {}).get("_class_name")
    return name if name in TRAIN_BASES else family_of(index)


def check_flags(config, family: Family) -> None:
    """One line for each flag this loop does not use, and for full fine-tuning where only LoRA is offered."""
    for f in dataclasses.fields(config):
        if f.name in HONOURED or f.name.startswith("default_"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if getattr(config, f.name) != default:
            raise UserInputError(f"--{f.name} is not used when fine-tuning {family.label} (train_edit.py's loop for "
                                 "it honours the data, resolution, batch, steps, optimiser, --lora_rank and "
                                 "--seed flags); leave it out")
    if config.lora_rank is None and family.training != "sdxl_ip2p":
        raise UserInputError(f"{family.label} is fine-tuned as a LoRA only; give --lora_rank (e.g. 16)")


class PairData(torch.utils.data.Dataset):
    """(input, edited) pixels in [-1, 1] at resolution x resolution (same crop and flip) and the instruction."""

    def __init__(self, triplets, resolution: int, center: bool, flip: bool, seed: int):
        self.triplets, self.resolution, self.center, self.flip, self.seed = triplets, resolution, center, flip, seed
        self.pairs = [to_uint8_pair(t, resolution) for t in triplets]

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, index: int):
        pair = joint_crop_flip(self.pairs[index], self.resolution, self.center, self.flip,
                               random.Random(f"{self.seed}/{index}/{torch.randint(0, 2**31, (1,)).item()}"))
        pixels = pair.float() / 127.5 - 1.0
        return pixels[0], pixels[1], self.triplets[index].edit_prompt


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


def denoiser_of(pipe) -> torch.nn.Module:
    return pipe.unet if hasattr(pipe, "unet") else pipe.transformer


def prepare_trainable(pipe, rank: int | None) -> list[torch.nn.Parameter]:
    """LoRA adapters on the denoiser's attention projections (rank given), else the whole SDXL UNet; an SDXL
    text-to-image UNet first gets its conv_in widened to 8 channels (zero weights for the input's latents)."""
    from .surgery import EDIT_IN_CHANNELS, expand_conv_in
    model = denoiser_of(pipe)
    if hasattr(pipe, "unet") and model.config.in_channels != EDIT_IN_CHANNELS:
        expand_conv_in(model)
    for module in (m for m in pipe.components.values() if isinstance(m, torch.nn.Module)):
        module.requires_grad_(False)
    if rank is None:
        model.requires_grad_(True)
    else:
        model.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                     target_modules=LORA_TARGETS))
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()  # trainable weights in float32 (frozen ones may be bf16 on a GPU)
    model.train()
    return params


def save_trained(pipe, rank: int | None, out_dir: Path) -> Path:
    """LoRA: the pipeline class's own LoRA saver; full SDXL fine-tuning: the whole pipeline folder."""
    model = denoiser_of(pipe)
    if rank is None:
        pipe.save_pretrained(str(out_dir), safe_serialization=True)
        return out_dir
    layers = get_peft_model_state_dict(model)
    if hasattr(pipe, "unet"):
        from diffusers.utils import convert_state_dict_to_diffusers
        type(pipe).save_lora_weights(str(out_dir), unet_lora_layers=convert_state_dict_to_diffusers(layers),
                                     safe_serialization=True)
    else:
        type(pipe).save_lora_weights(str(out_dir), transformer_lora_layers=layers, safe_serialization=True)
    return out_dir / LORA_WEIGHTS


def train_family(config, index_class: str) -> dict:
    """Fine-tune the model at --pretrained_model_name_or_path (model_index.json class `index_class`) on the
    triplets; returns common.training.train_result with the LoRA file (or the pipeline folder) under files."""
    import diffusers

    from common.training import seed_rank

    # --- Setup ---------------------------------------------------------------------------------------
    class_name = TRAIN_BASES.get(index_class, index_class)
    family = FAMILIES[class_name]
    check_flags(config, family)
    if index_class in TRAIN_BASES and config.lora_rank is not None:
        raise UserInputError(f"--lora_rank: {config.pretrained_model_name_or_path} is a text-to-image {index_class}; "
                             "its conv_in is widened to 8 channels and must train with the rest (a LoRA file cannot "
                             "hold it): leave out --lora_rank for full fine-tuning, or start from an editor")
    out_dir = Path(config.output_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserInputError(f"--output_dir {out_dir}: not empty (a fine-tuning run writes a fresh folder)")
    seed = 0 if config.seed is None else config.seed
    seed_rank(seed, 0)
    generator = torch.Generator().manual_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # frozen weights; trained ones stay fp32
    triplets = read_triplets(config.dataset_name, config.train_data_dir,
                             Columns(config.original_image_column, config.edit_prompt_column,
                                     config.edited_image_column), config.dataset_config_name, config.cache_dir)
    if config.max_train_samples is not None:
        triplets = triplets[:config.max_train_samples]

    # --- Create model ----------------------------------------------------------------------------------
    model = config.pretrained_model_name_or_path
    from .loading import source_kind
    local = source_kind(model) == "folder"
    pipe = getattr(diffusers, class_name).from_pretrained(model, dtype=dtype, local_files_only=local,
                                                          revision=config.revision, cache_dir=config.cache_dir)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    params = prepare_trainable(pipe, config.lora_rank)
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                                  weight_decay=config.adam_weight_decay, eps=config.adam_epsilon)
    data = PairData(triplets, config.resolution, config.center_crop, config.random_flip, seed)
    loader = torch.utils.data.DataLoader(data, batch_size=config.train_batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    steps = config.max_train_steps or config.num_train_epochs * math.ceil(len(data) / config.train_batch_size)
    loss_fn = LOSSES[family.training]
    logger.info("fine-tuning %s (%s) for %d steps on %d triplets, %d trainable parameters", family.label,
                "LoRA rank %d" % config.lora_rank if config.lora_rank else "full UNet", steps, len(data),
                sum(p.numel() for p in params))

    # --- Train -------------------------------------------------------------------------------------------
    step, epoch, bad, loss_value = 0, 0, 0, float("nan")
    while step < steps:
        for source, edited, prompts in loader:
            loss = loss_fn(pipe, source, edited, list(prompts), generator)
            if not torch.isfinite(loss):
                bad += 1
                if bad >= config.max_nonfinite_steps:
                    raise TrainingStopped(f"the loss was not finite for {bad} steps in a row; lower --learning_rate")
                optimizer.zero_grad(set_to_none=True)
                continue
            bad = 0
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step, loss_value = step + 1, loss.item()
            logger.info("step %d/%d loss %.4f", step, steps, loss_value)
            if step >= steps:
                break
        epoch += 1

    # --- Save ----------------------------------------------------------------------------------------
    denoiser_of(pipe).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = save_trained(pipe, config.lora_rank, out_dir)
    save_json(config.to_dict(), out_dir / "train_config.json")
    key = "lora" if config.lora_rank else "pipeline"
    return train_result(step, epoch, {"loss": loss_value}, out_dir, {key: str(saved)})
