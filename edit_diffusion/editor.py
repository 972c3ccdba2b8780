"""Editing API: load an InstructPix2Pix editor from any source and edit one image with an instruction,
scheduler choice, dual guidance, seeds, resolution handling and several variants per call."""
from __future__ import annotations

import json
import math
import secrets
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       LCMScheduler, StableDiffusionInstructPix2PixPipeline)
from PIL import Image

from common.errors import UserInputError

from .loading import load_pipeline
from .surgery import EDIT_IN_CHANNELS

SCHEDULERS = {"euler_a": EulerAncestralDiscreteScheduler, "ddim": DDIMScheduler,
              "dpmpp": DPMSolverMultistepScheduler, "lcm": LCMScheduler}
# Schedulers that cannot step a model of a given prediction type (diffusers raises mid-run otherwise).
UNSUPPORTED = {"sample": ("euler_a",)}
GLOBAL_DEFAULTS = {"steps": 20, "cfg_text": 7.5, "cfg_image": 1.5, "scheduler": "euler_a"}
DEFAULTS_FILE = "edit_defaults.json"
_truncation_noticed: set[int] = set()


@dataclass
class EditSettings:
    steps: int | None = None          # denoising steps
    cfg_text: float | None = None     # s_T, text guidance (InstructPix2Pix eq. 3)
    cfg_image: float | None = None    # s_I, image guidance; must be >= 1
    seed: int | None = None           # None: drawn at random and printed
    scheduler: str | None = None      # a SCHEDULERS key
    resolution: int = 512             # cap of the long side (px) the model runs at
    num_variants: int = 1

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise UserInputError(f"--steps must be >= 1, got {self.steps}")
        if self.cfg_image is not None and self.cfg_image < 1.0:
            raise UserInputError(
                f"--cfg-image {self.cfg_image} is below 1: the stock InstructPix2Pix pipeline then silently turns "
                "off ALL guidance (text included); use 1.0 for no extra image guidance")
        if self.cfg_text is not None and (self.cfg_text < 0 or not math.isfinite(self.cfg_text)):
            raise UserInputError(f"--cfg-text must be a finite number >= 0, got {self.cfg_text}")
        if self.scheduler is not None and self.scheduler not in SCHEDULERS:
            raise UserInputError(f"--scheduler {self.scheduler!r} unknown; choose from {', '.join(SCHEDULERS)}")
        if self.resolution < 1:
            raise UserInputError(f"--resolution must be positive, got {self.resolution}")
        if self.num_variants < 1:
            raise UserInputError(f"--variants must be >= 1, got {self.num_variants}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise UserInputError(f"--seed must be in [0, 2^63), got {self.seed}")


def dual_guidance(pred_text_img: torch.Tensor, pred_img: torch.Tensor, pred_uncond: torch.Tensor,
                  cfg_text: float, cfg_image: float) -> torch.Tensor:
    """InstructPix2Pix eq. 3: e = e(0,0) + s_I (e(c_I,0) - e(0,0)) + s_T (e(c_I,c_T) - e(c_I,0))."""
    return pred_uncond + cfg_text * (pred_text_img - pred_img) + cfg_image * (pred_img - pred_uncond)


def read_edit_defaults(folder: str | Path | None) -> dict:
    """The model folder's optional edit_defaults.json (unknown keys ignored)."""
    if folder is None or not (Path(folder) / DEFAULTS_FILE).is_file():
        return {}
    try:
        data = json.loads((Path(folder) / DEFAULTS_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(f"{Path(folder) / DEFAULTS_FILE}: not valid JSON ({err})") from None
    return {k: data[k] for k in GLOBAL_DEFAULTS if data.get(k) is not None}


def load_editor(model: str, device: str = "cpu", dtype=None,
                original_config: str | None = None) -> StableDiffusionInstructPix2PixPipeline:
    """An 8-channel InstructPix2Pix pipeline on `device`; text-to-image models are refused."""
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError(f"--device {device}: CUDA is not available on this machine")
    pipe = load_pipeline(model, original_config, dtype)
    channels = pipe.unet.config.in_channels
    if channels != EDIT_IN_CHANNELS:
        raise UserInputError(f"{model}: its UNet has {channels} input channels, so it is a text-to-image model, "
                             f"not an InstructPix2Pix editor ({EDIT_IN_CHANNELS} channels); fine-tune it with "
                             "train_edit.py first")
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    pipe.edit_defaults = read_edit_defaults(model if Path(model).is_dir() else None)
    return pipe


def resolve_settings(pipe, settings: EditSettings) -> EditSettings:
    """Fill None fields from the model's edit_defaults.json, else the global defaults; draw a seed."""
    defaults = {**GLOBAL_DEFAULTS, **(getattr(pipe, "edit_defaults", None) or read_edit_defaults(pipe.name_or_path))}
    filled = {k: getattr(settings, k) if getattr(settings, k) is not None else defaults[k] for k in GLOBAL_DEFAULTS}
    seed = settings.seed
    if seed is None:
        seed = secrets.randbelow(2**31)
        print(f"seed: {seed}")
    resolved = replace(settings, seed=seed, **filled)
    prediction = pipe.scheduler.config.get("prediction_type", "epsilon")
    if resolved.scheduler in UNSUPPORTED.get(prediction, ()):
        ok = [n for n in SCHEDULERS if n not in UNSUPPORTED[prediction]]
        raise UserInputError(f"--scheduler {resolved.scheduler} cannot run this model (it predicts "
                             f"'{prediction}'); use one of {', '.join(ok)}")
    return resolved


def size_multiple(pipe) -> int:
    """Pixel multiple the model needs: VAE factor x the UNet's own downsampling."""
    unet_down = 2 ** (len(pipe.unet.config.block_out_channels) - 1)
    return pipe.vae_scale_factor * unet_down


def working_size(width: int, height: int, cap: int, multiple: int) -> tuple[int, int]:
    """Keep the aspect ratio, cap the long side at `cap`, round each side to `multiple` (at least one)."""
    scale = min(1.0, cap / max(width, height))
    return tuple(max(multiple, int(round(side * scale / multiple)) * multiple) for side in (width, height))


def _notice_truncation(pipe, instruction: str) -> None:
    limit = pipe.tokenizer.model_max_length
    n = len(pipe.tokenizer(instruction, truncation=False).input_ids)
    if n > limit and id(pipe) not in _truncation_noticed:
        _truncation_noticed.add(id(pipe))
        print(f"note: the instruction has {n} tokens; only the first {limit} are used")


def _run(pipe, image: Image.Image, instruction: str, s: EditSettings) -> np.ndarray:
    pipe.scheduler = SCHEDULERS[s.scheduler].from_config(pipe.scheduler.config)
    generators = [torch.Generator("cpu").manual_seed(s.seed + i) for i in range(s.num_variants)]
    # one (prompt, image) pair per variant: the batch the pipeline expects, each variant its own seed
    out = pipe([instruction] * s.num_variants, image=[image] * s.num_variants, num_inference_steps=s.steps,
               guidance_scale=s.cfg_text, image_guidance_scale=s.cfg_image, generator=generators, output_type="np")
    return out.images  # (N, H, W, 3) in [0, 1]


def edit_image(pipe, image: Image.Image, instruction: str, settings: EditSettings
               ) -> tuple[list[Image.Image], EditSettings]:
    """Edit `image` by `instruction`: variants at the input's size, plus the resolved settings."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise UserInputError('the edit instruction is empty; write what to change, e.g. "make it black and white"')
    s = resolve_settings(pipe, settings)
    _notice_truncation(pipe, instruction)
    image = image.convert("RGB")
    size = working_size(*image.size, s.resolution, size_multiple(pipe))
    work = image if image.size == size else image.resize(size, Image.LANCZOS)
    arrays = _run(pipe, work, instruction, s)
    if not np.isfinite(arrays).all() and pipe.unet.dtype != torch.float32:
        # fp16 overflow (mostly in the VAE decoder): recompute this edit in float32
        dtype = pipe.unet.dtype
        pipe.to(torch.float32)
        try:
            arrays = _run(pipe, work, instruction, s)
        finally:
            pipe.to(dtype)
    arrays = np.nan_to_num(arrays, nan=0.0).clip(0, 1)
    outputs = [Image.fromarray((a * 255 + 0.5).astype(np.uint8)) for a in arrays]
    outputs = [o if o.size == image.size else o.resize(image.size, Image.LANCZOS) for o in outputs]
    return outputs, s


def variant_paths(output: str | Path, count: int) -> list[Path]:
    """Where `count` variants of one edit are written: `out.png`, or `out-1.png`, `out-2.png`, ..."""
    out = Path(output)
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i + 1}{out.suffix}") for i in range(count)]
