"""The training loop: init phase (content only) then adversarial training, with accelerate, TensorBoard,
atomic checkpoints and exact resumption."""
from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from torch.utils.data import DataLoader
from tqdm import tqdm

from common.checkpoints import save_json
from common.distributed import cpu_multiprocess
from common.errors import UserInputError
from common.images import load_image, pil_to_tensor
from common.interrupt import GracefulStop
from common.seeding import restore_rng_state, rng_state_tensors
from common.tensorboard import image_grid, log_grid, log_scalars
from common.training import NonFiniteGuard, open_writer, seed_rank, train_result

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
RESUME_HINT = "--resume_cond gen_dis"  # how a stopped run continues


@dataclass
class Progress:
    step: int = 0            # optimizer steps done (both phases)
    epoch: int = 0           # current epoch
    batch_in_epoch: int = 0  # batches of `epoch` already done (non-zero only after a --max-steps stop or a signal)
    logs: dict | None = None  # the last step's losses


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
                       color=config.chromatic_loss_weight, tv=config.tv_loss_weight, l1=config.l1_loss_weight,
                       color_blur=config.color_loss_blur, structure=config.structure_loss_weight)


def generator_param_groups(gen: torch.nn.Module, ink_lr_scale: float) -> list[dict]:
    """Adam parameter groups of G: the ink layer's handful of scalars (threshold, sharpness, scale mix,
    colour) may take larger steps than the convolution weights; one group when there is no ink layer."""
    ink = getattr(gen, "ink", None)
    if ink is None:
        return [{"params": list(gen.parameters())}]
    ink_ids = {id(p) for p in ink.parameters()}
    return [{"params": [p for p in gen.parameters() if id(p) not in ink_ids]},
            {"params": list(ink.parameters()), "lr_scale": ink_lr_scale}]


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
    if ckpt_dir.exists() and not ckpt_dir.is_dir():
        raise UserInputError(f"--checkpoint-dir {ckpt_dir}: exists and is not a folder")
    has_checkpoint = (ckpt_dir / GENERATOR_FILE).exists()
    if config.resume_cond == "none" and has_checkpoint and not config.overwrite:
        raise UserInputError(f"{ckpt_dir} already holds a checkpoint; pass --resume_cond gen_dis to continue it, "
                             f"--overwrite to replace it, or another --checkpoint-dir")
    if config.resume_cond != "none" and not has_checkpoint:
        raise UserInputError(f"--resume_cond {config.resume_cond}: no {GENERATOR_FILE} in {ckpt_dir}")


def _load_matching(path: Path, fmt: str, architecture: str, kwargs: dict, net: torch.nn.Module) -> dict:
    """Load weights into `net` after checking the file was made for the same architecture; returns 'extra'."""
    arch, stored, extra = ckpt.read_network_header(path, fmt)
    # Options added after a file was written (e.g. ink) are absent from its header: they had their defaults.
    defaults = {name: param.default for name, param in inspect.signature(type(net)).parameters.items()}
    stored = {**{k: defaults[k] for k in kwargs if k in defaults}, **stored}
    if arch != architecture or stored != kwargs:
        raise UserInputError(f"{path}: built as {arch} {stored}, but the flags ask for {architecture} {kwargs}; "
                             f"pass the flags used for that run")
    ckpt.load_state_strict(net, ckpt.load_tensors(path), path)
    return extra


def checkpoint_paths(ckpt_dir: Path) -> dict[str, Path]:
    return {"generator": ckpt_dir / GENERATOR_FILE, "discriminator": ckpt_dir / DISCRIMINATOR_FILE,
            "training_state": ckpt_dir / STATE_FILE, "config": ckpt_dir / CONFIG_FILE}


def gathered_rng_states(accelerator) -> dict[str, torch.Tensor]:
    """This rank's RNG state as `rng.*`, plus every rank's as `rng.rank<r>.*` when there are several (a collective:
    all ranks call it), so each rank of a resumed run continues its own augmentation stream."""
    local = rng_state_tensors()
    if accelerator.num_processes == 1:
        return local
    states = dict(local)
    for key, value in local.items():
        every = accelerator.gather(value[None].to(accelerator.device)).cpu()  # (world, ...)
        states.update({f"rng.rank{r}.{key[len('rng.'):]}": every[r] for r in range(accelerator.num_processes)})
    return states


