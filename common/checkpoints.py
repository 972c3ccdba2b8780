"""Checkpoint I/O: atomic writes (temp name, fsync, rename) so a crash never leaves a half file,
safetensors for weights, JSON for configs, and pickle-free loading of foreign .pt/.ckpt files."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import UserInputError

# The bundled models (shipped with the repository): read-only for the trainers unless a flag says otherwise.
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
ALLOW_BUNDLED_FLAG = "--allow-overwrite-bundled"


def refuse_bundled_output(flag: str, path: str | os.PathLike | None, allow: bool) -> None:
    """Refuse a training output inside the bundled `checkpoints/` folder unless `allow` (the explicit flag)."""
    if path is None or allow:
        return
    resolved = Path(path).resolve()
    if resolved == BUNDLED_DIR or resolved.is_relative_to(BUNDLED_DIR):
        raise UserInputError(f"{flag} {path}: inside {BUNDLED_DIR}, the bundled models; write under runs/ "
                             f"or pass {ALLOW_BUNDLED_FLAG} to replace them on purpose")


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)` then rename onto `path`; the old file survives any crash before the rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would (umask applied).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_json(obj: Any, path: str | os.PathLike) -> None:
    """Write JSON atomically (indented, keys in insertion order)."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(obj, handle, indent=2, default=str)
            handle.write("\n")
    atomic_write(path, write)


def load_json(path: str | os.PathLike) -> Any:
    """Read JSON, turning a missing or malformed file into a one-line user error."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(f"{path}: not valid JSON ({err})") from None


def save_tensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                 metadata: dict[str, str] | None = None) -> None:
    """Save a flat tensor dict as safetensors, atomically; metadata values must be strings."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a safetensors file on CPU with a clear error for missing or non-safetensors files."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: checkpoint not found")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise UserInputError(f"{path}: not a readable safetensors file ({err})") from None


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata stored in a safetensors header (empty dict when none)."""
    from safetensors import safe_open
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise UserInputError(f"{path}: not a readable safetensors file ({err})") from None


def load_weights_any(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict from .safetensors, or from .pt/.pth/.ckpt/.bin with `weights_only=True`
    (never unpickles arbitrary objects: a malicious pickle is refused, not run)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_tensors(path)
    if not path.is_file():
        raise UserInputError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler raises many types; all mean "refused"
        raise UserInputError(f"{path}: refused to load (not a plain weights file: {type(err).__name__})") from None
    for wrapper in ("state_dict", "model_state_dict"):  # Lightning / pytorch-animeGAN training checkpoints
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserInputError(f"{path}: does not contain a state dict of tensors")
    return obj
