"""Modern instruction editors behind `--editor`: SDXL InstructPix2Pix, FLUX.1 Kontext and Qwen-Image-Edit
(and its 2509 release). Each is the stock diffusers pipeline named by the repo's `model_index.json`
`_class_name`; a small adapter (`Family`) maps our EditSettings onto that pipeline's __call__ and keeps the
input's aspect ratio and size (the pipelines' own defaults square or re-snap the image). SD 1.5
InstructPix2Pix keeps its own sampler (editor.Editor)."""
from __future__ import annotations

import json
import secrets
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from common.errors import UserInputError

from .memory import check_weights_fit

KONTEXT_LICENCE = ("FLUX.1 [dev] Non-Commercial License (black-forest-labs/FLUX.1-Kontext-dev): outputs may be used "
                   "commercially, the weights may not")


def _sdxl_call(s, width: int, height: int) -> dict:
    # both guidance scales of InstructPix2Pix eq. 3; SDXL's size conditioning says "this size, uncropped"
    return dict(guidance_scale=s.cfg_text, image_guidance_scale=s.cfg_image, height=height, width=width,
                original_size=(height, width), target_size=(height, width))


def _kontext_call(s, width: int, height: int) -> dict:
    # guidance_scale feeds [dev]'s distilled guidance embedding (no unconditional pass). max_area = our area and
    # _auto_resize off: otherwise the output is ~1024x1024 and the input snaps to PREFERRED_KONTEXT_RESOLUTIONS
    return dict(guidance_scale=s.cfg_text, height=height, width=width, max_area=width * height, _auto_resize=False)


def _qwen_call(s, width: int, height: int) -> dict:
    # true classifier-free guidance needs a negative prompt; the model card's is a blank " "
    return dict(true_cfg_scale=s.cfg_text, negative_prompt=" ", height=height, width=width)


@dataclass(frozen=True)
class Family:
    """How one pipeline class is driven: its recommended settings and what our flags mean for it."""
    label: str
    steps: int
    cfg_text: float
    cfg_text_is: str                      # what --cfg-text sets, for messages and the README
    cfg_image: float | None               # None: the model has no image guidance, --cfg-image is refused
    call: Callable[..., dict]             # (resolved settings, width, height) -> __call__ kwargs
    # the web app's Randomize range for --cfg-text: around the model card's default (InstructPix2Pix's 6-9 around
    # 7.5 would be far off for these: 2-4x their recommended guidance)
    cfg_text_random: tuple[float, float]
    own_schedulers: bool = False          # our --scheduler choices apply (epsilon models, not flow matching)
    bf16: bool = False                    # `--dtype auto` on CUDA is bf16 (fp16 overflows in these transformers)
    licence: str | None = None            # named once when loaded
    training: str | None = None           # family_training recipe name


FAMILIES = {
    "StableDiffusionXLInstructPix2PixPipeline": Family(
        "SDXL InstructPix2Pix", 30, 3.0, "guidance_scale (text)", 1.5, _sdxl_call, cfg_text_random=(2.5, 4.0),
        own_schedulers=True, training="sdxl_ip2p"),
    "FluxKontextPipeline": Family(
        "FLUX.1 Kontext", 28, 2.5, "guidance_scale (distilled guidance embedding)", None, _kontext_call,
        cfg_text_random=(2.0, 3.5), bf16=True, licence=KONTEXT_LICENCE, training="kontext"),
    "QwenImageEditPipeline": Family(
        "Qwen-Image-Edit", 50, 4.0, "true_cfg_scale (with a blank negative prompt)", None, _qwen_call,
        cfg_text_random=(3.0, 5.0), bf16=True, training="qwen"),
    "QwenImageEditPlusPipeline": Family(
        "Qwen-Image-Edit-2509", 40, 4.0, "true_cfg_scale (with a blank negative prompt)", None, _qwen_call,
        cfg_text_random=(3.0, 5.0), bf16=True, training="qwen"),
}
_licences_named: set[str] = set()


def read_model_index(model: str, kind: str, revision: str | None = None, cache_dir: str | None = None) -> dict | None:
    """The repo's model_index.json (folder, or hub cache / download); None when there is none."""
    if kind == "folder":
        path = Path(model) / "model_index.json"
    elif kind == "hub":
        from huggingface_hub import hf_hub_download
        try:
            path = Path(hf_hub_download(model, "model_index.json", revision=revision, cache_dir=cache_dir))
        except Exception:  # noqa: BLE001 - not cached / no such repo: the SD loader reports it in one line
            return None
    else:
        return None
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(f"{path}: not valid JSON ({err})") from None


def family_of(index: dict | None) -> str | None:
    """The registry key of a model_index.json, or None (SD 1.5 and anything else: the Editor path)."""
    name = (index or {}).get("_class_name")
    return name if name in FAMILIES else None


