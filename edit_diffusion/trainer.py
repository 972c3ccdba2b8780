"""The InstructPix2Pix training loop on accelerate: optional VAE pre-training phase (from-scratch VAEs),
then the UNet (and optionally text encoder) phase with EMA, accumulation, mixed precision, warmup,
clipping, resumable safetensors checkpoints, TensorBoard scalars and validation edits."""
from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration
from diffusers import StableDiffusionInstructPix2PixPipeline
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from common.checkpoints import save_json
from common.distributed import cpu_multiprocess
from common.errors import UserInputError
from common.images import pil_to_tensor
from common.interrupt import GracefulStop
from common.seeding import without_global_rng_draws
from common.tensorboard import image_grid, log_grid, log_scalars
from common.training import NonFiniteGuard, open_writer, seed_rank, train_result

from . import checkpointing as ckpt
from . import sharding, speed
from . import recipe
from .components import build_components, edit_scheduler_name, enable_attention_backend
from .config import EditTrainConfig
from .data import Columns, EditDataset, image_batches, load_validation_image, read_triplets
from .editor import SCHEDULERS, EditSettings, edit_image
from .lora import add_unet_lora, fuse_unet_lora, save_unet_lora
from .scratch import pretrain_vae
from .text_encoders import save_fp16_storage
from .step import edit_loss

logger = logging.getLogger(__name__)
RESUME_HINT = "--resume_from_checkpoint latest"  # how a stopped run continues


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


@dataclass
class EditRun:
    """Everything the stage-2 loop reads and updates (built by `build`, advanced by `fit`, closed by `finish`)."""
    config: EditTrainConfig
    accelerator: Accelerator
    out_dir: Path
    parts: object                        # components.Components: vae, text_encoder, tokenizer, unet, scheduler
    noise_scheduler: object
    scheduler_name: str                  # editing scheduler of validation edits and the saved pipeline
    validation_image: object             # PIL image or None
    writer: object                       # SummaryWriter on the main process, else None
    dataset: EditDataset
    loader: torch.utils.data.DataLoader
    null_ids: torch.Tensor               # token ids of "" (text conditioning dropout)
    unet: torch.nn.Module = None
    text_encoder: torch.nn.Module = None
    optimizer: torch.optim.Optimizer = None
    lr_scheduler: object = None
    trainable: list = field(default_factory=list)
    ema: EMAModel | None = None
    weight_dtype: torch.dtype = torch.float32
    max_steps: int = 0
    guard: NonFiniteGuard | None = None
    global_step: int = 0
    epoch: int = 0
    first_epoch: int = 0
    skip_batches: int = 0                # batches of first_epoch already done (mid-epoch resume)
    loss_value: float = float("nan")
    stop: GracefulStop | None = None
    stopping: bool = False


def train(config: EditTrainConfig) -> dict:
    """Run training; returns common.training.train_result (RESULT_KEYS) and writes the pipeline folder."""
    run, resume_dir = build(config)
    prepare(run, resume_dir)
    with GracefulStop() as stop:
        run.stop = stop
        fit(run)
    return finish(run)


