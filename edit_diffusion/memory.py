"""Memory honesty before loading a big editor: count the weights' parameters from the safetensors headers
(8-byte length + JSON of dtype / shape per tensor: nothing else is read) or, for files not downloaded yet,
the shard index's total size; multiply by the load dtype's size; refuse in one line when that does not fit."""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import torch

from common.errors import UserInputError

STORED_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1}
HEADROOM = 0.9  # weights alone may use this share of the free memory (activations and the OS need the rest)


def header_params(path: Path) -> int:
    """Parameters in one safetensors file, from its header."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def component_params(folder: Path) -> int | None:
    """Parameters of one component folder (full-precision files, not `*.fp16.*` variants); None if unknown."""
    files = [p for p in sorted(folder.glob("*.safetensors")) if ".fp16." not in p.name]
    if files and all(p.exists() for p in files):  # a hub symlink to a missing blob does not "exist"
        return sum(header_params(p) for p in files)
    for index in sorted(folder.glob("*.safetensors.index.json")):
        total = json.loads(index.read_text()).get("metadata", {}).get("total_size")
        if total:
            return int(total) // 2  # the released shards are bf16 (the index gives bytes, not a dtype)
    return None


def local_folder(model: str, kind: str) -> Path | None:
    """The folder holding the repo's configs: the folder itself, or the hub snapshot (configs only fetched)."""
    if kind == "folder":
        return Path(model)
    from huggingface_hub import snapshot_download
    patterns = ["model_index.json", "*/config.json", "*.safetensors.index.json"]
    for cached_only in (True, False):  # the cache first (quietly), then the hub
        try:
            return Path(snapshot_download(model, allow_patterns=patterns, local_files_only=cached_only))
        except Exception:  # noqa: BLE001 - offline and not cached: the loader reports it in one line
            continue
    return None


def weights_params(folder: Path) -> dict[str, int]:
    """component -> parameter count, for the components model_index.json lists with weights."""
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    out = {}
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or value[0] is None or not (folder / name).is_dir():
            continue
        params = component_params(folder / name)
        if params:
            out[name] = params
    return out


def available_bytes(device: torch.device) -> int:
    """Free memory where the weights would live: the GPU's free memory, else the system's available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil
    return psutil.virtual_memory().available


def _amount(n: float, unit: str, scale: int) -> str:
    """1.5 GiB / 3.2 MiB; 12.0 B / 4.1 M (parameters)."""
    big, small = ("GiB", "MiB") if unit == "bytes" else ("B", "M")
    return f"{n / scale**3:.1f} {big}" if n >= scale**3 / 10 else f"{n / scale**2:.1f} {small}"


def check_weights_fit(model: str, kind: str, label: str, dtype: torch.dtype, device: torch.device,
                      cpu_offload: bool, params: dict[str, int] | None = None) -> dict[str, int] | None:
    """Refuse before loading when the weights would not fit; returns the parameter counts (None: unknown).
    `params` (component -> parameters) is counted from the repo's headers unless given (single files)."""
    if params is None:
        folder = local_folder(model, kind)
        if folder is None or not (folder / "model_index.json").is_file():
            return None
        params = weights_params(folder)
    if not params:
        return None
    size = torch.tensor([], dtype=dtype).element_size()
    total = sum(params.values()) * size
    # model CPU offload: everything in RAM, only the largest model on the GPU at a time
    needs = [(torch.device("cpu"), total), (device, max(params.values()) * size)] if cpu_offload else [(device, total)]
    for where, need in needs:
        free = available_bytes(where)
        if need > HEADROOM * free:
            name = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))
            ways = [w for w, ok in (("--device cuda", where.type == "cpu" and torch.cuda.is_available()),
                                    ("--dtype bf16", size > 2),
                                    ("--cpu-offload", not cpu_offload and device.type == "cuda"))
                    if ok] or ["a machine with more memory", "--cpu-offload on a GPU"]
            raise UserInputError(
                f"{model}: {label} needs about {_amount(need, 'bytes', 1024)} for its weights in {name} "
                f"({_amount(sum(params.values()), 'params', 1000)} parameters) but {where.type} has "
                f"{_amount(free, 'bytes', 1024)} free; "
                f"use {' or '.join(ways)}")
    return params
