"""Checkpoint files, all safetensors (no pickle anywhere), all written atomically.

- generator.safetensors: weights + metadata {format, architecture, kwargs (JSON)}: rebuilds from the file alone.
- discriminator.safetensors: same layout for D.
- training_state.safetensors: optimizer state tensors + RNG state + a copy of the G and D weights; the rest (param
  groups, step, epoch, optimizer scalars) as JSON in the metadata. Written last, in one atomic rename, it is a
  complete checkpoint by itself: a run killed between the four files resumes from it, never from a mix of saves.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from common.checkpoints import load_tensors, read_metadata, save_tensors
from common.errors import UserInputError, one_line
from common.seeding import restore_rng_state, rng_state_tensors

from .networks import DISCRIMINATORS, GENERATORS

GENERATOR_FORMAT = "stylize_gan.generator"
DISCRIMINATOR_FORMAT = "stylize_gan.discriminator"
STATE_FORMAT = "stylize_gan.training_state"
MODEL_PREFIX = "model."  # training_state keys "model.<name>.<state-dict key>": the weights of that save
TRAINED_NETWORKS = ("generator", "discriminator")  # what a stage-1 training state holds, each with its optimizer
FORMAT_VERSION = "1"


def save_network(net: nn.Module, path: str | os.PathLike, fmt: str, architecture: str, kwargs: dict,
                 extra: dict | None = None) -> None:
    """Weights plus what builds them: {format, version, architecture, kwargs JSON, extra JSON}."""
    metadata = {"format": fmt, "format_version": FORMAT_VERSION, "architecture": architecture,
                "kwargs": json.dumps(kwargs, sort_keys=True), "extra": json.dumps(extra or {}, sort_keys=True)}
    save_tensors(net.state_dict(), path, metadata=metadata)


def read_network_header(path: str | os.PathLike, fmt: str) -> tuple[str, dict, dict]:
    """(architecture, kwargs, extra) of a checkpoint of format `fmt`, with one-line errors for anything else."""
    path = Path(path)
    if path.is_dir():
        hint = " (a diffusers pipeline folder?)" if (path / "model_index.json").exists() else ""
        raise UserInputError(f"{path}: is a folder{hint}; expected a {fmt} .safetensors file")
    meta = read_metadata(path)
    if meta.get("format") != fmt:
        found = meta.get("format") or "no stylize_gan metadata"
        raise UserInputError(f"{path}: not a {fmt} checkpoint ({found})")
    try:
        return meta["architecture"], json.loads(meta["kwargs"]), json.loads(meta.get("extra", "{}"))
    except (KeyError, json.JSONDecodeError) as err:
        raise UserInputError(f"{path}: damaged {fmt} metadata ({err})") from None


def _build_and_load(path: Path, fmt: str, registry: dict, device: str | torch.device) -> nn.Module:
    arch, kwargs, _ = read_network_header(path, fmt)
    if arch not in registry:
        raise UserInputError(f"{path}: unknown architecture {arch!r} (this version knows {', '.join(sorted(registry))})")
    try:
        with torch.device("meta"):  # shapes only: numbers in the header cannot make us allocate a huge network
            probe = registry[arch](**kwargs)
    except (TypeError, ValueError) as err:
        raise UserInputError(f"{path}: cannot build {arch} from its stored arguments ({err})") from None
    _check_shapes(probe, path)
    net = registry[arch](**kwargs)
    load_state_strict(net, load_tensors(path), path)
    return net.to(device)


def _check_shapes(net: nn.Module, path: Path) -> None:
    """The file's tensor shapes (read from its header) are those of `net`, else the one-line mismatch error."""
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as handle:
        stored = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    wanted = {key: tuple(value.shape) for key, value in net.state_dict().items()}
    if stored != wanted:
        differ = sorted(k for k in stored.keys() | wanted.keys() if stored.get(k) != wanted.get(k))
        raise UserInputError(f"{path}: weights do not match the architecture ({len(differ)} tensor(s) differ, "
                             f"e.g. {differ[0]}: file {stored.get(differ[0])}, built {wanted.get(differ[0])})")