def build(config: EditTrainConfig) -> tuple[EditRun, Path | None]:
    """Check every input, build the components and the data; returns the run and the folder to resume from."""
    # --- Setup ---------------------------------------------------------------------------------------
    out_dir = Path(config.output_dir)
    accelerator = Accelerator(
        cpu=cpu_multiprocess(),  # torchrun on CPUs: form a gloo group instead of N independent runs
        gradient_accumulation_steps=config.gradient_accumulation_steps, mixed_precision=config.mixed_precision,
        project_config=ProjectConfiguration(project_dir=str(out_dir), logging_dir=str(out_dir / config.logging_dir)),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
    # the same seed on every rank while building: from-scratch modules that DDP does not broadcast (frozen VAE /
    # text encoder, the VAE phase) must come out identical; `prepare` then seeds each rank its own stream
    seed_rank(config.seed, 0)
    # every input is checked before anything is written: a bad flag or file leaves the output folder untouched
    if out_dir.exists() and not out_dir.is_dir():
        raise UserInputError(f"--output_dir {out_dir}: exists and is not a folder")
    resume_dir = ckpt.find_resume_dir(out_dir, config.resume_from_checkpoint)
    if resume_dir is not None and not ckpt.is_diffusers_run_checkpoint(resume_dir):  # those are checked as loaded
        ckpt.verify_resume_folder(resume_dir, accelerator.process_index)  # every file, before anything is written
    validation_image = load_validation_image(config.validation_image) if config.validation_image else None
    columns = Columns(config.original_image_column, config.edit_prompt_column, config.edited_image_column)
    triplets = read_triplets(config.dataset_name, config.train_data_dir, columns, config.dataset_config_name,
                             config.cache_dir)
    if config.push_to_hub:
        ckpt.check_hub_reachable(config.hub_model_id or out_dir.name, config.hub_token)

    # --- Create model ----------------------------------------------------------------------------------
    parts, noise_scheduler = build_components(config)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_json(config.to_dict(), out_dir / "train_config.json")
    scheduler_name = edit_scheduler_name(config, noise_scheduler.config.prediction_type)
    logger.info("editing scheduler for validation and the saved pipeline: %s", scheduler_name)
    _set_trainable(config, parts)

    # --- Data -------------------------------------------------------------------------------------------
    if config.max_train_samples is not None:
        triplets = triplets[:config.max_train_samples]
    dataset = EditDataset(triplets, parts.tokenizer, config.resolution, config.center_crop, config.random_flip,
                          config.cache_images, seed=config.seed)
    # own generator: creating a loader iterator draws a base seed from it instead of from the global RNG, so a
    # resumed run (which creates one more iterator) keeps the noise / timestep / dropout stream of the original
    loader = speed.make_loader(config, dataset)
    null_ids = parts.tokenizer([""], padding="max_length", max_length=parts.tokenizer.model_max_length,
                               return_tensors="pt").input_ids[0]
    writer = open_writer(accelerator, out_dir / config.logging_dir)
    run = EditRun(config, accelerator, out_dir, parts, noise_scheduler, scheduler_name, validation_image, writer,
                  dataset, loader, null_ids, unet=parts.unet, text_encoder=parts.text_encoder)
    return run, resume_dir


def _set_trainable(config: EditTrainConfig, parts) -> None:
    """Frozen VAE; text encoder trained only when asked; LoRA adapters or the full UNet; memory options."""
    unet, text_encoder = parts.unet, parts.text_encoder
    parts.vae.requires_grad_(False)
    text_encoder.requires_grad_(config.train_text_encoder)
    enable_attention_backend(unet, config.enable_xformers_memory_efficient_attention)
    if config.lora_rank is not None:
        unet.requires_grad_(False)
        add_unet_lora(unet, config.lora_rank)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if config.train_text_encoder:
            text_encoder.gradient_checkpointing_enable()


def prepare(run: EditRun, resume_dir: Path | None) -> None:
    """VAE phase or resumed components, optimizer, LR schedule, accelerate, EMA and the resumed step."""
    config, accelerator, parts = run.config, run.accelerator, run.parts
    if resume_dir is not None:
        ckpt.restore_frozen_components(resume_dir, parts)  # (a diffusers-recipe folder has none)
    elif config.vae_pretrain_steps:
        # --- VAE phase (LDM: autoencoder first, diffusion on its frozen latents) ------------------------
        parts.vae.to(accelerator.device)
        gen = torch.Generator().manual_seed(config.seed if config.seed is not None else 0)
        pretrain_vae(parts.vae, image_batches(run.dataset, config.train_batch_size, gen, config.vae_pretrain_crop),
                     config.vae_pretrain_steps, config.vae_learning_rate, config.vae_kl_weight,
                     log=lambda s, logs: log_scalars(run.writer, logs, s) if s % 10 == 0 else None,
                     progress=accelerator.is_local_main_process, latent_std=config.vae_latent_std,
                     decoder_only=config.vae_train_decoder_only)
        logger.info("VAE %s; latent scaling_factor %.4f", "decoder fine-tuned" if config.vae_train_decoder_only
                    else "pre-trained", parts.vae.config.scaling_factor)

    # frozen VAE (and text encoder): encode the training set once instead of every step (issue 16)
    speed.use_latent_cache(run)
    speed.apply_unet_options(config, run.unet)

    # --- Optimizer, lr schedule, EMA ------------------------------------------------------------------------------
    run.trainable = sharding.trainable_parameters(*((run.unet, run.text_encoder) if config.train_text_encoder
                                                    else (run.unet,)))
    # AdamW, or bitsandbytes' AdamW8bit (--use_8bit_adam); --scale_lr scales by accumulation x batch x processes
    optimizer_class = recipe.optimizer_class(config)
    run.optimizer = optimizer_class(
        run.trainable, lr=recipe.learning_rate(config, accelerator.num_processes),
        weight_decay=config.adam_weight_decay, betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon,
        **speed.adam_kernel(config, optimizer_class))
    # each process gets 1/N of the batches once the loader is prepared (accelerate shards it, rounding up)
    updates_per_epoch = math.ceil(math.ceil(len(run.loader) / accelerator.num_processes)
                                  / config.gradient_accumulation_steps)
    run.max_steps = config.max_train_steps or config.num_train_epochs * updates_per_epoch
    run.lr_scheduler = get_scheduler(config.lr_scheduler, optimizer=run.optimizer,
                                     num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
                                     num_training_steps=run.max_steps * accelerator.num_processes)
    _prepare_modules(run)
    seed_rank(config.seed, accelerator.process_index)  # noise / timesteps / dropout: seed + rank
    run.guard = NonFiniteGuard(accelerator, config.max_nonfinite_steps, run.out_dir, RESUME_HINT)
    if resume_dir is not None and ckpt.is_diffusers_run_checkpoint(resume_dir):
        run.global_step = ckpt.resume_diffusers_run(accelerator, resume_dir, run.unet, run.optimizer,
                                                    run.lr_scheduler, run.ema)
        accelerator.print(f"resumed the diffusers-recipe run {resume_dir.name} at step {run.global_step}")
    elif resume_dir is not None:
        ckpt.load_accelerator_state(accelerator, resume_dir, run.lr_scheduler)
        run.global_step = ckpt.load_trainer_state(resume_dir, run.ema)
        accelerator.print(f"resumed from {resume_dir.name} at step {run.global_step}")
    updates_per_epoch = math.ceil(len(run.loader) / config.gradient_accumulation_steps)  # the prepared, per-rank loader
    run.first_epoch = run.global_step // updates_per_epoch
    run.skip_batches = (run.global_step % updates_per_epoch) * config.gradient_accumulation_steps


def _prepare_modules(run: EditRun) -> None:
    """accelerate.prepare the trained modules; frozen ones move to the device in the mixed-precision dtype."""
    config, accelerator = run.config, run.accelerator
    if config.train_text_encoder:
        sharding.fit_wrap_classes(run.text_encoder)  # FSDP2 auto-wrap: only block names the model has
        run.unet, run.text_encoder, run.optimizer, run.loader, run.lr_scheduler = accelerator.prepare(
            run.unet, run.text_encoder, run.optimizer, run.loader, run.lr_scheduler)
    else:
        run.unet, run.optimizer, run.loader, run.lr_scheduler = accelerator.prepare(
            run.unet, run.optimizer, run.loader, run.lr_scheduler)
    # FSDP2 replaces parameters while preparing: clipping and EMA take them from the prepared models
    run.trainable = sharding.trainable_parameters(*((run.unet, run.text_encoder) if config.train_text_encoder
                                                    else (run.unet,)))
    run.weight_dtype = speed.WEIGHT_DTYPES.get(accelerator.mixed_precision, torch.float32)
    # frozen modules run in the mixed-precision dtype (diffusers recipe); no cast when it is float32
    cast = {} if run.weight_dtype == torch.float32 else {"dtype": run.weight_dtype}
    run.parts.vae.to(accelerator.device, **cast)
    if not config.train_text_encoder:
        run.text_encoder.to(accelerator.device, **cast)
    run.parts.text_encoder = accelerator.unwrap_model(run.text_encoder)  # the pipeline needs the bare module
    if config.use_ema:
        run.ema = EMAModel(accelerator.unwrap_model(run.unet).parameters(), decay=config.ema_decay,
                           use_ema_warmup=True)


def fit(run: EditRun) -> None:
    """Epochs until max_steps optimisation steps are done (steps skipped as non-finite do not count)."""
    run.unet.train()
    run.text_encoder.train(run.config.train_text_encoder)
    bar = tqdm(total=run.max_steps, initial=run.global_step, desc="train",
               disable=not run.accelerator.is_local_main_process)
    for epoch in itertools.count(run.first_epoch):
        run.epoch = epoch
        if hasattr(run.loader, "set_epoch"):
            run.loader.set_epoch(epoch)
        run.dataset.set_epoch(epoch)  # accelerate skips the dataset's set_epoch when its sampler has one
        epoch_loader = run.loader
        if epoch == run.first_epoch and run.skip_batches:
            epoch_loader = run.accelerator.skip_first_batches(run.loader, run.skip_batches)
        window = (time.perf_counter(), 0)  # (start, samples) of the samples/sec scalar
        for batch in without_global_rng_draws(epoch_loader):
            window = _micro_step(run, batch, window)
            if window is None:  # an optimisation step happened
                bar.update(1)
                bar.set_postfix(loss=f"{run.loss_value:.4f}")
                window = (time.perf_counter(), 0)
            if run.global_step >= run.max_steps or run.stopping:
                break
        if recipe.epoch_validation_due(run.config, epoch) and not run.stopping:  # --validation_epochs
            _validate(run)
        if run.global_step >= run.max_steps or run.stopping:
            break
    bar.close()


def _micro_step(run: EditRun, batch: dict, window: tuple[float, int]) -> tuple[float, int] | None:
    """One micro-batch: loss, backward, and at accumulation boundaries the guarded optimizer step with its
    logging, checkpoint and validation. Returns the updated samples/sec window, or None after a step."""
    config, accelerator = run.config, run.accelerator
    models = (run.unet, run.text_encoder) if config.train_text_encoder else (run.unet,)
    run.guard.start_step()
    with accelerator.accumulate(*models):
        batch = speed.to_device(batch, accelerator.device, run.weight_dtype)
        loss, _ = edit_loss(run.unet, run.parts.vae, run.text_encoder, run.noise_scheduler, batch,
                            run.null_ids.to(accelerator.device), config.conditioning_dropout_prob,
                            region_weight=config.edit_region_weight)
        if run.guard(loss):  # finite loss on every rank; then finite gradients before the step
            accelerator.backward(loss)
            if accelerator.sync_gradients and run.guard(loss, run.trainable):
                if config.max_grad_norm:
                    accelerator.clip_grad_norm_(run.trainable, config.max_grad_norm)
                run.optimizer.step()
                run.lr_scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
    if run.guard.end_step(run.global_step + 1, {"loss": float(loss.detach())}):
        return window
    start, samples = window
    samples += speed.batch_size_of(batch) * accelerator.num_processes
    run.loss_value = float(accelerator.gather(loss.detach()[None]).mean())
    if not accelerator.sync_gradients:
        return start, samples
    _after_step(run, samples / max(time.perf_counter() - start, 1e-9))
    return None


def _after_step(run: EditRun, samples_per_sec: float) -> None:
    """Bookkeeping of one optimisation step: EMA, scalars, stop agreement, checkpoint, validation."""
    config, accelerator = run.config, run.accelerator
    if run.ema is not None:
        run.ema.step(accelerator.unwrap_model(run.unet).parameters())
    run.global_step += 1
    run.stopping = run.stop.agreed(accelerator)
    log_scalars(run.writer, {"loss/train": run.loss_value, "lr/unet": run.lr_scheduler.get_last_lr()[0],
                             "perf/samples_per_sec": samples_per_sec}, run.global_step)
    if run.global_step % config.checkpointing_steps == 0 or run.stopping:
        # every rank: accelerate saves each rank's RNG state (and FSDP / DeepSpeed shards)
        ckpt.save_checkpoint(accelerator, run.out_dir, run.global_step, config, run.parts, run.ema)
    if not run.stopping and run.global_step % config.validation_steps == 0:
        _validate(run)


def _validate(run: EditRun) -> None:
    """Validation edits with the EMA weights (main process; none without --validation_image)."""
    accelerator = run.accelerator
    if accelerator.is_main_process and run.validation_image is not None:
        with ckpt.ema_weights(run.ema, accelerator.unwrap_model(run.unet)):
            validate(run.config, run.parts, accelerator.unwrap_model(run.unet), run.validation_image, run.writer,
                     run.global_step, run.scheduler_name, run.out_dir)


def finish(run: EditRun) -> dict:
    """Write the final pipeline folder (unless stopped by a signal); the result in the shared schema."""
    config, accelerator, out_dir = run.config, run.accelerator, run.out_dir
    accelerator.wait_for_everyone()
    files = {"pipeline": str(out_dir), "edit_defaults": str(out_dir / "edit_defaults.json")}
    if not run.stopping:  # every rank: under FSDP the EMA holds each rank's shards and the weights are gathered
        if run.ema is not None:
            run.ema.copy_to(accelerator.unwrap_model(run.unet).parameters())
        final_unet = sharding.full_model(accelerator, run.unet)
        final_text_encoder = sharding.full_model(accelerator, run.text_encoder)
    if not run.stopping and accelerator.is_main_process:
        if config.lora_rank is not None:
            save_unet_lora(final_unet, out_dir)
            fuse_unet_lora(final_unet)
        run.parts.text_encoder = final_text_encoder
        pipe = make_pipeline(run.parts, final_unet, run.scheduler_name)
        if run.weight_dtype != torch.float32:
            pipe.to(torch.float32)  # the saved folder holds full-precision weights
        if run.validation_image is not None:
            validate(config, run.parts, final_unet, run.validation_image, run.writer, run.global_step,
                     run.scheduler_name, out_dir)
        pipe.save_pretrained(str(out_dir), safe_serialization=True)
        if config.text_encoder_fp16_storage:
            save_fp16_storage(pipe.text_encoder, out_dir / "text_encoder")
        save_json(ckpt.edit_defaults(config, run.scheduler_name), out_dir / "edit_defaults.json")
        if config.push_to_hub:
            ckpt.push_folder(out_dir, config.hub_model_id or out_dir.name, config.hub_token)
        files.update({p.name: str(p) for p in ckpt.list_checkpoints(out_dir)})
    if run.writer is not None:
        run.writer.close()
    accelerator.end_training()
    # SIGINT / SIGTERM: the checkpoint was written by _after_step; the report says how to resume
    return train_result(run.global_step, run.epoch, {"train": run.loss_value}, out_dir, files,
                        run.stop if run.stopping else None, resume=RESUME_HINT)
