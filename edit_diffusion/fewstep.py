"""Few-step editing by task arithmetic: an editor fine-tuned from base B gains the distillation that
turned B into D (LCM, LCM-LoRA, Turbo) as W' = W_edit + w (W_distilled - W_base), for every UNet
weight except conv_in (the editor's 8-channel input has no counterpart in B or D). The result is
saved as a new pipeline folder with an LCM scheduler, so edits run in about 4 steps.

    python -m edit_diffusion.fewstep --editor E --base B --distilled D --weight 1.0 --output O
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from common.checkpoints import save_json
from common.cli import check_fields, option, parse_config
from common.errors import UserInputError, cli_errors

from .editor import DEFAULTS_FILE, load_editor
from .loading import load_pipeline, source_kind

logger = logging.getLogger(__name__)
SKIPPED_PREFIX = "conv_in."  # the 8-channel input layer (InstructPix2Pix surgery)
FEWSTEP_DEFAULTS = {"steps": 4, "scheduler": "lcm"}
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' LoRA file name (LCM-LoRA repos use it)


def is_lora_file(path: str) -> bool:
    """A safetensors file of LoRA weights (e.g. LCM-LoRA) rather than a full model."""
    p = Path(path)
    if not (p.is_file() and p.suffix == ".safetensors"):
        return False
    from safetensors import safe_open
    with safe_open(str(p), framework="pt") as handle:
        return any("lora" in k for k in handle.keys())


def hub_file(repo_id: str, filename: str) -> str | None:
    """A file of a hub repo (from the cache when offline); None when the repo has no such file, or it is not
    in the cache offline (loading the repo as a model then names the id in its error)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError
    try:
        return hf_hub_download(repo_id, filename)
    except (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError):
        return None


def lora_weights(distilled: str) -> str | None:
    """The LoRA file `distilled` stands for: the file itself, `pytorch_lora_weights.safetensors` in a folder,
    or that file of a hub repo (LCM-LoRA repos ship it under this name); None for a full model."""
    path = Path(distilled)
    if is_lora_file(distilled):
        return distilled
    if path.is_dir():
        return str(path / LORA_WEIGHT_NAME) if is_lora_file(str(path / LORA_WEIGHT_NAME)) else None
    if source_kind(distilled) == "hub":
        found = hub_file(distilled, LORA_WEIGHT_NAME)
        return found if found is not None and is_lora_file(found) else None
    return None


def unet_state(source: str) -> dict[str, torch.Tensor]:
    """UNet weights of a UNet folder, a pipeline folder, a single-file checkpoint, or a hub id (a pipeline repo
    or a UNet-only repo such as latent-consistency/lcm-sdxl)."""
    path = Path(source)
    if path.is_dir() and (path / "config.json").is_file() and not (path / "unet").is_dir():
        return UNet2DConditionModel.from_pretrained(str(path)).state_dict()
    if path.is_dir() and (path / "unet" / "config.json").is_file():
        return UNet2DConditionModel.from_pretrained(str(path), subfolder="unet").state_dict()
    if source_kind(source) == "hub" and hub_file(source, "model_index.json") is None \
            and hub_file(source, "config.json") is not None:
        return UNet2DConditionModel.from_pretrained(source).state_dict()
    return load_pipeline(source).unet.state_dict()


def base_and_distilled(base: str, distilled: str) -> tuple[dict, dict]:
    """(W_base, W_distilled); an LCM-LoRA is fused into the base first (D = B + LoRA)."""
    lora = lora_weights(distilled)
    if lora is None:
        source_kind(distilled)  # missing path -> clear error before loading the base
        return unet_state(base), unet_state(distilled)
    pipe = load_pipeline(base)
    w_base = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    try:
        pipe.load_lora_weights(lora)  # a file path: diffusers needs no hub lookup (offline it refuses repo ids)
    except (ValueError, KeyError, OSError) as err:
        raise UserInputError(f"--distilled {distilled}: not LoRA weights for this base ({err})") from None
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    return w_base, pipe.unet.state_dict()


def task_arithmetic(w_edit: dict, w_base: dict, w_distilled: dict, weight: float) -> dict:
    """W' = W_edit + weight (W_distilled - W_base) per key, conv_in.* kept from the editor."""
    out = {}
    for key, value in w_edit.items():
        if key.startswith(SKIPPED_PREFIX):
            out[key] = value.clone()
            continue
        if key not in w_base or key not in w_distilled:
            raise UserInputError(f"UNet weight {key!r} missing from the base or the distilled model: "
                                 "they must share the editor's architecture")
        if not (value.shape == w_base[key].shape == w_distilled[key].shape):
            raise UserInputError(f"UNet weight {key!r} has shapes {tuple(value.shape)} / {tuple(w_base[key].shape)} "
                                 f"/ {tuple(w_distilled[key].shape)} (editor / base / distilled)")
        delta = w_distilled[key].float() - w_base[key].float()
        out[key] = (value.float() + weight * delta).to(value.dtype)
    extra = set(w_distilled) - set(w_edit)
    if extra:
        logger.warning("%d weights of the distilled model have no place in the editor (ignored), e.g. %s",
                       len(extra), sorted(extra)[0])
    return out


def adapt(editor: str, base: str, distilled: str, weight: float, output: str) -> Path:
    """Write the adapted editor to `output` (a new pipeline folder with an LCM scheduler)."""
    out = Path(output)
    if out.exists() and any(out.iterdir()):
        raise UserInputError(f"--output {output}: folder exists and is not empty")
    edit_model = load_editor(editor, device="cpu", dtype=torch.float32)  # weight arithmetic in fp32, on the CPU
    w_base, w_distilled = base_and_distilled(base, distilled)
    edit_model.unet.load_state_dict(task_arithmetic(edit_model.unet.state_dict(), w_base, w_distilled, weight))
    edit_model.save(out, scheduler_name=FEWSTEP_DEFAULTS["scheduler"])
    save_json({**{k: v for k, v in edit_model.defaults.items() if k not in FEWSTEP_DEFAULTS}, **FEWSTEP_DEFAULTS},
              out / DEFAULTS_FILE)
    return out


@dataclass
class FewStepConfig:
    editor: str = option(help="InstructPix2Pix editor fine-tuned from --base")
    base: str = option(help="the model the editor was fine-tuned from")
    distilled: str = option(help="distilled model of the same base (folder, hub id, single file), or LCM-LoRA "
                                 "weights (a .safetensors file or a LoRA repo id)")
    output: str = option(help="new pipeline folder")
    weight: float = option(1.0, "w in W_edit + w (W_distilled - W_base); 0 keeps the editor, 1 adds the "
                                 "whole distilled change", ge=0, le=4)

    def __post_init__(self) -> None:
        check_fields(self)  # a finite --weight


@cli_errors
def cli(argv: list[str] | None = None) -> Path:
    c = parse_config(FewStepConfig, argv, prog="python -m edit_diffusion.fewstep", description=__doc__.split("\n\n")[0])
    out = adapt(c.editor, c.base, c.distilled, c.weight, c.output)
    print(f"wrote {out} (edit with --scheduler lcm --steps 4)")
    return out


if __name__ == "__main__":
    cli()
