"""The diffusers InstructPix2Pix recipe's run-level flags (issue 13): what must fail before any work
(--report_to a tracker that is not installed, --use_8bit_adam without bitsandbytes, --push_to_hub offline),
--scale_lr, --allow_tf32, the optimizer class, --validation_epochs, and the hub options of a config."""
from __future__ import annotations

import importlib.util

import torch

from common.errors import UserInputError

from .loading import HubOptions

# --report_to value -> the package its tracker needs (TensorBoard logging is built into the trainer)
TRACKER_PACKAGES = {"wandb": "wandb", "comet_ml": "comet_ml"}


def hub_options(config) -> HubOptions:
    return HubOptions(revision=config.revision, variant=config.variant, cache_dir=config.cache_dir,
                      unet_revision=config.non_ema_revision)


def check_tracker(report_to: str) -> None:
    """TensorBoard (and `all`, which includes it) run as built in; wandb / comet_ml are refused in one line:
    the trainer logs TensorBoard event files, which both import (`wandb sync --sync-tensorboard <logs>`)."""
    package = TRACKER_PACKAGES.get(report_to)
    if package is None:
        return
    if importlib.util.find_spec(package) is None:
        raise UserInputError(f"--report_to {report_to}: {package} is not installed (pip install {package}); "
                             "or use --report_to tensorboard (the default)")
    raise UserInputError(f"--report_to {report_to}: this trainer logs TensorBoard event files only (<output_dir>/"
                         f"logs); use --report_to tensorboard and import them into {report_to} afterwards")


def check_push(config) -> None:
    """--push_to_hub cannot work offline: refused before training, never after it."""
    if not config.push_to_hub:
        return
    from huggingface_hub import constants
    if constants.HF_HUB_OFFLINE:
        raise UserInputError("--push_to_hub: the hub is unreachable in offline mode (HF_HUB_OFFLINE=1); train "
                             "without it and upload the output folder later (hf upload <repo> <output_dir>)")


def preflight(config) -> None:
    """Every environment check of the recipe's flags, before any model or data is loaded."""
    check_tracker(config.report_to)
    if config.use_8bit_adam and importlib.util.find_spec("bitsandbytes") is None:
        raise UserInputError("--use_8bit_adam needs bitsandbytes (pip install bitsandbytes)")
    check_push(config)
    if config.allow_tf32:  # Ampere and newer; a no-op elsewhere
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def learning_rate(config, num_processes: int) -> float:
    """--learning_rate, times accumulation x batch x processes with --scale_lr (the recipe's rule)."""
    if not config.scale_lr:
        return config.learning_rate
    return config.learning_rate * config.gradient_accumulation_steps * config.train_batch_size * num_processes


def optimizer_class(config):
    """bitsandbytes' AdamW8bit with --use_8bit_adam (checked by preflight), else torch's AdamW."""
    if config.use_8bit_adam:
        import bitsandbytes as bnb
        return bnb.optim.AdamW8bit
    return torch.optim.AdamW


def epoch_validation_due(config, epoch: int) -> bool:
    """--validation_epochs N: validate after epochs 0, N, 2N, ... (the recipe's `epoch % N == 0`)."""
    return config.validation_epochs is not None and epoch % config.validation_epochs == 0