def unused_settings(family: Family) -> dict[str, str]:
    """EditSettings field -> why it means nothing to this family (the CLIs refuse it, the web app hides it)."""
    unused = {}
    if family.cfg_image is None:
        unused["cfg_image"] = f"{family.label} has no image guidance (the input image is part of its context)"
    if not family.own_schedulers:
        unused["scheduler"] = f"{family.label} is a flow-matching model with its own FlowMatchEulerDiscreteScheduler"
    return unused


def refuse_unused_flags(family: Family, settings) -> None:
    """One line for an edit flag that means nothing to this family (never a silent ignore)."""
    for name, why in unused_settings(family).items():
        if getattr(settings, name) is not None:
            raise UserInputError(f"--{name.replace('_', '-')}: {why}; leave it out")
    if settings.batch_size is not None:
        raise UserInputError(f"--batch-size sets the SD 1.5 sampler's rows; {family.label} runs one variant per "
                             "pipeline call; leave it out")


def family_name(model: str, kind: str) -> str | None:
    """The FAMILIES key of an editor: from model_index.json, or from a single file's keys (SDXL-IP2P, Kontext)."""
    if kind == "file":
        from .single_file import file_family
        return file_family(Path(model))
    return family_of(read_model_index(model, kind))


def preflight(model: str | None, settings) -> None:
    """Before any loading: refuse edit flags the editor named by `model` cannot use (reads model_index.json or a
    single file's header)."""
    from .loading import source_kind
    if model is None or settings is None:
        return
    try:
        kind = source_kind(model)
    except UserInputError:
        return  # the loader reports a bad path in its own words
    name = family_name(model, kind)
    if name is not None:
        refuse_unused_flags(FAMILIES[name], settings)


@contextmanager
def _no_progress_bars():
    """Loading bars of diffusers and transformers would bury the one result line (restored afterwards)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging
    states = [(m, m.is_progress_bar_enabled()) for m in (diffusers_logging, transformers_logging)]
    for module, _ in states:
        module.disable_progress_bar()
    try:
        yield
    finally:
        for module, enabled in states:
            if enabled:
                module.enable_progress_bar()


@dataclass(eq=False)
class FamilyEditor:
    """A loaded modern editor: `edit` has Editor's signature (variants at the input's size + resolved settings)."""
    pipe: object
    family: Family
    defaults: dict
    name_or_path: str | None = None

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    @property
    def dtype(self) -> torch.dtype:
        return self.pipe.dtype

    @property
    def native_size(self) -> int:
        """The side the pipeline defaults to (1024 Kontext / Qwen, 768 SDXL-IP2P), read from its config."""
        return self.pipe.default_sample_size * self.pipe.vae_scale_factor

    @property
    def size_multiple(self) -> int:
        """Latents are packed in 2x2 patches (Flux / Qwen) or pass the UNet's downsamplings (SDXL)."""
        if hasattr(self.pipe, "unet"):
            return self.pipe.vae_scale_factor * 2 ** (len(self.pipe.unet.config.block_out_channels) - 1)
        return self.pipe.vae_scale_factor * 2

    def resolve_settings(self, settings) -> object:
        """Refuse flags this family has no meaning for; fill None from edit_defaults.json, then the family's."""
        f = self.family
        refuse_unused_flags(f, settings)
        defaults = {"steps": f.steps, "cfg_text": f.cfg_text, "cfg_image": f.cfg_image,
                    "resolution": self.native_size, **self.defaults}
        if f.cfg_image is None:
            defaults["cfg_image"] = None
        filled = {k: getattr(settings, k) if getattr(settings, k) is not None else defaults.get(k)
                  for k in ("steps", "cfg_text", "cfg_image", "resolution")}
        seed = settings.seed
        if seed is None:
            seed = secrets.randbelow(2**31)
            print(f"seed: {seed}")
        return replace(settings, seed=seed, **filled)

    def pipeline_for(self, scheduler_name: str | None):
        """The pipeline, or one sharing its modules with a fresh scheduler of our choice (SDXL-IP2P only)."""
        if scheduler_name is None:
            return self.pipe
        from .editor import SCHEDULERS
        return type(self.pipe).from_pipe(self.pipe, scheduler=SCHEDULERS[scheduler_name].from_config(
            self.pipe.scheduler.config))

    def edit(self, image: Image.Image, instruction: str, settings) -> tuple[list[Image.Image], object]:
        """Edit `image` by `instruction`: variants (seed, seed + 1, ...) at the input's size, and the settings."""
        from .editor import working_size
        if not isinstance(instruction, str) or not instruction.strip():
            raise UserInputError('the edit instruction is empty; write what to change, e.g. "make it black and white"')
        s = self.resolve_settings(settings)
        image = image.convert("RGB")
        # keep the aspect ratio; the long side at --resolution (default: the model's native size), both sides
        # on the model's multiple; the result is resized back to the input's size
        width, height = working_size(*image.size, s.resolution, self.size_multiple, s.resolution)
        work = image if image.size == (width, height) else image.resize((width, height), Image.LANCZOS)
        pipe = self.pipeline_for(s.scheduler)
        outputs = []
        for i in range(s.num_variants):
            generator = torch.Generator("cpu").manual_seed(s.seed + i)
            with torch.no_grad():
                out = pipe(prompt=instruction, image=work, num_inference_steps=s.steps, generator=generator,
                           output_type="np", **self.family.call(s, width, height)).images[0]
            out = np.nan_to_num(out, nan=0.0).clip(0, 1)
            img = Image.fromarray((out * 255 + 0.5).astype(np.uint8))
            outputs.append(img if img.size == image.size else img.resize(image.size, Image.LANCZOS))
        return outputs, s


