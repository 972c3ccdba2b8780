"""Fine-tuning the modern editors on our triplets (input_image, edit_prompt, edited_image; every data source of
read_triplets): a LoRA for FLUX.1 Kontext and for Qwen-Image-Edit, full or LoRA fine-tuning of SDXL InstructPix2Pix
(an SDXL text-to-image base gets its conv_in widened to 8 channels first, as for SD 1.5); the losses are in
family_losses.py. The loop is the trainers' shared skeleton (common/training.py: non-finite guard, TensorBoard
writer, stop report, result) with resumable checkpoints (checkpointing.py: accelerate's optimizer / LR-schedule /
RNG files plus the trained weights only). LoRAs are saved with the pipeline's own saver
(`pytorch_lora_weights.safetensors`, read by `pipe.load_lora_weights` and by `--editor ... --lora`)."""
from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from common.checkpoints import load_tensors, read_metadata, save_json
from common.errors import UserInputError
from common.interrupt import GracefulStop
from common.tensorboard import log_scalars
from common.training import NonFiniteGuard, open_writer, seed_rank, train_result

from . import checkpointing as ckpt
from .data import Columns, joint_crop_flip, read_triplets, to_uint8_pair
from .families import FAMILIES, Family, family_of, read_model_index
from .family_losses import LOSSES
from .lora import LORA_TARGETS, LORA_WEIGHTS

logger = logging.getLogger(__name__)
# Base models each recipe also starts from (text-to-image SDXL: conv_in widened to an editor's 8 channels)
TRAIN_BASES = {"StableDiffusionXLPipeline": "StableDiffusionXLInstructPix2PixPipeline"}
# Flags this loop honours; any other flag set away from its default is refused (never silently ignored)
HONOURED = {"pretrained_model_name_or_path", "dataset_name", "train_data_dir", "original_image_column",
            "edit_prompt_column", "edited_image_column", "max_train_samples", "resolution", "center_crop",
            "random_flip", "train_batch_size", "num_train_epochs", "max_train_steps", "learning_rate", "adam_beta1",
            "adam_beta2", "adam_weight_decay", "adam_epsilon", "max_grad_norm", "lora_rank", "seed", "output_dir",
            "dataset_config_name", "cache_dir", "revision", "allow_overwrite_bundled", "max_nonfinite_steps",
            "lr_scheduler", "lr_warmup_steps", "checkpointing_steps", "checkpoints_total_limit",
            "resume_from_checkpoint", "logging_dir"}
RESUME_HINT = "--resume_from_checkpoint latest"  # how a stopped run continues
TRAINED_FILE = "trained.safetensors"  # in checkpoint-<step>/: the trained weights (accelerate would save the base too)
NOISE_STATE = "noise_generator_state"  # TRAINED_FILE entry: the loss generator's state (uint8)


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
                                 "it honours the data, resolution, batch, steps, optimiser, LR schedule, "
                                 "checkpoint / resume, --logging_dir, --lora_rank and --seed flags); leave it out")
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


def denoiser_of(pipe) -> torch.nn.Module:
    return pipe.unet if hasattr(pipe, "unet") else pipe.transformer


def prepare_trainable(pipe, rank: int | None) -> dict[str, torch.nn.Parameter]:
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
    trained = {name: p for name, p in model.named_parameters() if p.requires_grad}
    for p in trained.values():
        p.data = p.data.float()  # trainable weights in float32 (frozen ones may be bf16 on a GPU)
    model.train()
    return trained


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


@dataclass
class FamilyRun:
    """Everything the loop reads and advances (built by `_build`, advanced by `_fit`, saved by `_finish`)."""
    config: object
    family: Family
    accelerator: object                  # single process: optimizer / LR-schedule / RNG checkpoints, the device
    out_dir: Path
    pipe: object
    trained: dict                        # name -> trained parameter (LoRA adapters, or the whole SDXL UNet)
    optimizer: object
    lr_scheduler: object
    data: PairData
    seed: int
    generator: torch.Generator           # noise and timesteps of the loss (saved in checkpoints)
    writer: object                       # TensorBoard SummaryWriter
    guard: NonFiniteGuard
    steps: int                           # optimisation steps to reach
    step: int = 0
    epoch: int = 0
    batches: int = 0                     # batches drawn so far, non-finite skipped ones included
    loss_value: float = float("nan")
    stopping: bool = False


