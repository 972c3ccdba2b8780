"""Seeding and RNG state capture as plain tensors, so resumed runs continue the same random streams
and checkpoints never need pickle."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state_tensors() -> dict[str, torch.Tensor]:
    """Python, numpy and torch RNG states as a flat dict of tensors (safetensors-ready)."""
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    state = {
        "rng.python.version": torch.tensor([py_version], dtype=torch.int64),
        "rng.python.internal": torch.tensor(py_internal, dtype=torch.int64),
        "rng.python.gauss": torch.tensor([float("nan") if py_gauss is None else py_gauss], dtype=torch.float64),
        "rng.numpy.keys": torch.from_numpy(np_keys.astype(np.int64)),
        "rng.numpy.meta": torch.tensor([np_pos, np_has_gauss], dtype=torch.int64),
        "rng.numpy.cached": torch.tensor([np_cached], dtype=torch.float64),
        "rng.torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"rng.cuda.{i}"] = s
    return state


def restore_rng_state(state: dict[str, torch.Tensor]) -> None:
    """Restore states captured by `rng_state_tensors`."""
    gauss = float(state["rng.python.gauss"][0])
    random.setstate((
        int(state["rng.python.version"][0]),
        tuple(int(v) for v in state["rng.python.internal"].tolist()),
        None if gauss != gauss else gauss,
    ))
    pos, has_gauss = (int(v) for v in state["rng.numpy.meta"].tolist())
    np.random.set_state(("MT19937", state["rng.numpy.keys"].numpy().astype(np.uint32), pos, has_gauss,
                         float(state["rng.numpy.cached"][0])))
    torch.set_rng_state(state["rng.torch"])
    if torch.cuda.is_available():
        cuda = [state[k] for k in sorted(k for k in state if k.startswith("rng.cuda."))]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)


def without_global_rng_draws(loader):
    """Iterate `loader`, undoing the global torch RNG draw its iterator creation makes (DataLoader draws a base
    seed there unless it has its own generator, which accelerate's multi-process loaders drop). A run resumed
    mid-epoch creates one more iterator than the original; without this its noise stream would shift."""
    iterator = iter(loader)
    state = torch.get_rng_state()
    try:
        first = next(iterator)  # creating the underlying iterator happens at the first next()
    except StopIteration:
        return
    finally:
        torch.set_rng_state(state)
    yield first
    yield from iterator
