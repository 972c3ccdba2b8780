"""Render one picture of the whole chain: a photo, its stage-1 cartoon, then captioned stage-2 edits of it.

    python -m demo.gallery --out docs/gallery.png
    python -m demo.gallery --photo chelsea --instructions "make it black and white" "turn the orange fur blue"
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from chain.defaults import DEFAULT_EDITOR, STYLES
from common.cli import check_fields, option, parse_config
from common.errors import UserInputError, cli_errors
from common.images import check_output_path, load_image, save_image

from .evaluate import l1
from .photos import PHOTOS

# Local recolours first (what the project is about), then global filters, then one edit the bundled editor
# is not meant to do, to show that it leaves such a picture alone.
DEFAULT_INSTRUCTIONS = (
    "turn the orange suit blue", "make the red stripes green", "change the colour of the blue parts to pink",
    "make it black and white", "give it a sepia look", "turn it into a pencil sketch", "add a red hat",
)
# Instructions the gallery shows as outside the editor's scope; their tile says so when the editor left the
# image alone (mean absolute change below the identity bar, on the [0, 1] scale).
LEFT_ALONE_L1 = 0.04
LEFT_ALONE_NOTE = "(not a known edit: left alone)"
# Layout, as fractions of the tile side: gap between tiles, caption and title font sizes.
PAD, CAPTION_FONT, TITLE_FONT = 1 / 32, 1 / 16, 1 / 12
CAPTION_LINES = 3  # captions wrap to at most this many lines; every row's caption band is as high as the longest
MIN_FONT = 8


@dataclass
class GalleryConfig:
    out: Path = option(Path("docs/gallery.png"), "the PNG to write")
    photo: str = option("astronaut", f"a bundled photo ({', '.join(PHOTOS)}) or an image file")
    size: int = option(256, "tile side (px); stage 1 and the edits run at this size", ge=32, le=1024)
    instructions: tuple[str, ...] | None = option(
        None, f"edit instructions, one tile each, each in quotes (default: {len(DEFAULT_INSTRUCTIONS)} edits: local "
              "recolours, global filters and one unknown edit, see DEFAULT_INSTRUCTIONS)")
    gan: Path | None = option(None, "stage-1 generator (.safetensors) (default: the bundled cartoon style)")
    editor: Path | None = option(None, "stage-2 editor pipeline folder (default: the bundled editor)")
    seed: int = option(0, "seed of every edit", ge=0, lt=2**63)
    overwrite: bool = option(False, "replace an existing --out file")

    def __post_init__(self):
        check_fields(self)
        self.instructions = DEFAULT_INSTRUCTIONS if self.instructions is None else tuple(self.instructions)
        self.gan, self.editor = Path(self.gan or STYLES["cartoon"]), Path(self.editor or DEFAULT_EDITOR)
        if self.photo not in PHOTOS and not Path(self.photo).is_file():
            raise UserInputError(f"--photo {self.photo}: neither a bundled photo ({', '.join(PHOTOS)}) "
                                 "nor an image file")
        for flag, path in (("--gan", self.gan), ("--editor", self.editor)):
            if not Path(path).exists():
                raise UserInputError(f"{flag} {path}: not found")
        if not self.instructions or not all(text.strip() for text in self.instructions):
            raise UserInputError("--instructions: an instruction is empty; write what to change")
        # checked before the models load, not after a minute of editing
        check_output_path(self.out, [] if self.photo in PHOTOS else [self.photo], self.overwrite)


def columns_for(tiles: int) -> int:
    """A near-square grid: 9 tiles -> 3 x 3, 4 -> 2 x 2."""
    return math.ceil(math.sqrt(tiles))


def layout(tiles: int, size: int, lines: int = CAPTION_LINES) -> dict[str, int]:
    """Pixel geometry of a gallery of `tiles` square tiles of side `size`, each with a caption band of `lines`
    text lines, under a title row."""
    pad = max(2, round(size * PAD))
    small, large = max(MIN_FONT, round(size * CAPTION_FONT)), max(MIN_FONT, round(size * TITLE_FONT))
    line = round(small * 1.25)
    cols = columns_for(tiles)
    rows = math.ceil(tiles / cols)
    cell_h = size + lines * line + pad
    title_h = round(large * 1.5) + pad
    return dict(pad=pad, caption=small, title=large, line=line, cols=cols, rows=rows, cell_h=cell_h,
                title_h=title_h, width=cols * size + (cols + 1) * pad, height=title_h + rows * cell_h + pad)


def _fit(text: str, font: ImageFont.FreeTypeFont, width: int, cut: bool = False) -> str:
    """`text` if it fits in `width` pixels and is not `cut`, else its longest prefix that fits with '...'."""
    if not cut and font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "...") > width:
        text = text[:-1]
    return text.rstrip() + "..."


def wrap(text: str, font: ImageFont.FreeTypeFont, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to `width` pixels; a caption longer than `max_lines` (or a word wider than a line)
    is cut with '...'."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    kept = [_fit(line, font, width) for line in lines[:max_lines]]
    if len(lines) > max_lines:
        kept[-1] = _fit(lines[max_lines - 1], font, width, cut=True)
    return kept


def render(tiles: list[tuple[Image.Image, str]], size: int, title: str) -> Image.Image:
    """The tiles (image, caption) on a white grid, row by row, under a one-line title."""
    g = layout(len(tiles), size)
    caption_font, title_font = ImageFont.load_default(size=g["caption"]), ImageFont.load_default(size=g["title"])
    captions = [wrap(words, caption_font, size, CAPTION_LINES) for _, words in tiles]
    g = layout(len(tiles), size, max(map(len, captions)))  # the band as high as the longest caption needs
    sheet = Image.new("RGB", (g["width"], g["height"]), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((g["pad"], g["pad"]), wrap(title, title_font, g["width"] - 2 * g["pad"], 1)[0], fill="black",
              font=title_font)
    for i, ((img, _), lines) in enumerate(zip(tiles, captions)):
        x = g["pad"] + (i % g["cols"]) * (size + g["pad"])
        y = g["title_h"] + (i // g["cols"]) * g["cell_h"]
        sheet.paste(img.convert("RGB").resize((size, size), Image.LANCZOS), (x, y))
        for k, text in enumerate(lines):
            draw.text((x, y + size + k * g["line"] + g["pad"] // 2), text, fill="black", font=caption_font)
    return sheet


def caption(text: str, before: Image.Image, after: Image.Image, out_of_scope: bool) -> str:
    """The quoted instruction; for one the editor's instruction index calls out of scope (edit_diffusion/scope.py)
    and that it left alone (measured), a note saying so."""
    if out_of_scope and l1(before, after.convert("RGB")) < LEFT_ALONE_L1:
        return f'"{text}" {LEFT_ALONE_NOTE}'
    return f'"{text}"'


def load_photo(photo: str, size: int) -> Image.Image:
    """A bundled photo by name or an image file, centre-cropped to a square of side `size`."""
    img = PHOTOS[photo]() if photo in PHOTOS else load_image(photo)
    return ImageOps.fit(img.convert("RGB"), (size, size), Image.LANCZOS)


def main(config: GalleryConfig) -> Path:
    """Run the chain on the photo and write the gallery; returns the written file."""
    from chain.pipeline import ChainModels, load_models, run_chain  # heavy imports after the argument checks
    from edit_diffusion.editor import EditSettings

    photo = load_photo(config.photo, config.size)  # an unreadable file fails before the models load
    # CPU: the bundled models are small, and the picture then does not depend on the machine's GPU
    models = load_models(str(config.gan), editor=str(config.editor), device="cpu")
    settings = EditSettings(seed=config.seed)  # the editor's own steps and guidance; a fixed seed
    cartoon = run_chain(ChainModels(models.generator, None), photo, None).stylized  # stage 1 once
    tiles = [(photo, "input photo"), (cartoon, "stage 1: cartoon")]
    for text in config.instructions:
        edited, _ = models.editor.edit(cartoon, text, settings)  # stage 2 of run_chain, on the one cartoon
        unknown = models.editor.scope_notice(text) is not None
        tiles.append((edited[0], caption(text, cartoon, edited[0], unknown)))
    name = config.photo if config.photo in PHOTOS else Path(config.photo).name
    sheet = render(tiles, config.size, f"{name}: photo -> stage 1 (cartoon) -> stage 2 edits, seed {config.seed}")
    save_image(sheet, config.out)
    print(f"wrote {config.out} ({sheet.width}x{sheet.height})")
    return Path(config.out)


def parse_args(argv: list[str] | None = None) -> GalleryConfig:
    return parse_config(GalleryConfig, argv, prog="python -m demo.gallery", description=__doc__.splitlines()[0])


@cli_errors
def cli(argv: list[str] | None = None) -> Path:
    return main(parse_args(argv))


if __name__ == "__main__":
    cli()