def restore_rank_rng(rng: dict[str, torch.Tensor], accelerator) -> None:
    """Restore this rank's saved stream; a checkpoint from another number of processes gives rank r the saved
    main stream re-seeded by r (the data split differs then anyway, so exact continuation is impossible)."""
    prefix = f"rng.rank{accelerator.process_index}."
    own = {"rng." + k[len(prefix):]: v for k, v in rng.items() if k.startswith(prefix)}
    saved_world = len({k.split(".")[1] for k in rng if k.startswith("rng.rank")}) or 1
    if own and saved_world == accelerator.num_processes:
        restore_rng_state(own)
        return
    restore_rng_state(rng)
    if accelerator.num_processes > 1 or saved_world > 1:
        if accelerator.is_main_process:
            print(f"warning: checkpoint saved by {saved_world} process(es), resuming with {accelerator.num_processes}: "
                  "random streams re-seeded, so the run continues but not bit-exactly", file=sys.stderr)
        torch.manual_seed(int(torch.randint(2**62, (1,))) + accelerator.process_index)


def save_checkpoint(ckpt_dir: Path, config: GanTrainConfig, gen, disc, opt_g, opt_d, progress: Progress,
                    rng: dict[str, torch.Tensor] | None = None) -> dict:
    """Write the four checkpoint files (each atomically); the state file last, it marks a complete save."""
    info = {"step": progress.step, "epoch": progress.epoch, "batch_in_epoch": progress.batch_in_epoch}
    paths = checkpoint_paths(ckpt_dir)
    ckpt.save_generator(gen, paths["generator"], config.generator, config.generator_kwargs(), extra=info)
    ckpt.save_discriminator(disc, paths["discriminator"], config.discriminator, config.discriminator_kwargs())
    save_json(config.to_dict(), paths["config"])
    # the state file holds the weights too and is written last: it alone is a complete checkpoint
    ckpt.save_training_state(paths["training_state"], {"generator": opt_g, "discriminator": opt_d},
                             rng if rng is not None else rng_state_tensors(), info,
                             models={"generator": gen, "discriminator": disc})
    return {k: str(v) for k, v in paths.items()}


@dataclass
class Run:
    """Everything the stage-1 loop reads and updates: one object instead of 19 positional arguments."""
    config: GanTrainConfig
    accelerator: Accelerator
    ckpt_dir: Path
    nets: Nets
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    loader: DataLoader
    sampler: EpochSampler
    samples: torch.Tensor                # fixed sources of the images/samples grid
    weights: LossWeights
    adv: object                          # ADVERSARIAL_LOSSES entry
    augment: object                      # make_augment(...) callable
    steps_per_epoch: int
    last_step: int
    progress: Progress
    guard: NonFiniteGuard
    writer: object = None                # SummaryWriter on the main process
    bar: object = None                   # tqdm
    stop: GracefulStop | None = None
    batch: Batch | None = None           # the last batch (for the images/train grid)


def train(config: GanTrainConfig) -> dict:
    """Run training as configured; returns common.training.train_result (RESULT_KEYS)."""
    run, rng = build(config)
    with GracefulStop() as stop:
        run.stop = stop
        if rng is not None:
            restore_rank_rng(rng, run.accelerator)  # after all model construction: continue the saved streams
        fit(run)
    return finish(run)