def load_family_editor(model: str, kind: str, class_name: str, device: torch.device, dtype: str | torch.dtype | None,
                       cpu_offload: bool = False, lora: str | None = None, compile_model: bool = False,
                       channels_last: bool = False, hub=None, original_config: str | None = None) -> FamilyEditor:
    """Load the stock pipeline of `class_name` after checking its weights fit; optionally with a LoRA, the
    denoiser torch.compile'd, the SDXL UNet in channels_last. A single file (kind 'file') gives the denoiser,
    the rest comes from `original_config` or the family's reference repo (single_file.py)."""
    from common.devices import resolve_dtype

    from .editor import read_edit_defaults
    from .loading import _quiet_diffusers

    family = FAMILIES[class_name]
    if cpu_offload and device.type == "cpu":
        raise UserInputError("--cpu-offload moves each model to a GPU while it runs; give --device cuda (on the CPU "
                             "the weights are in RAM already)")
    if channels_last and family.training != "sdxl_ip2p":
        raise UserInputError(f"--channels-last applies to convolutional UNets; {family.label} is a transformer")
    if (dtype is None or dtype == "auto") and family.bf16 and device.type == "cuda":
        dtype = torch.bfloat16
    torch_dtype = resolve_dtype(dtype, device) if not isinstance(dtype, torch.dtype) else dtype
    if kind == "file":
        from .single_file import file_weights_params, pipeline_from_file
        check_weights_fit(model, kind, family.label, torch_dtype, device, cpu_offload,
                          file_weights_params(Path(model), class_name, original_config))
        with _quiet_diffusers(), _no_progress_bars():
            pipe = pipeline_from_file(Path(model), class_name, torch_dtype, original_config)
    else:
        check_weights_fit(model, kind, family.label, torch_dtype, device, cpu_offload)
        with _quiet_diffusers(), _no_progress_bars():
            pipe = _from_pretrained(model, kind, class_name, torch_dtype, hub)
    if family.licence and family.licence not in _licences_named:
        _licences_named.add(family.licence)
        print(f"note: {family.licence}")
    if lora is not None:
        load_lora(pipe, lora)
    pipe.set_progress_bar_config(disable=True)
    if cpu_offload:
        pipe.enable_model_cpu_offload(device=device)  # each model on `device` only while it runs
    else:
        pipe.to(device)
    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    if channels_last:
        denoiser.to(memory_format=torch.channels_last)
    if compile_model:
        denoiser.compile()  # in place: same module and state-dict keys
    return FamilyEditor(pipe=pipe, family=family, defaults=read_edit_defaults(model if kind == "folder" else None),
                        name_or_path=model)


def _from_pretrained(model: str, kind: str, class_name: str, dtype: torch.dtype, hub=None):
    """The stock pipeline from a hub id (cache first) or a local diffusers folder, errors in one line."""
    import diffusers

    from .loading import _hub_error, _one_line
    try:
        return getattr(diffusers, class_name).from_pretrained(model, dtype=dtype, local_files_only=kind == "folder",
                                                              **(hub.kwargs() if hub is not None else {}))
    except Exception as err:  # noqa: BLE001 - hub client / loading errors come in many types
        if kind == "folder":
            raise UserInputError(f"{model}: cannot load the {FAMILIES[class_name].label} folder "
                                 f"({_one_line(err)})") from None
        raise _hub_error(model, err, hub) from None


def load_lora(pipe, lora: str) -> None:
    """A LoRA file or folder (our trainers' `pytorch_lora_weights.safetensors`, or any the pipeline reads),
    fused into the weights."""
    from .loading import _one_line
    path = Path(lora)
    if not path.exists():
        raise UserInputError(f"--lora {lora}: no such file or folder")
    try:
        if path.is_dir():
            pipe.load_lora_weights(str(path))
        else:
            pipe.load_lora_weights(str(path.parent), weight_name=path.name)
    except (ValueError, OSError, KeyError, RuntimeError) as err:
        raise UserInputError(f"--lora {lora}: not a LoRA for this {type(pipe).__name__} ({_one_line(err)})") from None
    pipe.fuse_lora()
    pipe.unload_lora_weights()
