"""The functions behind the web app's controls: plain functions of the values the UI sends (ui.py only
wires them to components), so the unit tests call exactly what the browser triggers."""
from __future__ import annotations

import html
import random
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Callable

import gradio as gr
import torch
from PIL import Image, UnidentifiedImageError

from chain.pipeline import ChainModels, run_chain
from common.errors import UserInputError, one_line
from common.images import load_image
from edit_diffusion.editor import EditSettings

from .context import CFG_TEXT_RANGE, FIX, RANDOMIZE, AppContext, Controls, UploadLimits

# Randomize ranges of the original InstructPix2Pix app (edit_app.py): seed and image guidance (text guidance: per
# editor family, AppContext.cfg_text_range; InstructPix2Pix's is context.CFG_TEXT_RANGE).
SEED_RANGE = (0, 100_000)
CFG_IMAGE_RANGE = (1.2, 1.8)
# The original has no random steps; ours are drawn from [d * (1 - spread), d * (1 + spread)] around the
# editor's default d.
STEPS_SPREAD = 0.5
EMPTY_INSTRUCTION = ("the edit instruction is empty; write what to change, "
                     "e.g. \"make it black and white\"")
NO_IMAGE = "no image: upload one or pick an example first"

Progress = Callable[..., None]  # gr.Progress-like: progress(fraction, desc=...)
# The controls `edit` writes the used values back to, after (stylized, edited), in its return order.
RESOLVED_OUTPUTS = ("steps", "cfg_text", "cfg_image", "seed")


@dataclass
class EditRequest:
    """Everything the Edit button sends; ui.py wires one input per field, by name."""
    image: str | None          # path of the upload inside gradio's temporary folder
    style: str                 # a key of AppContext.generators
    instruction: str | None
    steps: float | None
    steps_mode: str            # FIX or RANDOMIZE
    cfg_text: float | None
    cfg_text_mode: str
    cfg_image: float | None
    cfg_image_mode: str
    seed: float | None
    seed_mode: str
    scheduler: str
    variants: float
    resolution: float


def ui_message(err: BaseException) -> str:
    """One line, HTML-escaped (gradio renders toast text as HTML and file names come from the user)."""
    return html.escape(one_line(err), quote=False)