def load_state_strict(net: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """load_state_dict(strict) with a one-line error when the weights do not fit the architecture."""
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise UserInputError(f"{path}: weights do not match the architecture ({detail})") from None


def save_generator(net: nn.Module, path: str | os.PathLike, architecture: str, kwargs: dict,
                   extra: dict | None = None) -> None:
    """Self-describing generator file."""
    save_network(net, path, GENERATOR_FORMAT, architecture, kwargs, extra)


TORCH_SUFFIXES = (".pt", ".pth")  # what the published AnimeGAN generators ship as


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a generator from its file alone (eval mode): ours (.safetensors), a published AnimeGAN generator
    (.pt / .pth, recognised from its keys) or an ONNX generator (run by onnxruntime); see foreign.py."""
    from . import foreign
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return foreign.load_onnx_generator(path, device)
    if suffix in TORCH_SUFFIXES:
        return foreign.load_published(path).to(device)
    if path.is_file() and "format" not in read_metadata(path):  # converted published file
        state = load_tensors(path)
        if foreign.recognise(state):
            return foreign.build_published(state, path).to(device)
    return _build_and_load(path, GENERATOR_FORMAT, GENERATORS, device).eval()


def save_discriminator(net: nn.Module, path: str | os.PathLike, architecture: str, kwargs: dict) -> None:
    save_network(net, path, DISCRIMINATOR_FORMAT, architecture, kwargs)


def load_discriminator(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    return _build_and_load(Path(path), DISCRIMINATOR_FORMAT, DISCRIMINATORS, device)


# --- optimizer state without pickle: tensors by "<prefix>.<param index>.<name>", everything else as JSON

def flatten_optimizer(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    state = opt.state_dict()
    tensors, scalars = {}, {}
    for index, per_param in state["state"].items():
        for name, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], info: dict, prefix: str) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            index, name = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    for key, value in info["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else dict(g) for g in info["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_training_state(path: str | os.PathLike, optimizers: dict[str, torch.optim.Optimizer],
                        rng: dict[str, torch.Tensor], info: dict, models: dict[str, nn.Module] | None = None) -> None:
    """Optimizers (name -> optimizer), RNG tensors, a JSON-able `info` (step, epoch, ...) and optionally the
    models' weights (name -> module) in one file."""
    tensors = dict(rng)
    for name, net in (models or {}).items():
        tensors.update({f"{MODEL_PREFIX}{name}.{k}": v for k, v in net.state_dict().items()})
    info = dict(info, optimizers={})
    for name, opt in optimizers.items():
        opt_tensors, opt_info = flatten_optimizer(opt, f"optim.{name}")
        tensors.update(opt_tensors)
        info["optimizers"][name] = opt_info
    save_tensors(tensors, path, metadata={"format": STATE_FORMAT, "format_version": FORMAT_VERSION,
                                          "info": json.dumps(info), "tensors_sha256": tensors_digest(tensors)})


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes: safetensors has no checksum, so a flipped byte in the
    data would otherwise resume silently from damaged weights or optimizer moments."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        value = tensors[key].detach().cpu().contiguous()
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_training_state(path: str | os.PathLike) -> tuple[dict[str, dict], dict[str, torch.Tensor], dict]:
    """(optimizer state dicts by name, RNG tensors, info) saved by `save_training_state`."""
    meta = read_metadata(path)
    if meta.get("format") != STATE_FORMAT:
        raise UserInputError(f"{path}: not a {STATE_FORMAT} file")
    tensors = load_tensors(path)
    if "tensors_sha256" in meta and tensors_digest(tensors) != meta["tensors_sha256"]:  # older saves: none
        raise UserInputError(f"{path}: damaged since the save (checksum of its tensors differs)")
    try:
        info = json.loads(meta["info"])
        optimizers = {name: unflatten_optimizer(tensors, opt_info, f"optim.{name}")
                      for name, opt_info in info.pop("optimizers").items()}
        if not all(isinstance(info.get(key, 0), int) for key in ("step", "epoch", "batch_in_epoch")) or \
                "step" not in info:
            raise ValueError("no whole-number step, epoch or batch_in_epoch")
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise UserInputError(f"{path}: damaged training state ({type(err).__name__}: {one_line(err)[:200]})") from None
    rng = {k: v for k, v in tensors.items() if k.startswith("rng.")}
    return optimizers, rng, info


def check_rng_states(rng: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Every saved stream (the main one and each rank's) must restore: tried here, the live state put back."""
    streams = {"": {k: v for k, v in rng.items() if not k.startswith("rng.rank")}}
    for key, value in rng.items():
        if key.startswith("rng.rank"):
            rank, name = key[len("rng."):].split(".", 1)
            streams.setdefault(rank, {})["rng." + name] = value
    live = rng_state_tensors()
    try:
        for rank, state in streams.items():
            try:
                restore_rng_state(state)
            except (KeyError, IndexError, ValueError, TypeError, RuntimeError, OverflowError) as err:
                raise UserInputError(f"{path}: damaged random state {rank or 'main'} "
                                     f"({type(err).__name__}: {one_line(err)[:120]})") from None
    finally:
        restore_rng_state(live)


def load_optimizer_strict(opt: torch.optim.Optimizer, state: dict, path: str | os.PathLike) -> None:
    """optimizer.load_state_dict with a one-line error naming the file when the state is another model's."""
    try:
        opt.load_state_dict(state)
    except (ValueError, KeyError, RuntimeError, TypeError) as err:
        raise UserInputError(f"{path}: optimizer state does not fit this model ({one_line(err)[:200]})") from None


def load_model_states(path: str | os.PathLike) -> dict[str, dict[str, torch.Tensor]]:
    """name -> state dict of the weights stored in a training state file (empty for files without them)."""
    states: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in load_tensors(path).items():
        if key.startswith(MODEL_PREFIX):
            name, _, sub = key[len(MODEL_PREFIX):].partition(".")
            states.setdefault(name, {})[sub] = value
    if states:
        require_networks(states, path, "weights")
    return states


def require_networks(found: dict, path: str | os.PathLike, what: str) -> None:
    """A crafted or damaged training state may hold one network only (or foreign names): one line now, not a
    KeyError in the middle of the resume."""
    if sorted(found) != sorted(TRAINED_NETWORKS):
        raise UserInputError(f"{path}: damaged training state ({what} for {', '.join(sorted(found)) or 'nothing'}; "
                             f"expected {' and '.join(TRAINED_NETWORKS)})")
