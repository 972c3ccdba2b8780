"""Editing API: load an InstructPix2Pix editor from any source and edit one image with an instruction,
scheduler choice, dual guidance, seeds, resolution handling and several variants per call."""
from __future__ import annotations

import copy
import json
import math
import secrets
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       LCMScheduler, StableDiffusionInstructPix2PixPipeline)
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

from common.devices import resolve_device, resolve_dtype
from common.cli import check_fields, option
from common.errors import UserInputError, one_line

from . import engine
from .engine import dual_guidance  # noqa: F401 - re-exported: eq. 3 lives with the sampler now
from .families import FamilyEditor, family_name, load_family_editor, load_lora
from .loading import load_pipeline, source_kind
from .scope import InstructionScope, load_scope
from .surgery import EDIT_IN_CHANNELS

SCHEDULERS = {"euler_a": EulerAncestralDiscreteScheduler, "ddim": DDIMScheduler,
              "dpmpp": DPMSolverMultistepScheduler, "lcm": LCMScheduler}
# Schedulers that cannot step a model of a given prediction type (diffusers raises mid-run otherwise).
UNSUPPORTED = {"sample": ("euler_a",)}
GLOBAL_DEFAULTS = {"steps": 20, "cfg_text": 7.5, "cfg_image": 1.5, "scheduler": "euler_a", "resolution": 512}
DEFAULTS_FILE = "edit_defaults.json"
MAX_VARIANTS = 64  # one call's variants run one after another; more is a batch job, not an edit
_truncation_noticed: set[int] = set()
_notice_lock = threading.Lock()


@dataclass
class EditSettings:
    """The edit flags of infer.py and `python -m edit_diffusion`, and the web app's settings (one source)."""
    steps: int | None = option(None, "denoising steps (default: the editor's edit_defaults.json, else 20)", ge=1)
    # s_T and s_I of InstructPix2Pix eq. 3
    cfg_text: float | None = option(None, "text guidance (default: the editor's, else 7.5)", ge=0)
    cfg_image: float | None = option(None, "image guidance, >= 1 (default: the editor's, else 1.5)", ge=1)
    seed: int | None = option(None, "random seed; drawn at random and printed when omitted", ge=0, lt=2**63)
    scheduler: str | None = option(None, "denoising scheduler (default: the editor's, else euler_a)",
                                   choices=tuple(SCHEDULERS))
    resolution: int | None = option(None, "cap on the long side (px) the model runs at; memory grows with its square "
                                          "(default: the editor's: 512 for SD 1.5, the native size of "
                                          "SDXL-IP2P / Kontext / Qwen)", ge=1, le=4096)
    num_variants: int = option(1, "number of edited variants (files get -1, -2, ... suffixes)", ge=1,
                               le=MAX_VARIANTS, flag="--variants")
    edit_out_of_scope: bool = option(False, "run the model even when the editor's instruction index says it was not "
                                            "trained for this kind of edit (default: leave the image unchanged)")
    batch_size: int | None = option(None, "UNet rows per call (default: from the device's free memory; CPU: 1 "
                                          "for large latents, else one variant's branches)", ge=1, le=3 * MAX_VARIANTS)

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
        if self.resolution is not None and self.resolution < 1:
            raise UserInputError(f"--resolution must be positive, got {self.resolution}")
        if self.num_variants < 1:
            raise UserInputError(f"--variants must be >= 1, got {self.num_variants}")
        if self.num_variants > MAX_VARIANTS:
            raise UserInputError(f"--variants {self.num_variants} is above {MAX_VARIANTS}: each variant is a whole "
                                 "denoising run; run several edits with different --seed instead")
        if self.batch_size is not None and self.batch_size < 1:
            raise UserInputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise UserInputError(f"--seed must be in [0, 2^63), got {self.seed}")
        check_fields(self)  # NaN/inf and the metadata bounds (the messages above say more)


