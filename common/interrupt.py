"""Graceful stop for training loops: SIGINT / SIGTERM set a flag that the loop polls between steps, so it can
write a final checkpoint and exit cleanly; a second signal aborts at once. Under several processes the flag is
agreed on by all ranks (one rank stopping alone would leave the others waiting forever in a collective)."""
from __future__ import annotations

import signal
import sys

import torch

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulStop:
    """Context manager: `stop.requested` turns True after SIGINT / SIGTERM; `stop.signal_name` says which."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    @property
    def exit_code(self) -> int:
        """The shell convention for a process ended by a signal: 128 + its number (130 SIGINT, 143 SIGTERM)."""
        return 128 + (self.signum or 0)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # second signal: the user really wants out now
            self._restore()
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\nreceived {signal.Signals(signum).name}: finishing this step and saving a checkpoint "
              "(send it again to abort without saving)", file=sys.stderr, flush=True)

    def __enter__(self) -> "GracefulStop":
        try:
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread (e.g. a web worker): signals stay as they were
            self._previous.clear()
        return self

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __exit__(self, *exc) -> None:
        self._restore()

    def agreed(self, accelerator) -> bool:
        """True on every rank as soon as any rank was signalled (one tiny all-reduce when distributed)."""
        if accelerator.num_processes == 1:
            return self.requested
        flag = torch.tensor([1.0 if self.requested else 0.0], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)


def all_ranks_true(flag: bool, accelerator) -> bool:
    """Logical AND of a per-rank flag over all ranks (so every rank takes the same branch)."""
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor([0.0 if flag else 1.0], device=accelerator.device)
    return bool(accelerator.reduce(value, reduction="sum").item() == 0)
