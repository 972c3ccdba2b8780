"""Small multi-process helpers shared by the trainers."""
from __future__ import annotations

import os

import torch


def cpu_multiprocess() -> bool:
    """True when launched as several processes (torchrun / accelerate launch) on a machine without CUDA.
    accelerate only forms a (gloo) process group on CPUs when told `cpu=True`; without it every process would
    train alone and all of them would write the same checkpoint files."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world > 1 and not torch.cuda.is_available()