def train_family(config, index_class: str) -> dict:
    """Fine-tune the model at --pretrained_model_name_or_path (model_index.json class `index_class`) on the
    triplets; returns common.training.train_result with the LoRA file (or the pipeline folder) under files."""
    run = _build(config, index_class)
    with GracefulStop() as stop:
        _fit(run, stop)
    return _finish(run, stop)


def _build(config, index_class: str) -> FamilyRun:
    """Check every input, load the pipeline and the data, set up the optimizer; restore a checkpoint if asked."""
    import diffusers
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration
    from diffusers.optimization import get_scheduler

    from .loading import source_kind

    # --- Setup: every input checked before anything is written -----------------------------------------
    class_name = TRAIN_BASES.get(index_class, index_class)
    family = FAMILIES[class_name]
    check_flags(config, family)
    if index_class in TRAIN_BASES and config.lora_rank is not None:
        raise UserInputError(f"--lora_rank: {config.pretrained_model_name_or_path} is a text-to-image {index_class}; "
                             "its conv_in is widened to 8 channels and must train with the rest (a LoRA file cannot "
                             "hold it): leave out --lora_rank for full fine-tuning, or start from an editor")
    out_dir = Path(config.output_dir)
    accelerator = Accelerator(project_config=ProjectConfiguration(project_dir=str(out_dir),
                                                                  logging_dir=str(out_dir / config.logging_dir)))
    resume_dir = ckpt.find_resume_dir(out_dir, config.resume_from_checkpoint)
    if resume_dir is not None:
        ckpt.verify_resume_folder(resume_dir, accelerator.process_index)  # every file, before anything is loaded
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise UserInputError(f"--output_dir {out_dir}: not empty (a fine-tuning run writes a fresh folder; a "
                             f"stopped one continues with {RESUME_HINT})")
    seed = 0 if config.seed is None else config.seed
    seed_rank(seed, 0)
    device = accelerator.device
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # frozen weights; trained ones stay fp32
    triplets = read_triplets(config.dataset_name, config.train_data_dir,
                             Columns(config.original_image_column, config.edit_prompt_column,
                                     config.edited_image_column), config.dataset_config_name, config.cache_dir)
    if config.max_train_samples is not None:
        triplets = triplets[:config.max_train_samples]

    # --- Create model ----------------------------------------------------------------------------------
    model = config.pretrained_model_name_or_path
    local = source_kind(model) == "folder"
    pipe = getattr(diffusers, class_name).from_pretrained(model, dtype=dtype, local_files_only=local,
                                                          revision=config.revision, cache_dir=config.cache_dir)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    trained = prepare_trainable(pipe, config.lora_rank)
    optimizer = torch.optim.AdamW(trained.values(), lr=config.learning_rate, weight_decay=config.adam_weight_decay,
                                  betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon)
    data = PairData(triplets, config.resolution, config.center_crop, config.random_flip, seed)
    steps = config.max_train_steps or config.num_train_epochs * math.ceil(len(data) / config.train_batch_size)
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer=optimizer, num_warmup_steps=config.lr_warmup_steps,
                                 num_training_steps=steps)
    optimizer, lr_scheduler = accelerator.prepare(optimizer, lr_scheduler)  # saved / restored by accelerate
    out_dir.mkdir(parents=True, exist_ok=True)
    save_json(config.to_dict(), out_dir / "train_config.json")
    run = FamilyRun(config, family, accelerator, out_dir, pipe, trained, optimizer, lr_scheduler, data, seed,
                    torch.Generator().manual_seed(seed), open_writer(accelerator, out_dir / config.logging_dir),
                    NonFiniteGuard(accelerator, config.max_nonfinite_steps, out_dir, RESUME_HINT), steps)
    if resume_dir is not None:
        ckpt.load_accelerator_state(accelerator, resume_dir, lr_scheduler)  # optimizer, schedule, RNG streams
        run.step = ckpt.load_trainer_state(resume_dir, None)
        run.batches = _load_trained(run, resume_dir)
        print(f"resumed from {resume_dir.name} at step {run.step}")
    logger.info("fine-tuning %s (%s) for %d steps on %d triplets, %d trainable parameters", family.label,
                "LoRA rank %d" % config.lora_rank if config.lora_rank else "full UNet", steps, len(data),
                sum(p.numel() for p in trained.values()))
    return run


def epoch_batches(data: PairData, batch_size: int, seed: int, epoch: int, skip: int = 0):
    """One epoch's batches, in an order fixed by (seed, epoch); the first `skip` are passed over without loading
    them, so a resumed run draws the rest (and their augmentation) exactly as the uninterrupted run did."""
    order = list(range(len(data)))
    random.Random(f"{seed}/epoch/{epoch}").shuffle(order)
    for start in range(skip * batch_size, len(order), batch_size):
        yield torch.utils.data.default_collate([data[i] for i in order[start:start + batch_size]])