def validate_upload(path: str | None, limits: UploadLimits) -> Image.Image:
    """Open an upload as RGB, or raise UserInputError saying why not (none, not an image, too large)."""
    if not path:
        raise UserInputError(NO_IMAGE)
    path = Path(path)
    name = path.name  # gradio keeps the user's file name; the temp folder means nothing to them
    try:
        size = path.stat().st_size
    except OSError:
        raise UserInputError(f"{name}: the upload is gone, please upload it again") from None
    if size > limits.max_bytes:
        raise UserInputError(f"{name} is too large: {size / 2**20:.3g} MB (limit {limits.max_megabytes:.3g} MB)")
    try:
        with Image.open(path) as img:  # reads the header only: the pixel check comes before decoding
            width, height = img.size
    except Image.DecompressionBombError:
        raise UserInputError(f"{name} is too large (limit {limits.max_pixels:,} pixels)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise UserInputError(f"{name} is not an image (expected PNG, JPEG, WebP, BMP or TIFF)") from None
    if width * height > limits.max_pixels:
        raise UserInputError(f"{name} is too large: {width}x{height} = {width * height:,} pixels "
                             f"(limit {limits.max_pixels:,})")
    try:
        return load_image(path)
    except UserInputError as err:  # e.g. truncated file: same message, without the temp path
        raise UserInputError(str(err).replace(str(path), name)) from None


def on_upload(limits: UploadLimits, path: str | None):
    """Check an upload as soon as it lands: a bad one is removed from the UI with a warning saying why."""
    if path is None:
        return gr.skip()
    try:
        validate_upload(path, limits)
    except UserInputError as err:
        gr.Warning(ui_message(err))
        return None
    return gr.skip()


def _choose(name: str, mode: str, value, draw: Callable[[], float]):
    """Fix keeps the UI's value, Randomize draws a new one (InstructPix2Pix app behaviour)."""
    if mode == RANDOMIZE:
        return draw()
    if mode != FIX:
        raise UserInputError(f"{name}: choose {FIX} or {RANDOMIZE}, got {mode!r}")
    if value is None:
        raise UserInputError(f"{name} is empty: enter a value or choose {RANDOMIZE}")
    return value


# EditSettings field -> (its control's label, the mode field randomizing it) for controls an editor may not use
OPTIONAL_CONTROLS = {"cfg_image": ("image guidance", "cfg_image_mode"), "scheduler": ("scheduler", None)}


def refuse_unused(request: EditRequest, unused: dict[str, str]) -> None:
    """A value (or Randomize) sent for a control the editor has no use for is refused, not silently dropped:
    the page hides these controls, so only a stale page or an API client can send one."""
    for name, why in unused.items():
        label, mode = OPTIONAL_CONTROLS[name]
        if getattr(request, name) not in (None, "") or (mode and getattr(request, mode) == RANDOMIZE):
            raise UserInputError(f"{label}: {why}; leave it empty")


def pick_values(request: EditRequest, defaults: Controls, rng: random.Random, unused: dict[str, str] | None = None,
                cfg_text_range: tuple[float, float] = CFG_TEXT_RANGE) -> tuple[int, float, float | None, int]:
    """(steps, text guidance, image guidance, seed) to use: each fixed from the UI or drawn at random (text
    guidance from the editor family's range); image guidance is None for an editor without it (`unused`, see
    refuse_unused)."""
    low = max(1, round(defaults.steps * (1 - STEPS_SPREAD)))
    high = max(low, round(defaults.steps * (1 + STEPS_SPREAD)))
    steps = _choose("steps", request.steps_mode, request.steps, lambda: rng.randint(low, high))
    cfg_text = _choose("text guidance", request.cfg_text_mode, request.cfg_text,
                       lambda: round(rng.uniform(*cfg_text_range), 2))
    cfg_image = None
    if "cfg_image" not in (unused or {}):
        cfg_image = float(_choose("image guidance", request.cfg_image_mode, request.cfg_image,
                                  lambda: round(rng.uniform(*CFG_IMAGE_RANGE), 2)))
    seed = _choose("seed", request.seed_mode, request.seed, lambda: rng.randint(*SEED_RANGE))
    if steps != int(steps) or steps < 1:
        raise UserInputError(f"steps must be a whole number >= 1, got {steps}")
    if seed != int(seed) or seed < 0:
        raise UserInputError(f"seed must be a whole number >= 0, got {seed}")
    return int(steps), float(cfg_text), cfg_image, int(seed)


def _generator(ctx: AppContext, style: str) -> torch.nn.Module | None:
    if style not in ctx.generators:
        raise UserInputError(f"unknown style {style!r}; choose one of: {', '.join(ctx.generators)}")
    return ctx.generators[style]


def edit(ctx: AppContext, request: EditRequest, progress: Progress | None = None,
         rng: random.Random | None = None):
    """The Edit button: returns (stylized, edited variants, steps, text guidance, image guidance, seed used)."""
    progress = progress or (lambda *args, **kwargs: None)
    try:
        image = validate_upload(request.image, ctx.limits)
        if request.instruction is None or not request.instruction.strip():
            raise UserInputError(EMPTY_INSTRUCTION)
        generator = _generator(ctx, request.style)
        refuse_unused(request, ctx.unused)
        steps, cfg_text, cfg_image, seed = pick_values(request, ctx.defaults, rng or random.Random(), ctx.unused,
                                                       ctx.cfg_text_range)
        settings = EditSettings(steps=steps, cfg_text=cfg_text, cfg_image=cfg_image, seed=seed,
                                scheduler=request.scheduler, resolution=int(request.resolution),
                                num_variants=int(request.variants), edit_out_of_scope=ctx.edit_out_of_scope)
    except (UserInputError, ValueError) as err:  # EditSettings names the bad value in a ValueError
        raise gr.Error(ui_message(err)) from None
    progress(0.0, desc="stylizing" if generator is not None else "editing")
    try:
        result = run_chain(ChainModels(generator=generator, editor=ctx.editor), image, request.instruction,
                           settings)
    except UserInputError as err:
        raise gr.Error(ui_message(err)) from None
    except (torch.OutOfMemoryError, MemoryError):  # stage 1 (stage 2 names its own limits above); app stays up
        raise gr.Error(f"out of memory on this {image.width}x{image.height} photo: lower the resolution cap or "
                       "the variants, or upload a smaller photo") from None
    scope_notice = getattr(ctx.editor, "scope_notice", None)  # editors with an instruction index (scope.py)
    notice = scope_notice(request.instruction, not ctx.edit_out_of_scope) if scope_notice else None
    if notice:
        gr.Warning(notice)  # the page says why the result is the unchanged picture
    return (result.stylized, result.edited, *(getattr(result.settings, name) for name in RESOLVED_OUTPUTS))


def reset(defaults: Controls) -> tuple:
    """The Reset button: every setting back to its default (steps included) and both outputs cleared."""
    return (*astuple(defaults), None, None)
