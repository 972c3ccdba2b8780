"""The training loop: init phase (content only) then adversarial training, with accelerate, TensorBoard,
atomic checkpoints and exact resumption."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from torch.utils.data import DataLoader
from tqdm import tqdm

from common.checkpoints import save_json
from common.errors import UserInputError
from common.images import load_image, pil_to_tensor
from common.seeding import restore_rng_state, rng_state_tensors, seed_everything
from common.tensorboard import image_grid, log_grid, log_scalars

from . import checkpoint as ckpt
from .backbones import build_backbone
from .config import GanTrainConfig
from .data import (EpochSampler, PairedDataset, UnpairedDataset, find_paired, find_unpaired, fit_square, load_stack,
                   make_augment, to_float)
from .losses import ADVERSARIAL_LOSSES
from .networks import build_discriminator, build_generator
from .step import Batch, LossWeights, Nets, gan_step, init_step

ADAM_BETAS = (0.5, 0.999)  # AnimeGAN / pix2pix
GENERATOR_FILE = "generator.safetensors"
DISCRIMINATOR_FILE = "discriminator.safetensors"
STATE_FILE = "training_state.safetensors"
CONFIG_FILE = "config.json"


@dataclass
class Progress:
    step: int = 0            # optimizer steps done (both phases)
    epoch: int = 0           # current epoch
    batch_in_epoch: int = 0  # batches of `epoch` already done (non-zero only after a --max-steps stop)


def learning_rates(step: int, config: GanTrainConfig, steps_per_epoch: int) -> tuple[float, float]:
    """(generator LR, discriminator LR) at `step`: initial_lr in the init phase, then the adversarial LRs,
    linearly decayed to 0 over the last `lr_decay_fraction` of the adversarial steps. A pure function of the
    step, so resuming needs no scheduler object."""
    init_steps = config.initial_epochs * steps_per_epoch
    if step < init_steps:
        return config.initial_lr, 0.0
    total = config.epochs * steps_per_epoch
    decay_steps = round(config.lr_decay_fraction * (total - init_steps))
    factor = 1.0 if decay_steps == 0 else min(1.0, (total - step) / decay_steps)
    return config.lr_generator * factor, config.lr_discriminator * factor


def loss_weights(config: GanTrainConfig) -> LossWeights:
    return LossWeights(adv_g=config.adversarial_loss_gen_weight, adv_d=config.adversarial_loss_disc_weight,
                       content=config.content_loss_weight, gram=config.gram_loss_weight,
                       color=config.chromatic_loss_weight, tv=config.tv_loss_weight, l1=config.l1_loss_weight)


def build_data(config: GanTrainConfig) -> tuple[torch.utils.data.Dataset, torch.Tensor]:
    """Training dataset (decoded once into memory) and a few fixed source images for the sample grid."""
    size = config.image_size
    if config.mode == "unpaired":
        files = find_unpaired(config.data_dir, config.dataset)
        photos, _ = load_stack([(p,) for p in files.photos], size, "train_photo")
        styles, _ = load_stack(files.styles, size, f"{config.dataset} style+smooth")
        dataset = UnpairedDataset(photos, styles, config.seed)
        samples = [pil_to_tensor(fit_square(load_image(p), size)) for p in files.test_photos]
        samples = torch.stack(samples) if samples else to_float(photos[:4])
    else:
        groups, split_ab = find_paired(config.data_dir, config.paired_a, config.paired_b)
        pairs, _ = load_stack(groups, size, "paired", split_ab=split_ab)
        dataset = PairedDataset(pairs)
        samples = to_float(pairs[:4, :3])
    if len(dataset) < config.batch_size:
        raise UserInputError(f"--batch-size {config.batch_size} is larger than the dataset ({len(dataset)} images)")
    return dataset, samples


def make_batch(raw: dict[str, torch.Tensor], augment, paired: bool, need_style: bool) -> Batch:
    """uint8 loader output -> augmented float Batch. Stacked channels get the same crop and flip."""
    if paired:
        pair = augment(to_float(raw["pair"]))
        return Batch(source=pair[:, :3], target=pair[:, 3:])
    photo = augment(to_float(raw["photo"]))
    if not need_style:  # init phase: D and the style images are not used
        return Batch(source=photo)
    style = augment(to_float(raw["style"]))
    return Batch(source=photo, style=style[:, :3], smooth=style[:, 3:])


def _check_checkpoint_dir(config: GanTrainConfig, ckpt_dir: Path) -> None:
    has_checkpoint = (ckpt_dir / GENERATOR_FILE).exists()
    if config.resume_cond == "none" and has_checkpoint and not config.overwrite:
        raise UserInputError(f"{ckpt_dir} already holds a checkpoint; pass --resume_cond gen_dis to continue it, "
                             f"--overwrite to replace it, or another --checkpoint-dir")
    if config.resume_cond != "none" and not has_checkpoint:
        raise UserInputError(f"--resume_cond {config.resume_cond}: no {GENERATOR_FILE} in {ckpt_dir}")


def _load_matching(path: Path, fmt: str, architecture: str, kwargs: dict, net: torch.nn.Module) -> dict:
    """Load weights into `net` after checking the file was made for the same architecture; returns 'extra'."""
    arch, stored, extra = ckpt.read_network_header(path, fmt)
    if arch != architecture or stored != kwargs:
        raise UserInputError(f"{path}: built as {arch} {stored}, but the flags ask for {architecture} {kwargs}; "
                             f"pass the flags used for that run")
    ckpt.load_state_strict(net, ckpt.load_tensors(path), path)
    return extra


def checkpoint_paths(ckpt_dir: Path) -> dict[str, Path]:
    return {"generator": ckpt_dir / GENERATOR_FILE, "discriminator": ckpt_dir / DISCRIMINATOR_FILE,
            "training_state": ckpt_dir / STATE_FILE, "config": ckpt_dir / CONFIG_FILE}


def save_checkpoint(ckpt_dir: Path, config: GanTrainConfig, gen, disc, opt_g, opt_d, progress: Progress) -> dict:
    """Write the four checkpoint files (each atomically); the state file last, it marks a complete save."""
    info = {"step": progress.step, "epoch": progress.epoch, "batch_in_epoch": progress.batch_in_epoch}
    paths = checkpoint_paths(ckpt_dir)
    ckpt.save_generator(gen, paths["generator"], config.generator, config.generator_kwargs(), extra=info)
    ckpt.save_discriminator(disc, paths["discriminator"], config.discriminator, config.discriminator_kwargs())
    save_json(config.to_dict(), paths["config"])
    ckpt.save_training_state(paths["training_state"], {"generator": opt_g, "discriminator": opt_d},
                             rng_state_tensors(), info)
    return {k: str(v) for k, v in paths.items()}


def train(config: GanTrainConfig) -> dict:
    """Run training as configured; returns the final step and the checkpoint paths."""
    # --- Setup
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    # find_unused_parameters: in the G phase D runs with requires_grad off, so under DDP its parameters get no
    # gradient in that backward; DDP must be told to expect that (ignored on a single process)
    accelerator = Accelerator(mixed_precision=config.mixed_precision,
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    seed_everything(config.seed + accelerator.process_index)
    ckpt_dir = Path(config.checkpoint_dir)
    _check_checkpoint_dir(config, ckpt_dir)
    dataset, samples = build_data(config)
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=EpochSampler(len(dataset), config.seed),
                        drop_last=True, num_workers=config.workers,
                        # own generator: DataLoader draws each iterator's base seed from it, so the global RNG
                        # (augmentations) is not advanced by iterator creation and resuming mid-epoch stays exact
                        generator=torch.Generator().manual_seed(config.seed))

    # --- Create models
    gen = build_generator(config.generator, **config.generator_kwargs())
    disc = build_discriminator(config.discriminator, **config.discriminator_kwargs())
    backbone = build_backbone(config.content_backbone, config.vgg_weights) if config.needs_backbone else None
    opt_g = torch.optim.Adam(gen.parameters(), lr=config.initial_lr, betas=ADAM_BETAS)
    opt_d = torch.optim.Adam(disc.parameters(), lr=config.lr_discriminator, betas=ADAM_BETAS)

    # --- Resume
    progress, rng = Progress(), None
    if config.resume_cond in ("gen", "gen_dis"):
        extra = _load_matching(ckpt_dir / GENERATOR_FILE, ckpt.GENERATOR_FORMAT, config.generator,
                               config.generator_kwargs(), gen)
    if config.resume_cond == "gen_dis":
        _load_matching(ckpt_dir / DISCRIMINATOR_FILE, ckpt.DISCRIMINATOR_FORMAT, config.discriminator,
                       config.discriminator_kwargs(), disc)
        opt_states, rng, info = ckpt.load_training_state(ckpt_dir / STATE_FILE)
        if info["step"] != extra.get("step"):
            raise UserInputError(f"{ckpt_dir}: generator (step {extra.get('step')}) and training state "
                                 f"(step {info['step']}) come from different saves")
        opt_g.load_state_dict(opt_states["generator"])
        opt_d.load_state_dict(opt_states["discriminator"])
        progress = Progress(info["step"], info["epoch"], info["batch_in_epoch"])

    gen, disc, opt_g, opt_d, loader = accelerator.prepare(gen, disc, opt_g, opt_d, loader)
    if backbone is not None:
        backbone.to(accelerator.device)
    nets = Nets(gen, disc, backbone)
    weights, adv = loss_weights(config), ADVERSARIAL_LOSSES[config.adv_loss]
    augment = make_augment(config.image_size)
    steps_per_epoch = len(loader)
    total_steps = config.epochs * steps_per_epoch
    last_step = min(total_steps, config.max_steps or total_steps)
    writer = None
    if accelerator.is_main_process:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(config.log_dir or str(ckpt_dir / "logs"))
    if rng is not None:
        restore_rng_state(rng)  # after all model construction: the loop continues the saved random streams

    # --- Train
    bar = tqdm(total=last_step, initial=progress.step, desc="train", unit="step",
               disable=not accelerator.is_local_main_process)
    batch, logs = None, {}
    gen.train(), disc.train()
    while progress.step < last_step and progress.epoch < config.epochs:
        epoch = progress.epoch
        in_init = epoch < config.initial_epochs
        epoch_loader = accelerator.skip_first_batches(loader, progress.batch_in_epoch) \
            if progress.batch_in_epoch else loader
        epoch_loader.set_epoch(epoch)
        for raw in epoch_loader:
            lr_g, lr_d = learning_rates(progress.step, config, steps_per_epoch)
            for group in opt_g.param_groups:
                group["lr"] = lr_g
            for group in opt_d.param_groups:
                group["lr"] = lr_d
            batch = make_batch(raw, augment, config.mode == "paired", need_style=not in_init)
            if in_init:
                logs = init_step(batch, nets, opt_g, weights, backward=accelerator.backward)
            else:
                logs = gan_step(batch, nets, opt_g, opt_d, weights, adv, backward=accelerator.backward)
            progress.step += 1
            progress.batch_in_epoch += 1
            bar.update(1)
            bar.set_postfix({k: f"{v:.3g}" for k, v in logs.items() if k in ("g_total", "d_total", "content")},
                            refresh=False)
            if progress.step % config.log_interval == 0 or progress.step == last_step:
                scalars = {f"loss/{k}": v for k, v in logs.items()}
                scalars.update({"lr/generator": lr_g, "lr/discriminator": lr_d})
                log_scalars(writer, scalars, progress.step)
            if progress.step >= last_step:
                break
        epoch_done = progress.batch_in_epoch >= steps_per_epoch
        if epoch_done:
            progress.epoch, progress.batch_in_epoch = epoch + 1, 0
        finished = progress.step >= last_step or progress.epoch >= config.epochs
        if (epoch_done and progress.epoch % config.save_interval == 0) or finished:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                unwrapped = accelerator.unwrap_model(gen)
                log_images(writer, unwrapped, batch, samples, progress.step, config.save_image_dir)
                save_checkpoint(ckpt_dir, config, unwrapped, accelerator.unwrap_model(disc),
                                        opt_g, opt_d, progress)
    bar.close()
    if writer is not None:
        writer.close()
    accelerator.end_training()
    paths = {name: str(path) for name, path in checkpoint_paths(ckpt_dir).items()}
    return {"step": progress.step, "epoch": progress.epoch, "losses": logs, **paths}


@torch.no_grad()
def log_images(writer, gen: torch.nn.Module, batch: Batch | None, samples: torch.Tensor, step: int,
               save_dir: str | None) -> None:
    """Grids under images/train (input | output | target or style) and images/samples (fixed inputs)."""
    was_training = gen.training
    gen.eval()
    device = next(gen.parameters()).device
    if batch is not None:
        third = batch.target if batch.paired else batch.style
        columns = [batch.source, gen(batch.source)] + ([third] if third is not None else [])
        log_grid(writer, "images/train", image_grid(columns), step, save_dir)
    sources = samples.to(device)
    outputs = torch.cat([gen(s[None]) for s in sources])  # one at a time: the norms see one image, like inference
    log_grid(writer, "images/samples", image_grid([sources, outputs]), step, save_dir)
    gen.train(was_training)
