"""Where the bundled default models live (shipped in `checkpoints/`, trained by this project)."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = REPO_ROOT / "checkpoints"

# Bundled stage-1 styles: name -> generator file (self-describing safetensors).
STYLES: dict[str, Path] = {
    "cartoon": CHECKPOINTS / "gan" / "cartoon.safetensors",
}
DEFAULT_STYLE = "cartoon"
# Bundled stage-2 editor: a complete StableDiffusionInstructPix2PixPipeline folder.
DEFAULT_EDITOR = CHECKPOINTS / "editor"
EXAMPLES = REPO_ROOT / "examples"
