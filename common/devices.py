"""Device and dtype choice shared by every entry point: `auto` picks what a GPU user would set by hand."""
from __future__ import annotations

import torch

from .errors import UserInputError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DTYPE_CHOICES = ("auto", *DTYPES)
DEVICE_HELP = "auto (CUDA, else Apple MPS, else CPU), cpu, cuda, cuda:N or mps"
DTYPE_HELP = "auto (fp16 on CUDA/MPS, bf16 where fp16 is unsupported, fp32 on the CPU), fp32, fp16 or bf16"


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """`auto`: CUDA, else MPS, else CPU; an explicit device that this machine lacks is a user error."""
    if str(name) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserInputError(f"--device: unknown device {name!r} ({DEVICE_HELP})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"--device {name}: CUDA is not available on this machine (use --device auto or cpu)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserInputError(f"--device {name}: Apple MPS is not available on this machine (use --device auto or cpu)")
    return device


def half_supported(device: torch.device) -> bool:
    """fp16 kernels exist: every CUDA GPU from compute capability 5.3 on, and Apple MPS."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (5, 3)
    return device.type == "mps"


def resolve_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """`auto` (or None): fp16 where supported on an accelerator, else bf16 on CUDA, fp32 on the CPU."""
    if isinstance(name, torch.dtype):
        return name
    if name is None or name == "auto":
        if device.type == "cpu":
            return torch.float32  # CPU fp16 convolutions are slow or missing; bf16 loses too much for the VAE
        if half_supported(device):
            return torch.float16
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if name not in DTYPES:
        raise UserInputError(f"--dtype: unknown dtype {name!r}; choose from {', '.join(DTYPE_CHOICES)}")
    return DTYPES[name]
