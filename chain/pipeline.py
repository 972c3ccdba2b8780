"""Run the chain on one image: optional stage-1 stylization, then optional stage-2 edit."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from common.errors import UserInputError
from common.devices import resolve_device
from edit_diffusion.editor import EditSettings, Editor, load_editor
from stylize_gan.checkpoint import load_generator
from stylize_gan.inference import stylize_pil

from .defaults import DEFAULT_EDITOR, DEFAULT_STYLE, STYLES


@dataclass
class ChainModels:
    """Loaded models; either may be None when its stage is skipped."""
    generator: torch.nn.Module | None
    editor: Editor | None


@dataclass
class ChainResult:
    stylized: Image.Image           # stage-1 output (the input itself when stylization is skipped)
    edited: list[Image.Image] = field(default_factory=list)  # stage-2 variants (empty when editing is skipped)
    settings: EditSettings | None = None  # resolved edit settings (seed used, steps, guidance)


def resolve_generator_path(gan_checkpoint: str | None, style: str | None) -> Path:
    """An explicit checkpoint wins; otherwise the bundled file of `style`."""
    if gan_checkpoint:
        return Path(gan_checkpoint)
    name = style or DEFAULT_STYLE
    if name not in STYLES:
        raise UserInputError(f"unknown style {name!r}; bundled styles: {', '.join(sorted(STYLES))}")
    return STYLES[name]


def load_models(gan_checkpoint: str | None = None, style: str | None = None, editor: str | None = None,
                skip_stylize: bool = False, skip_edit: bool = False, device: str = "auto", dtype: str = "auto",
                compile_unet: bool = False, channels_last: bool = False, cpu_offload: bool = False,
                lora: str | None = None) -> ChainModels:
    """Load what the chain needs (nothing for a skipped stage); `dtype`, `compile_unet`, `channels_last`,
    `cpu_offload` and `lora` apply to the editor (the stage-1 generator stays in float32)."""
    device = resolve_device(device)
    generator = None if skip_stylize else load_generator(resolve_generator_path(gan_checkpoint, style), device=device)
    edit_model = None if skip_edit else load_editor(str(editor or DEFAULT_EDITOR), device, dtype,
                                                    compile_unet=compile_unet, channels_last=channels_last,
                                                    cpu_offload=cpu_offload, lora=lora)
    return ChainModels(generator=generator, editor=edit_model)


def run_chain(models: ChainModels, image: Image.Image, instruction: str | None,
              settings: EditSettings | None = None) -> ChainResult:
    """Stylize then edit one RGB image; outputs keep the input's size."""
    stylized = stylize_pil(models.generator, image) if models.generator is not None else image
    if models.editor is None:
        return ChainResult(stylized=stylized)
    edited, resolved = models.editor.edit(stylized, instruction, settings or EditSettings())
    return ChainResult(stylized=stylized, edited=edited, settings=resolved)