def read_edit_defaults(folder: str | Path | None) -> dict:
    """The model folder's optional edit_defaults.json (unknown keys ignored)."""
    if folder is None or not (Path(folder) / DEFAULTS_FILE).is_file():
        return {}
    try:
        data = json.loads((Path(folder) / DEFAULTS_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(f"{Path(folder) / DEFAULTS_FILE}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise UserInputError(f"{Path(folder) / DEFAULTS_FILE}: expected a JSON object, got {type(data).__name__}")
    values = {k: data[k] for k in GLOBAL_DEFAULTS if data.get(k) is not None}
    try:  # the flags' own ranges (json reads NaN and Infinity; they and steps 0 would reach the sampler)
        EditSettings(**values)
    except ValueError as err:
        raise UserInputError(f"{Path(folder) / DEFAULTS_FILE}: {one_line(err)}") from None
    return values


@dataclass(eq=False)
class Editor:
    """Loaded components, their recommended settings, device and dtype. `edit` keeps no per-call state on
    them (a fresh scheduler and generators per call; modules only run forward), so edits may run at once."""
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object            # the saved scheduler: read for its config, never stepped
    defaults: dict               # the model folder's edit_defaults.json (may be empty)
    name_or_path: str | None = None
    scope: InstructionScope | None = None  # the folder's instruction index, if it ships one (scope.py)

    def __post_init__(self) -> None:
        self.processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)  # stateless pre/post-processing

    @classmethod
    def from_pipeline(cls, pipe, defaults: dict | None = None) -> Editor:
        """Wrap a StableDiffusionInstructPix2PixPipeline's components (shared, not copied)."""
        if defaults is None:
            defaults = getattr(pipe, "edit_defaults", None) or read_edit_defaults(pipe.name_or_path or None)
        return cls(unet=pipe.unet, vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                   scheduler=pipe.scheduler, defaults=defaults, name_or_path=pipe.name_or_path or None)

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)  # as the stock pipelines compute it

    @property
    def native_size(self) -> int:
        """The side (px) the model was built for: unet.config.sample_size x VAE factor (512 for SD 1.5)."""
        return self.unet.config.sample_size * self.vae_scale_factor

    @property
    def size_multiple(self) -> int:
        """Pixel multiple the model needs: VAE factor x the UNet's own downsampling."""
        return self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    def new_scheduler(self, name: str):
        """A fresh SCHEDULERS[name] on this model's noise schedule (one per denoising loop)."""
        return SCHEDULERS[name].from_config(self.scheduler.config)

    def pipeline(self, scheduler_name: str | None = None) -> StableDiffusionInstructPix2PixPipeline:
        """The stock pipeline over the same modules (for saving, LoRA loading, comparisons)."""
        scheduler = self.new_scheduler(scheduler_name) if scheduler_name else self.scheduler
        pipe = StableDiffusionInstructPix2PixPipeline(
            vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, unet=self.unet,
            scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def save(self, folder: str | Path, scheduler_name: str | None = None) -> Path:
        """A stock-loadable pipeline folder (safetensors)."""
        self.pipeline(scheduler_name).save_pretrained(str(folder), safe_serialization=True)
        return Path(folder)

    def float32_copy(self) -> Editor:
        """Float32 copies of the modules (the fp16 overflow fallback; the shared modules stay untouched)."""
        parts = {k: copy.deepcopy(getattr(self, k)).to(torch.float32) for k in ("unet", "vae", "text_encoder")}
        return replace(self, **parts)

    def edit(self, image: Image.Image, instruction: str, settings: EditSettings
             ) -> tuple[list[Image.Image], EditSettings]:
        """Edit `image` by `instruction`: variants at the input's size, plus the resolved settings."""
        if not isinstance(instruction, str) or not instruction.strip():
            raise UserInputError('the edit instruction is empty; write what to change, e.g. "make it black and white"')
        s = resolve_settings(self, settings)
        _notice_truncation(self.tokenizer, instruction)
        notice = self.scope_notice(instruction, left_unchanged=not s.edit_out_of_scope)
        if notice:
            print(notice)
        image = image.convert("RGB")
        if notice and not s.edit_out_of_scope:
            # Issue 18: an edit the model cannot do leaves the picture alone, not smeared with a learned cast
            return [image.copy() for _ in range(s.num_variants)], s
        size = working_size(*image.size, s.resolution, self.size_multiple, self.native_size)
        work = image if image.size == size else image.resize(size, Image.LANCZOS)
        with _memory_hint(self.device, size, s):
            arrays = self.edit_arrays(work, instruction, s)
            if not np.isfinite(arrays).all() and self.dtype != torch.float32:
                # fp16 overflow (mostly in the VAE decoder): recompute this edit in float32
                arrays = self.float32_copy().edit_arrays(work, instruction, s)
        arrays = np.nan_to_num(arrays, nan=0.0).clip(0, 1)
        outputs = [Image.fromarray((a * 255 + 0.5).astype(np.uint8)) for a in arrays]
        outputs = [o if o.size == image.size else o.resize(image.size, Image.LANCZOS) for o in outputs]
        return outputs, s

    def scope_notice(self, instruction: str, left_unchanged: bool = True) -> str | None:
        """One line when the folder's instruction index says this editor does not do this kind of edit."""
        if self.scope is None or self.scope.is_known(self.tokenizer, instruction):
            return None
        return self.scope.notice(self.name_or_path, left_unchanged)

    @torch.no_grad()
    def edit_arrays(self, work: Image.Image, instruction: str, s: EditSettings) -> np.ndarray:
        """(N, H, W, 3) floats in [0, 1] at the working size, for resolved settings `s`; variant i always
        uses seed s.seed + i, so the chunking never changes an image."""
        cond = engine.conditioning(self.text_encoder, self.tokenizer, self.vae, self.processor, work, instruction,
                                   self.device, self.dtype)
        branches = len(engine.branches_for(s.cfg_text, s.cfg_image))
        rows = engine.plan_rows(self.unet, tuple(cond.image.shape[-2:]), self.dtype, self.device, branches,
                                s.num_variants, s.batch_size)
        arrays = []
        for chunk in engine.variant_chunks(s.num_variants, branches, rows):
            generators = [torch.Generator("cpu").manual_seed(s.seed + i) for i in chunk]
            latents = engine.denoise(self.unet, self.new_scheduler(s.scheduler), cond, generators, s.steps,
                                     s.cfg_text, s.cfg_image, rows)
            arrays.append(engine.decode(self.vae, self.processor, latents))
        return np.concatenate(arrays)


def as_editor(model) -> Editor:
    """An Editor, or one over the components of a stock pipeline (e.g. the trainer's validation pipeline)."""
    return model if isinstance(model, (Editor, FamilyEditor)) else Editor.from_pipeline(model)


def load_editor(model: str, device: str | torch.device = "auto", dtype: str | torch.dtype | None = "auto",
                original_config: str | None = None, compile_unet: bool = False,
                channels_last: bool = False, cpu_offload: bool = False, lora: str | None = None) -> Editor:
    """An 8-channel InstructPix2Pix editor on `device` in `dtype` (see common.devices for `auto`);
    text-to-image models are refused. Optionally the UNet in channels_last layout and torch.compile'd.
    SDXL-IP2P / Kontext / Qwen-Image-Edit repos (model_index.json) and SDXL-IP2P / Kontext single files (told from
    their keys; `original_config`: a local folder with the rest of the model) load as a families.FamilyEditor."""
    device = resolve_device(device)
    if lora is not None and not Path(lora).exists():  # before any weights load
        raise UserInputError(f"--lora {lora}: no such file or folder")
    kind = source_kind(model)
    family = family_name(model, kind)  # model_index.json, or a single file's keys
    if family is not None:
        return load_family_editor(model, kind, family, device, dtype, cpu_offload, lora, compile_unet, channels_last,
                                  original_config=original_config)
    if cpu_offload:
        raise UserInputError("--cpu-offload applies to the SDXL-IP2P, Kontext and Qwen editors; an SD 1.5 "
                             "InstructPix2Pix editor fits on the device as it is (use --dtype fp16 to halve it)")
    defaults = read_edit_defaults(model if Path(model).is_dir() else None)  # a bad file: refused before loading
    pipe = load_pipeline(model, original_config, resolve_dtype(dtype, device))
    if lora is not None:
        load_lora(pipe, lora)
    channels = pipe.unet.config.in_channels
    if channels != EDIT_IN_CHANNELS:
        raise UserInputError(f"{model}: its UNet has {channels} input channels, so it is a text-to-image model, "
                             f"not an InstructPix2Pix editor ({EDIT_IN_CHANNELS} channels); fine-tune it with "
                             "train_edit.py first")
    pipe.to(device)
    if channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    if compile_unet:
        pipe.unet.compile()  # in place: same module, same state-dict keys, so saving is unchanged
    editor = Editor.from_pipeline(pipe, defaults)
    editor.scope = load_scope(model if Path(model).is_dir() else None, editor.tokenizer)
    return editor


def resolve_settings(editor, settings: EditSettings) -> EditSettings:
    """Fill None fields from the model's edit_defaults.json, else the global defaults; draw a seed."""
    if isinstance(editor, FamilyEditor):  # its own defaults and refusals
        return editor.resolve_settings(settings)
    editor = as_editor(editor)
    defaults = {**GLOBAL_DEFAULTS, **editor.defaults}
    filled = {k: getattr(settings, k) if getattr(settings, k) is not None else defaults[k] for k in GLOBAL_DEFAULTS}
    seed = settings.seed
    if seed is None:
        seed = secrets.randbelow(2**31)
        print(f"seed: {seed}")
    resolved = replace(settings, seed=seed, **filled)
    prediction = editor.scheduler.config.get("prediction_type", "epsilon")
    if resolved.scheduler in UNSUPPORTED.get(prediction, ()):
        ok = [n for n in SCHEDULERS if n not in UNSUPPORTED[prediction]]
        raise UserInputError(f"--scheduler {resolved.scheduler} cannot run this model (it predicts "
                             f"'{prediction}'); use one of {', '.join(ok)}")
    return resolved


def size_multiple(editor) -> int:
    """Pixel multiple the model needs: VAE factor x the UNet's own downsampling."""
    return as_editor(editor).size_multiple


def working_size(width: int, height: int, cap: int, multiple: int, native: int = 0) -> tuple[int, int]:
    """Keep the aspect ratio; a long side below `native` is raised to it (SD 1.5 edits poorly below 512 px),
    then capped at `cap`; each side rounded to `multiple` (at least one)."""
    long_side = max(width, height)
    scale = min(max(1.0, native / long_side), cap / long_side)
    return tuple(max(multiple, int(round(side * scale / multiple)) * multiple) for side in (width, height))


def _notice_truncation(tokenizer, instruction: str) -> None:
    limit = tokenizer.model_max_length
    n = len(tokenizer(instruction, truncation=False).input_ids)
    with _notice_lock:
        if n > limit and id(tokenizer) not in _truncation_noticed:
            _truncation_noticed.add(id(tokenizer))
            print(f"note: the instruction has {n} tokens; only the first {limit} are used")


def _is_out_of_memory(err: BaseException) -> bool:
    text = str(err)
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text))


@contextmanager
def _memory_hint(device: torch.device, size: tuple[int, int], s: EditSettings):
    """An out-of-memory error becomes one line naming what to lower."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not _is_out_of_memory(err):
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        batch = f"--batch-size (now {s.batch_size})" if s.batch_size else "--batch-size (try 1)"
        raise UserInputError(f"out of {device.type} memory editing at {size[0]}x{size[1]} with {s.num_variants} "
                             f"variant(s): lower {batch}, --resolution (now {s.resolution}) or --variants, or use "
                             "--dtype fp16 on a GPU") from None


def edit_image(editor, image: Image.Image, instruction: str, settings: EditSettings
               ) -> tuple[list[Image.Image], EditSettings]:
    """Edit `image` by `instruction` with an Editor (or a stock pipeline's components)."""
    return as_editor(editor).edit(image, instruction, settings)


def variant_paths(output: str | Path, count: int) -> list[Path]:
    """Where `count` variants of one edit are written: `out.png`, or `out-1.png`, `out-2.png`, ..."""
    out = Path(output)
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i + 1}{out.suffix}") for i in range(count)]
