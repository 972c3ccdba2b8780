"""The InstructPix2Pix training loop on accelerate: optional VAE pre-training phase (from-scratch VAEs),
then the UNet (and optionally text encoder) phase with EMA, accumulation, mixed precision, warmup,
clipping, resumable safetensors checkpoints, TensorBoard scalars and validation edits."""
from __future__ import annotations

import itertools
import logging
import math
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from diffusers import StableDiffusionInstructPix2PixPipeline
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from common.checkpoints import save_json
from common.distributed import cpu_multiprocess
from common.seeding import without_global_rng_draws
from common.errors import TrainingStopped, UserInputError
from common.images import load_image, pil_to_tensor
from common.interrupt import GracefulStop, all_ranks_true
from common.tensorboard import image_grid, log_grid, log_scalars

from . import checkpointing as ckpt
from .components import build_components, edit_scheduler_name, enable_attention_backend
from .config import EditTrainConfig
from .data import Columns, EditDataset, image_batches, read_triplets
from .editor import SCHEDULERS, EditSettings, edit_image
from .lora import add_unet_lora, fuse_unet_lora, save_unet_lora
from .scratch import pretrain_vae
from .step import edit_loss

logger = logging.getLogger(__name__)


def make_pipeline(parts, unet, scheduler_name: str) -> StableDiffusionInstructPix2PixPipeline:
    """A pipeline around the current modules (no copies), with the run's editing scheduler."""
    scheduler = SCHEDULERS[scheduler_name].from_config(parts.scheduler.config)
    return StableDiffusionInstructPix2PixPipeline(
        vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def validate(config, parts, unet, image, writer, step: int, scheduler_name: str, out_dir: Path) -> None:
    """Edit the validation image and log [input | variants] under images/validation (TB + PNG)."""
    pipe = make_pipeline(parts, unet, scheduler_name)
    pipe.set_progress_bar_config(disable=True)
    settings = EditSettings(steps=config.validation_inference_steps or config.default_steps or 20,
                            cfg_text=config.default_cfg_text, cfg_image=config.default_cfg_image,
                            seed=config.seed or 0, scheduler=scheduler_name, resolution=config.resolution,
                            num_variants=config.num_validation_images)
    was_training = unet.training
    unet.eval()
    parts.text_encoder.eval()
    # under mixed precision the frozen modules run in half precision: lift them to the UNet's dtype
    # for the pipeline, which expects one dtype throughout
    dtypes = {module: module.dtype for module in (parts.vae, parts.text_encoder)}
    try:
        for module in dtypes:
            module.to(unet.dtype)
        with torch.no_grad():
            outputs, _ = edit_image(pipe, image, config.validation_prompt, settings)
    finally:
        for module, dtype in dtypes.items():
            module.to(dtype)
    unet.train(was_training)
    parts.text_encoder.train(config.train_text_encoder)
    columns = [pil_to_tensor(image)[None]] + [pil_to_tensor(o)[None] for o in outputs]
    log_grid(writer, "images/validation", image_grid(columns), step, save_dir=out_dir / "validation")


def train(config: EditTrainConfig) -> dict:
    """Run training; returns {"global_step", "output_dir", "final_loss", "checkpoints"}."""
    # --- Setup ---------------------------------------------------------------------------------------
    out_dir = Path(config.output_dir)
    accelerator = Accelerator(
        cpu=cpu_multiprocess(),  # torchrun on CPUs: form a gloo group instead of N independent runs
        gradient_accumulation_steps=config.gradient_accumulation_steps, mixed_precision=config.mixed_precision,
        project_config=ProjectConfiguration(project_dir=str(out_dir), logging_dir=str(out_dir / config.logging_dir)),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
    if config.seed is not None:
        set_seed(config.seed)
    # every input is checked before anything is written: a bad flag or file leaves the output folder untouched
    if out_dir.exists() and not out_dir.is_dir():
        raise UserInputError(f"--output_dir {out_dir}: exists and is not a folder")
    resume_dir = ckpt.find_resume_dir(out_dir, config.resume_from_checkpoint)
    validation_image = load_image(config.validation_image) if config.validation_image else None
    columns = Columns(config.original_image_column, config.edit_prompt_column, config.edited_image_column)
    triplets = read_triplets(config.dataset_name, config.train_data_dir, columns)
    if config.push_to_hub:
        ckpt.check_hub_reachable(config.hub_model_id or out_dir.name)

    # --- Create model ----------------------------------------------------------------------------------
    parts, noise_scheduler = build_components(config)
    writer = None
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_json(config.to_dict(), out_dir / "train_config.json")
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out_dir / config.logging_dir))
    prediction_type = noise_scheduler.config.prediction_type
    scheduler_name = edit_scheduler_name(config, prediction_type)
    logger.info("editing scheduler for validation and the saved pipeline: %s", scheduler_name)
    unet, vae, text_encoder = parts.unet, parts.vae, parts.text_encoder
    vae.requires_grad_(False)
    text_encoder.requires_grad_(config.train_text_encoder)
    enable_attention_backend(unet, config.enable_xformers_memory_efficient_attention)
    if config.lora_rank is not None:
        unet.requires_grad_(False)
        add_unet_lora(unet, config.lora_rank)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if config.train_text_encoder:
            text_encoder.gradient_checkpointing_enable()

    # --- Data -------------------------------------------------------------------------------------------
    if config.max_train_samples is not None:
        triplets = triplets[:config.max_train_samples]
    dataset = EditDataset(triplets, parts.tokenizer, config.resolution, config.center_crop, config.random_flip,
                          config.cache_images, seed=config.seed)
    # own generator: creating a loader iterator draws a base seed from it instead of from the global RNG, so a
    # resumed run (which creates one more iterator) keeps the noise / timestep / dropout stream of the original
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.train_batch_size, shuffle=True,
                                         num_workers=config.dataloader_num_workers, drop_last=False,
                                         generator=torch.Generator().manual_seed(dataset.seed))
    null_ids = parts.tokenizer([""], padding="max_length", max_length=parts.tokenizer.model_max_length,
                               return_tensors="pt").input_ids[0]

    # --- Resume: checkpoint components not held by the accelerator state --------------------------------------
    if resume_dir is not None:
        ckpt.verify_resume_folder(resume_dir, accelerator.process_index)  # every file, before any is loaded
        ckpt.restore_frozen_components(resume_dir, parts)
    elif config.vae_pretrain_steps:
        # --- VAE phase (LDM: autoencoder first, diffusion on its frozen latents) ------------------------
        vae.to(accelerator.device)
        gen = torch.Generator().manual_seed(config.seed if config.seed is not None else 0)
        pretrain_vae(vae, image_batches(dataset, config.train_batch_size, gen, config.vae_pretrain_crop),
                     config.vae_pretrain_steps,
                     config.vae_learning_rate, config.vae_kl_weight,
                     log=lambda s, logs: log_scalars(writer, logs, s) if s % 10 == 0 else None,
                     progress=accelerator.is_local_main_process)
        logger.info("VAE pre-trained; latent scaling_factor %.4f", vae.config.scaling_factor)

    # --- Optimizer, lr schedule, EMA ------------------------------------------------------------------------------
    trainable = [p for p in unet.parameters() if p.requires_grad]
    if config.train_text_encoder:
        trainable += list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                                  weight_decay=config.adam_weight_decay, eps=config.adam_epsilon)
    # each process gets 1/N of the batches once the loader is prepared (accelerate shards it, rounding up)
    updates_per_epoch = math.ceil(math.ceil(len(loader) / accelerator.num_processes)
                                  / config.gradient_accumulation_steps)
    max_steps = config.max_train_steps or config.num_train_epochs * updates_per_epoch
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=max_steps * accelerator.num_processes)
    if config.train_text_encoder:
        unet, text_encoder, optimizer, loader, lr_scheduler = accelerator.prepare(
            unet, text_encoder, optimizer, loader, lr_scheduler)
    else:
        unet, optimizer, loader, lr_scheduler = accelerator.prepare(unet, optimizer, loader, lr_scheduler)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    # frozen modules run in the mixed-precision dtype (diffusers recipe); no cast when it is float32
    cast = {} if weight_dtype == torch.float32 else {"dtype": weight_dtype}
    vae.to(accelerator.device, **cast)
    if not config.train_text_encoder:
        text_encoder.to(accelerator.device, **cast)
    parts.text_encoder = accelerator.unwrap_model(text_encoder)  # the pipeline needs the bare module
    ema = EMAModel(accelerator.unwrap_model(unet).parameters(), decay=config.ema_decay, use_ema_warmup=True) \
        if config.use_ema else None

    global_step = 0
    if resume_dir is not None:
        ckpt.load_accelerator_state(accelerator, resume_dir, lr_scheduler)
        global_step = ckpt.load_trainer_state(resume_dir, ema)
        accelerator.print(f"resumed from {resume_dir.name} at step {global_step}")
    updates_per_epoch = math.ceil(len(loader) / config.gradient_accumulation_steps)  # the prepared, per-rank loader
    first_epoch = global_step // updates_per_epoch
    skip_batches = (global_step % updates_per_epoch) * config.gradient_accumulation_steps

    # --- Train ---------------------------------------------------------------------------------------------------
    unet.train()
    text_encoder.train(config.train_text_encoder)
    bar = tqdm(total=max_steps, initial=global_step, desc="train", disable=not accelerator.is_local_main_process)
    loss_value, window_start, window_samples, nonfinite = float("nan"), time.perf_counter(), 0, 0
    stopping = False
    with GracefulStop() as stop:
        # epochs until max_steps optimisation steps are done (batches skipped for a non-finite loss do not count)
        for epoch in itertools.count(first_epoch):
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
            dataset.set_epoch(epoch)  # accelerate skips the dataset's set_epoch when its sampler has one
            epoch_loader = loader
            if epoch == first_epoch and skip_batches:
                epoch_loader = accelerator.skip_first_batches(loader, skip_batches)
            for batch in without_global_rng_draws(epoch_loader):
                models = (unet, text_encoder) if config.train_text_encoder else (unet,)
                with accelerator.accumulate(*models):
                    batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                    batch["input_pixels"] = batch["input_pixels"].to(weight_dtype)
                    batch["edited_pixels"] = batch["edited_pixels"].to(weight_dtype)
                    loss, _ = edit_loss(unet, vae, text_encoder, noise_scheduler, batch, null_ids.to(accelerator.device),
                                        config.conditioning_dropout_prob)
                    finite = all_ranks_true(bool(torch.isfinite(loss)), accelerator)
                    if finite:
                        accelerator.backward(loss)
                        if accelerator.sync_gradients and config.max_grad_norm:
                            accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
                        optimizer.step()
                        lr_scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                if not finite:
                    nonfinite += 1
                    print(f"warning: non-finite loss at step {global_step + 1}; batch skipped ({nonfinite} in a row)",
                          file=sys.stderr)
                    if nonfinite >= config.max_nonfinite_steps:
                        raise TrainingStopped(f"training stopped: {nonfinite} non-finite losses in a row at step "
                                              f"{global_step + 1}; the last checkpoint in {out_dir} is kept (try a "
                                              "lower --learning_rate or --mixed_precision no, then resume)")
                    continue
                nonfinite = 0
                window_samples += batch["input_pixels"].shape[0] * accelerator.num_processes
                loss_value = float(accelerator.gather(loss.detach()[None]).mean())
                if not accelerator.sync_gradients:
                    continue
                # one optimisation step done
                if ema is not None:
                    ema.step(accelerator.unwrap_model(unet).parameters())
                global_step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}")
                stopping = stop.agreed(accelerator)
                if accelerator.is_main_process:
                    elapsed = max(time.perf_counter() - window_start, 1e-9)
                    log_scalars(writer, {"loss/train": loss_value, "lr/unet": lr_scheduler.get_last_lr()[0],
                                         "perf/samples_per_sec": window_samples / elapsed}, global_step)
                    window_start, window_samples = time.perf_counter(), 0
                if global_step % config.checkpointing_steps == 0 or stopping:
                    # every rank: accelerate saves each rank's RNG state (and FSDP / DeepSpeed shards)
                    ckpt.save_checkpoint(accelerator, out_dir, global_step, config, parts, ema)
                if accelerator.is_main_process:
                    if validation_image is not None and global_step % config.validation_steps == 0 and not stopping:
                        with ckpt.ema_weights(ema, accelerator.unwrap_model(unet)):
                            validate(config, parts, accelerator.unwrap_model(unet), validation_image, writer,
                                     global_step, scheduler_name, out_dir)
                if global_step >= max_steps or stopping:
                    break
            if global_step >= max_steps or stopping:
                break
    bar.close()

    # --- Save the final pipeline ---------------------------------------------------------------------------------------
    accelerator.wait_for_everyone()
    result = {"global_step": global_step, "output_dir": str(out_dir), "final_loss": loss_value}
    if stopping:  # SIGINT / SIGTERM: checkpoint written above; resume with --resume_from_checkpoint latest
        print(f"stopped by {stop.signal_name} at step {global_step}; resume with --resume_from_checkpoint latest",
              file=sys.stderr)
        if writer is not None:
            writer.close()
        accelerator.end_training()
        return {**result, "stopped_by": stop.signal_name, "exit_code": stop.exit_code}
    if accelerator.is_main_process:
        final_unet = accelerator.unwrap_model(unet)
        if ema is not None:
            ema.copy_to(final_unet.parameters())
        if config.lora_rank is not None:
            save_unet_lora(final_unet, out_dir)
            fuse_unet_lora(final_unet)
        parts.text_encoder = accelerator.unwrap_model(text_encoder)
        pipe = make_pipeline(parts, final_unet, scheduler_name)
        if weight_dtype != torch.float32:
            pipe.to(torch.float32)  # the saved folder holds full-precision weights
        if validation_image is not None:
            validate(config, parts, final_unet, validation_image, writer, global_step, scheduler_name, out_dir)
        pipe.save_pretrained(str(out_dir), safe_serialization=True)
        save_json(ckpt.edit_defaults(config, scheduler_name), out_dir / "edit_defaults.json")
        if writer is not None:
            writer.close()
        if config.push_to_hub:
            ckpt.push_folder(out_dir, config.hub_model_id or out_dir.name)
        result["checkpoints"] = [p.name for p in ckpt.list_checkpoints(out_dir)]
    accelerator.end_training()
    return result

