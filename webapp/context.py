"""What the web app runs with: the loaded models, the default value of every control, the upload limits."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from chain.defaults import DEFAULT_EDITOR, DEFAULT_STYLE, EXAMPLES, STYLES
from common.errors import UserInputError
from common.images import list_images
from common.devices import resolve_device
from edit_diffusion.editor import SCHEDULERS, EditSettings, Editor, load_editor, resolve_settings
from edit_diffusion.families import FamilyEditor, unused_settings
from stylize_gan.checkpoint import load_generator

NO_STYLE = "no stylization"
FIX, RANDOMIZE = "Fix", "Randomize"
MODES = (FIX, RANDOMIZE)
# The seed the original InstructPix2Pix app shows at start (edit_app.py); its seed mode starts at Randomize.
DEFAULT_SEED = 1371
MAX_VARIANTS = 4
MIN_RESOLUTION, MAX_RESOLUTION, RESOLUTION_STEP = 64, 1024, 64  # slider for the long-side cap
MAX_STEPS = 500
# Randomize range of text guidance for SD 1.5 InstructPix2Pix editors (the original app, edit_app.py); the modern
# families carry their own around their defaults (families.Family.cfg_text_random)
CFG_TEXT_RANGE = (6.0, 9.0)
# Edits served at once: the Editor keeps no per-call state (own scheduler and generators per edit), so two
# can share it; more would mostly queue for the same cores / GPU and multiply peak memory.
EDIT_CONCURRENCY = 2


@dataclass(frozen=True)
class UploadLimits:
    max_megabytes: float = 20.0    # file size cap in MiB (gradio refuses bigger uploads before we see them)
    max_pixels: int = 40_000_000   # width x height cap, read from the header before any decoding

    def __post_init__(self) -> None:
        if not self.max_megabytes > 0:
            raise ValueError(f"--max-upload-mb must be positive, got {self.max_megabytes}")
        if self.max_pixels < 1:
            raise ValueError(f"--max-upload-pixels must be positive, got {self.max_pixels}")

    @property
    def max_bytes(self) -> int:
        return int(self.max_megabytes * 1024 * 1024)


@dataclass(frozen=True)
class Controls:
    """The value of every setting control, in the order ui.py wires them (Reset writes these back)."""
    style: str
    steps: int
    steps_mode: str
    cfg_text: float
    cfg_text_mode: str
    cfg_image: float | None  # None: the editor has no image guidance (the control is hidden)
    cfg_image_mode: str
    seed: int
    seed_mode: str
    scheduler: str | None    # None: the editor keeps its own scheduler (the control is hidden)
    variants: int
    resolution: int


@dataclass
class AppContext:
    """Loaded once at start-up; the handlers read it, never change it."""
    editor: Editor
    generators: dict[str, torch.nn.Module | None]  # style choice -> generator (None: no stylization)
    defaults: Controls
    limits: UploadLimits = field(default_factory=UploadLimits)
    examples: list[str] = field(default_factory=list)  # image files offered under the upload field
    # Controls that mean nothing to the loaded editor -> why (Kontext / Qwen: image guidance, scheduler): hidden
    # in the page with this note, and an edit request that sets one anyway is refused, never silently ignored
    unused: dict[str, str] = field(default_factory=dict)
    cfg_text_range: tuple[float, float] = CFG_TEXT_RANGE  # Randomize draws text guidance from here
    edit_out_of_scope: bool = False  # app.py --edit-out-of-scope: EditSettings.edit_out_of_scope for every edit


def default_controls(editor, style: str) -> Controls:
    """Controls at start and after Reset: steps, guidance and scheduler are the editor's own defaults."""
    resolved = editor_defaults(editor)
    cfg_image = None if resolved.cfg_image is None else float(resolved.cfg_image)
    return Controls(style=style, steps=int(resolved.steps), steps_mode=FIX,
                    cfg_text=float(resolved.cfg_text), cfg_text_mode=FIX,
                    cfg_image=cfg_image, cfg_image_mode=FIX,
                    seed=DEFAULT_SEED, seed_mode=RANDOMIZE, scheduler=resolved.scheduler,
                    variants=1, resolution=int(resolved.resolution))