def build(config: GanTrainConfig) -> tuple[Run, dict | None]:
    """Setup, data, networks, optimizers and (if asked) the resumed state; returns the run and saved RNG states."""
    # --- Setup
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    # find_unused_parameters: in the G phase D runs with requires_grad off, so under DDP its parameters get no
    # gradient in that backward; DDP must be told to expect that (ignored on a single process)
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=cpu_multiprocess(),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    seed_rank(config.seed, accelerator.process_index)
    ckpt_dir = Path(config.checkpoint_dir)
    _check_checkpoint_dir(config, ckpt_dir)
    dataset, samples = build_data(config)
    sampler = EpochSampler(len(dataset), config.seed)
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler,
                        drop_last=True, num_workers=config.workers,
                        # own generator: DataLoader draws each iterator's base seed from it, so the global RNG
                        # (augmentations) is not advanced by iterator creation and resuming mid-epoch stays exact
                        generator=torch.Generator().manual_seed(config.seed))

    # --- Create models
    gen = build_generator(config.generator, **config.generator_kwargs())
    if config.init_generator:  # fine-tune ours or a published generator (foreign.py) of the same architecture
        ckpt.load_state_strict(gen, ckpt.load_generator(config.init_generator).state_dict(), config.init_generator)
    disc = build_discriminator(config.discriminator, **config.discriminator_kwargs())
    backbone = build_backbone(config.content_backbone, config.vgg_weights) if config.needs_backbone else None
    opt_g = torch.optim.Adam(generator_param_groups(gen, config.ink_lr_scale), lr=config.initial_lr, betas=ADAM_BETAS)
    opt_d = torch.optim.Adam(disc.parameters(), lr=config.lr_discriminator, betas=ADAM_BETAS)
    progress, rng = resume(config, ckpt_dir, gen, disc, opt_g, opt_d)

    gen, disc, opt_g, opt_d, loader = accelerator.prepare(gen, disc, opt_g, opt_d, loader)
    if backbone is not None:
        backbone.to(accelerator.device)
    nets = Nets(gen, disc, backbone, luma_discriminator=config.luma_discriminator,
                ink=getattr(accelerator.unwrap_model(gen), "ink", None))
    steps_per_epoch = len(loader)
    total_steps = config.epochs * steps_per_epoch
    guard = NonFiniteGuard(accelerator, config.max_nonfinite_steps, ckpt_dir, RESUME_HINT)
    run = Run(config, accelerator, ckpt_dir, nets, opt_g, opt_d, loader, sampler, samples, loss_weights(config),
              ADVERSARIAL_LOSSES[config.adv_loss], make_augment(config.image_size), steps_per_epoch,
              min(total_steps, config.max_steps or total_steps), progress, guard,
              writer=open_writer(accelerator, config.log_dir or ckpt_dir / "logs"))
    return run, rng


def resume(config: GanTrainConfig, ckpt_dir: Path, gen, disc, opt_g, opt_d) -> tuple[Progress, dict | None]:
    """Load what --resume_cond asks for; returns the progress to continue from and the saved RNG states."""
    if config.resume_cond == "none":
        return Progress(), None
    extra = _load_matching(ckpt_dir / GENERATOR_FILE, ckpt.GENERATOR_FORMAT, config.generator,
                           config.generator_kwargs(), gen)
    if config.resume_cond == "gen":
        return Progress(), None
    _load_matching(ckpt_dir / DISCRIMINATOR_FILE, ckpt.DISCRIMINATOR_FORMAT, config.discriminator,
                   config.discriminator_kwargs(), disc)
    opt_states, rng, info = ckpt.load_training_state(ckpt_dir / STATE_FILE)
    ckpt.require_networks(opt_states, ckpt_dir / STATE_FILE, "optimizer states")
    ckpt.check_rng_states(rng, ckpt_dir / STATE_FILE)  # a damaged stream: one line now, not a traceback later
    saved = ckpt.load_model_states(ckpt_dir / STATE_FILE)
    if saved:  # the weights of the same save as the optimizer state (the G / D files may be one save newer)
        ckpt.load_state_strict(gen, saved["generator"], ckpt_dir / STATE_FILE)
        ckpt.load_state_strict(disc, saved["discriminator"], ckpt_dir / STATE_FILE)
    elif info["step"] != extra.get("step"):
        raise UserInputError(f"{ckpt_dir}: generator (step {extra.get('step')}) and training state "
                             f"(step {info['step']}) come from different saves")
    ckpt.load_optimizer_strict(opt_g, opt_states["generator"], ckpt_dir / STATE_FILE)
    for group in opt_g.param_groups:  # the saved groups carry the old run's scale; the flag wins
        if "lr_scale" in group:
            group["lr_scale"] = config.ink_lr_scale
    ckpt.load_optimizer_strict(opt_d, opt_states["discriminator"], ckpt_dir / STATE_FILE)
    return Progress(info["step"], info["epoch"], info["batch_in_epoch"]), rng


