"""What both trainers share: the non-finite guard, the TensorBoard writer, the stop report, seeding per rank
and the result schema. Stage 1 (stylize_gan/trainer.py) and stage 2 (edit_diffusion/trainer.py) use these and
nothing of their own for the same job, so the two cannot drift apart again."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import TrainingStopped

if TYPE_CHECKING:  # torch is imported where it is used: the config modules import this file for two constants
    import torch

    from .interrupt import GracefulStop

# One limit flag, same name and meaning in both trainers (--max-nonfinite-steps / --max_nonfinite_steps).
NONFINITE_HELP = "non-finite steps are skipped with a warning; stop after this many in a row"
NONFINITE_LIMIT = 10  # default of that flag in both trainers
# The keys of the dict both `train()` functions return (plus `stopped_by` / `exit_code` after a signal).
RESULT_KEYS = ("step", "epoch", "losses", "output_dir", "files")


def all_finite(loss: torch.Tensor, params=()) -> bool:
    """True when the loss and the gradients of `params` are finite: a NaN / inf step must not reach the weights."""
    import torch
    if not bool(torch.isfinite(loss.detach()).all()):
        return False
    grads = [p.grad for p in params if p.grad is not None]
    return not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))


class NonFiniteGuard:
    """Whether an optimizer step may be applied, and when to give up. Call it with (loss, params) before each
    optimizer step: True when the loss and the gradients are finite on every rank. With the fp16 GradScaler only
    the loss is checked: the scaler skips overflowing gradients itself and must see them to lower its scale.
    `end_step` warns once per skipped step and raises TrainingStopped after `limit` skipped steps in a row."""

    def __init__(self, accelerator, limit: int, checkpoint_dir: str | Path, resume: str):
        self.accelerator, self.limit, self.checkpoint_dir, self.resume = accelerator, limit, checkpoint_dir, resume
        self.skipped, self.in_a_row = False, 0

    def __call__(self, loss: torch.Tensor, params=()) -> bool:
        from .interrupt import all_ranks_true
        params = params if getattr(self.accelerator, "scaler", None) is None else []
        ok = all_ranks_true(all_finite(loss, params), self.accelerator)  # a collective: every rank calls it
        self.skipped |= not ok
        return ok

    def start_step(self) -> None:
        self.skipped = False

    def end_step(self, step: int, losses: dict[str, float]) -> bool:
        """Book the step numbered `step` (1-based); returns True when it was skipped."""
        if not self.skipped:
            self.in_a_row = 0
            return False
        self.in_a_row += 1
        bad = ", ".join(f"{k}={v:.3g}" for k, v in losses.items() if v != v or abs(v) == float("inf"))
        print(f"warning: non-finite loss or gradients at step {step} ({bad or 'gradients'}); step skipped "
              f"({self.in_a_row} in a row)", file=sys.stderr)
        if self.in_a_row >= self.limit:
            raise TrainingStopped(
                f"training stopped: {self.in_a_row} non-finite steps in a row at step {step}; the last good "
                f"checkpoint in {self.checkpoint_dir} is kept (try lower learning rates, smaller loss weights or "
                f"--mixed_precision no, then {self.resume})")
        return True


def seed_rank(seed: int | None, rank: int) -> None:
    """Seed python, numpy and torch with seed + rank: each process its own augmentation / noise stream, the same
    streams on every rerun. None leaves the generators unseeded."""
    if seed is not None:
        from .seeding import seed_everything
        seed_everything(seed + rank)


def open_writer(accelerator, log_dir: str | Path):
    """The run's TensorBoard SummaryWriter on the main process, None on the others (log_scalars accepts None)."""
    if not accelerator.is_main_process:
        return None
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(str(log_dir))


def stop_report(stop: GracefulStop, step: int, where: str | Path, resume: str) -> dict:
    """One line on stderr after SIGINT / SIGTERM, and the result keys that make the CLI exit 128 + signal."""
    print(f"stopped by {stop.signal_name} at step {step}; checkpoint saved in {where} (continue with {resume})",
          file=sys.stderr)
    return {"stopped_by": stop.signal_name, "exit_code": stop.exit_code}


def train_result(step: int, epoch: int, losses: dict[str, float] | None, output_dir: str | Path,
                 files: dict[str, str], stop: GracefulStop | None = None, where: str | Path = "",
                 resume: str = "") -> dict:
    """The one result schema of both trainers: RESULT_KEYS, plus the stop report after a signal."""
    result = {"step": step, "epoch": epoch, "losses": dict(losses or {}), "output_dir": str(output_dir),
              "files": files}
    if stop is not None and stop.requested:
        result.update(stop_report(stop, step, where or output_dir, resume))
    return result