def unused_controls(editor) -> dict[str, str]:
    """Settings the editor's family has no use for -> why (none for SD 1.5 and SDXL InstructPix2Pix)."""
    return unused_settings(editor.family) if isinstance(editor, FamilyEditor) else {}


def editor_label(editor) -> str:
    """The editor's family as the page title names it (our own sampler runs SD 1.5 InstructPix2Pix editors)."""
    return editor.family.label if isinstance(editor, FamilyEditor) else "InstructPix2Pix"


def cfg_text_range(editor) -> tuple[float, float]:
    """Where Randomize draws text guidance for this editor: its family's range, else InstructPix2Pix's."""
    return editor.family.cfg_text_random if isinstance(editor, FamilyEditor) else CFG_TEXT_RANGE


def editor_defaults(editor) -> EditSettings:
    """EditSettings with every None filled from the editor's recommended values (edit_defaults.json)."""
    return resolve_settings(editor, EditSettings(seed=DEFAULT_SEED))  # a seed given: none drawn and printed


def checkpoint_choice(path: str) -> str:
    """The style-menu entry of a generator given on the command line."""
    return f"checkpoint: {Path(path).name}"


def load_generators(gan_checkpoint: str | None, device: str) -> dict[str, torch.nn.Module | None]:
    """Style menu: no stylization, the --gan-checkpoint generator if given, then the bundled styles on disk."""
    generators: dict[str, torch.nn.Module | None] = {NO_STYLE: None}
    if gan_checkpoint:
        generators[checkpoint_choice(gan_checkpoint)] = load_generator(Path(gan_checkpoint), device=device)
    for name, path in STYLES.items():
        if path.is_file():
            generators[name] = load_generator(path, device=device)
        else:  # said out loud rather than hidden: the menu simply lacks this style
            print(f"note: bundled style {name!r} not found at {path}; not offered", file=sys.stderr)
    return generators


def example_images(folder: str | None) -> list[str]:
    """Images of --examples, else of the bundled examples/ folder (none while it is empty or absent)."""
    if folder is not None:
        return [str(p) for p in list_images(folder)]  # a wrong folder given on purpose is an error
    return [str(p) for p in list_images(EXAMPLES)] if EXAMPLES.is_dir() else []


def load_context(editor: str | None = None, gan_checkpoint: str | None = None, device: str = "auto",
                 limits: UploadLimits | None = None, examples: str | None = None, dtype: str = "auto",
                 compile_unet: bool = False, channels_last: bool = False, cpu_offload: bool = False,
                 lora: str | None = None) -> AppContext:
    """Load the editor and every generator once; the default style is --gan-checkpoint, else the bundled one."""
    pictures = example_images(examples)
    if editor is None and not DEFAULT_EDITOR.exists():
        raise UserInputError(f"the bundled editor is missing ({DEFAULT_EDITOR}); "
                             "pass --editor <pipeline folder, hub id or .safetensors file>")
    device = resolve_device(device)
    edit_model = load_editor(str(editor or DEFAULT_EDITOR), device, dtype, compile_unet=compile_unet,
                             channels_last=channels_last, cpu_offload=cpu_offload, lora=lora)
    generators = load_generators(gan_checkpoint, device)
    if gan_checkpoint:
        style = checkpoint_choice(gan_checkpoint)
    else:
        style = DEFAULT_STYLE if DEFAULT_STYLE in generators else NO_STYLE
    return AppContext(editor=edit_model, generators=generators, defaults=default_controls(edit_model, style),
                      limits=limits or UploadLimits(), examples=pictures, unused=unused_controls(edit_model),
                      cfg_text_range=cfg_text_range(edit_model))


def scheduler_choices() -> list[str]:
    return sorted(SCHEDULERS)