def _fit(run: FamilyRun, stop: GracefulStop) -> None:
    """Epochs of guarded steps until `steps` optimisation steps are done (non-finite ones do not count), with
    TensorBoard scalars and checkpoints every --checkpointing_steps (and on SIGINT / SIGTERM)."""
    per_epoch = math.ceil(len(run.data) / run.config.train_batch_size)
    first = run.batches // per_epoch
    for epoch in itertools.count(first):
        if run.step >= run.steps or run.stopping:
            return
        run.epoch = epoch
        skip = run.batches - epoch * per_epoch if epoch == first else 0
        for source, edited, prompts in epoch_batches(run.data, run.config.train_batch_size, run.seed, epoch, skip):
            run.batches += 1
            if not _train_step(run, source, edited, list(prompts)):
                continue  # skipped as non-finite (the guard stops the run after too many in a row)
            run.stopping = stop.agreed(run.accelerator)
            logger.info("step %d/%d loss %.4f", run.step, run.steps, run.loss_value)
            log_scalars(run.writer, {"loss/train": run.loss_value, f"lr/{_denoiser_name(run.pipe)}":
                                     run.lr_scheduler.get_last_lr()[0]}, run.step)
            if run.step % run.config.checkpointing_steps == 0 or run.stopping:
                _save_checkpoint(run)
            if run.step >= run.steps or run.stopping:
                return


def _train_step(run: FamilyRun, source, edited, prompts: list[str]) -> bool:
    """One optimisation step, unless the loss or the gradients are not finite (then False, weights untouched)."""
    run.guard.start_step()
    loss = LOSSES[run.family.training](run.pipe, source, edited, prompts, run.generator)
    params = list(run.trained.values())
    if run.guard(loss):
        loss.backward()
        if run.guard(loss, params):
            run.accelerator.clip_grad_norm_(params, run.config.max_grad_norm)
            run.optimizer.step()
            run.lr_scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    if run.guard.end_step(run.step + 1, {"loss": float(loss.detach())}):
        return False
    run.step, run.loss_value = run.step + 1, float(loss.detach())
    return True


def _denoiser_name(pipe) -> str:
    return "unet" if hasattr(pipe, "unet") else "transformer"


def _save_checkpoint(run: FamilyRun) -> None:
    """checkpoint-<step>: accelerate's optimizer, LR-schedule and RNG files, plus TRAINED_FILE with the trained
    weights (LoRA: a few MB, not the frozen base), the loss's noise-generator state and the batches drawn."""
    tensors = {name: p.detach() for name, p in run.trained.items()}
    tensors[NOISE_STATE] = run.generator.get_state()
    ckpt.save_checkpoint(run.accelerator, run.out_dir, run.step, run.config, None, None,
                         extra={TRAINED_FILE: (tensors, {"batches": str(run.batches)})})


def _load_trained(run: FamilyRun, path: Path) -> int:
    """Restore TRAINED_FILE into the live run; returns the batches drawn before the save."""
    file = path / TRAINED_FILE
    tensors = load_tensors(file)
    state = tensors.pop(NOISE_STATE, None)
    if state is None or tensors.keys() != run.trained.keys() or any(
            tensors[k].shape != p.shape for k, p in run.trained.items()):
        raise UserInputError(f"{file}: trained weights of another model or --lora_rank (names or shapes differ)")
    with torch.no_grad():
        for name, p in run.trained.items():
            p.copy_(tensors[name])
    run.generator.set_state(state)
    return int(read_metadata(file)["batches"])


def _finish(run: FamilyRun, stop: GracefulStop) -> dict:
    """The LoRA file or pipeline folder (unless stopped by a signal: the checkpoint is kept), the result."""
    config, out_dir = run.config, run.out_dir
    files = {}
    if not run.stopping:
        denoiser_of(run.pipe).eval()
        files["lora" if config.lora_rank else "pipeline"] = str(save_trained(run.pipe, config.lora_rank, out_dir))
    files.update({p.name: str(p) for p in ckpt.list_checkpoints(out_dir)})
    if run.writer is not None:
        run.writer.close()
    run.accelerator.end_training()
    return train_result(run.step, run.epoch, {"loss": run.loss_value}, out_dir, files,
                        stop if run.stopping else None, resume=RESUME_HINT)
