"""Device and dtype choice shared by every entry point: `auto` picks what a GPU user would set by hand.
torch is imported inside the functions, so entry points can declare these flags and still fail fast."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .cli import option
from .errors import UserInputError

if TYPE_CHECKING:
    import torch

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # flag value -> torch attribute
DTYPE_CHOICES = ("auto", *DTYPES)
DEVICE_HELP = "auto (CUDA, else Apple MPS, else CPU), cpu, cuda, cuda:N or mps"
DTYPE_HELP = "auto (fp16 on CUDA/MPS, bf16 where fp16 is unsupported, fp32 on the CPU), fp32, fp16 or bf16"


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """`auto`: CUDA, else MPS, else CPU; an explicit device that this machine lacks is a user error."""
    import torch
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
    import torch
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (5, 3)
    return device.type == "mps"


def resolve_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """`auto` (or None): fp16 where supported on an accelerator, else bf16 on CUDA, fp32 on the CPU."""
    import torch
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
    return getattr(torch, DTYPES[name])


# Config fields shared by the entry points that run the editor (one declaration, one help text each).
def device_option():
    return option("auto", f"torch device: {DEVICE_HELP}")


def dtype_option():
    return option("auto", f"editor weights' dtype: {DTYPE_HELP}", choices=DTYPE_CHOICES)


def compile_option():
    return option(False, "torch.compile the editor's UNet (the first edit compiles; later ones run faster on a GPU)")


def channels_last_option():
    return option(False, "keep the editor's UNet in channels_last memory layout (often faster on tensor-core GPUs)")