def fit(run: Run) -> None:
    """Epochs of steps until the last step, a stop signal, or too many non-finite steps in a row."""
    config, progress = run.config, run.progress
    run.bar = tqdm(total=run.last_step, initial=progress.step, desc="train", unit="step",
                   disable=not run.accelerator.is_local_main_process)
    run.nets.generator.train(), run.nets.discriminator.train()
    stopping = False
    while progress.step < run.last_step and progress.epoch < config.epochs and not stopping:
        epoch = progress.epoch
        stopping = _run_epoch(run, epoch)
        epoch_done = progress.batch_in_epoch >= run.steps_per_epoch
        if epoch_done:
            progress.epoch, progress.batch_in_epoch = epoch + 1, 0
        finished = progress.step >= run.last_step or progress.epoch >= config.epochs
        if (epoch_done and progress.epoch % config.save_interval == 0) or finished or stopping:
            _save(run)
    run.bar.close()


def _run_epoch(run: Run, epoch: int) -> bool:
    """The (rest of the) batches of `epoch`; returns True when a stop signal was agreed on."""
    progress, loader = run.progress, run.loader
    epoch_loader = run.accelerator.skip_first_batches(loader, progress.batch_in_epoch) \
        if progress.batch_in_epoch else loader
    epoch_loader.set_epoch(epoch)
    # and directly: under several processes accelerate's skip wrapper (Skip -> Shard -> Batch -> our sampler)
    # does not reach the sampler, and a mid-epoch resume would replay epoch 0's order
    run.sampler.set_epoch(epoch)
    for raw in epoch_loader:
        _step(run, raw, in_init=epoch < run.config.initial_epochs)
        if run.stop.agreed(run.accelerator):
            return True
        if progress.step >= run.last_step:
            break
    return False


def _step(run: Run, raw: dict, in_init: bool) -> None:
    """One optimizer step (init or GAN), its non-finite bookkeeping and its TensorBoard scalars."""
    config, progress, nets = run.config, run.progress, run.nets
    lr_g, lr_d = learning_rates(progress.step, config, run.steps_per_epoch)
    for group in run.opt_g.param_groups:
        group["lr"] = lr_g * group.get("lr_scale", 1.0)
    for group in run.opt_d.param_groups:
        group["lr"] = lr_d
    run.batch = make_batch(raw, run.augment, config.mode == "paired", need_style=not in_init)
    run.guard.start_step()
    backward = run.accelerator.backward
    if in_init:
        logs = init_step(run.batch, nets, run.opt_g, run.weights, backward=backward, check=run.guard)
    else:
        logs = gan_step(run.batch, nets, run.opt_g, run.opt_d, run.weights, run.adv, backward=backward,
                        check=run.guard)
    progress.logs = logs
    run.guard.end_step(progress.step + 1, logs)
    progress.step += 1
    progress.batch_in_epoch += 1
    run.bar.update(1)
    run.bar.set_postfix({k: f"{v:.3g}" for k, v in logs.items() if k in ("g_total", "d_total", "content")},
                        refresh=False)
    if progress.step % config.log_interval == 0 or progress.step == run.last_step:
        scalars = {f"loss/{k}": v for k, v in logs.items()}
        scalars.update({"lr/generator": lr_g, "lr/discriminator": lr_d})
        if nets.ink is not None:  # what the ink layer has learned so far
            scalars.update(nets.ink.summary())
        log_scalars(run.writer, scalars, progress.step)


def _save(run: Run) -> None:
    """Image grids and the four checkpoint files (main process), with every rank's RNG state."""
    accelerator = run.accelerator
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(run.nets.generator)
    if accelerator.is_main_process:
        log_images(run.writer, unwrapped, run.batch, run.samples, run.progress.step, run.config.save_image_dir)
    rng = gathered_rng_states(accelerator)  # a collective: every rank, outside the main-process branch
    if accelerator.is_main_process:
        save_checkpoint(run.ckpt_dir, run.config, unwrapped, accelerator.unwrap_model(run.nets.discriminator),
                        run.opt_g, run.opt_d, run.progress, rng)
    accelerator.wait_for_everyone()


def finish(run: Run) -> dict:
    """Close the writer and accelerate; the result in the schema both trainers share."""
    if run.writer is not None:
        run.writer.close()
    run.accelerator.end_training()
    paths = {name: str(path) for name, path in checkpoint_paths(run.ckpt_dir).items()}
    return train_result(run.progress.step, run.progress.epoch, run.progress.logs, run.ckpt_dir, paths, run.stop,
                        resume=RESUME_HINT)


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
