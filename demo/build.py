"""Build the demo training data for both stages from the bundled photos, reproducibly from a seed.

    python -m demo.build --out work_data/demo --seed 0

Layout written under --out:
  gan/train_photo/*.png          stage-1 inputs: random crops of CONTENT photos
  gan/Cartoon/style/*.png        stage-1 style domain: cartoonize() of crops of STYLE photos
  gan/test/test_photo/*.png      held-out views of HELDOUT photos
  edit/train/metadata.jsonl      stage-2 triplets: CONTENT+STYLE crops as photos, cartoon-filtered and (with
                                 --stage1) through the stage-1 generator; training phrasings
  edit/heldout/metadata.jsonl    evaluation triplets (HELDOUT photos, held-out phrasings and colour pairs)
  build_config.json              the resolved config and the photo split
The AnimeGAN trainer makes `gan/Cartoon/smooth` itself, so it is not written here.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from common.checkpoints import save_json
from common.cli import check_fields, option, parse_config
from common.errors import UserInputError, cli_errors
from common.images import save_image

from .cartoon import cartoonize
from .edits import EDIT_FAMILIES
from .photos import CONTENT, HELDOUT, STYLE
from .samples import (DOMAINS, EditSample, crops, edit_samples, heldout_edit_samples, heldout_photo_views,
                      load_photos)

def jitter_palette(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Rotate the hue at random and scale saturation by 0.5-1.0. With only four style photos the
    discriminator would otherwise learn their palettes (pink flower, blue sky) and push every
    generated image towards those colours; with the palette randomized only the cartoon structure
    (flat paint, ink lines) tells real from fake, and the colours come from the input photo."""
    hsv = cv2.cvtColor(np.asarray(img.convert("RGB")), cv2.COLOR_RGB2HSV).astype(np.int32)
    hsv[..., 0] = (hsv[..., 0] + int(rng.integers(0, 180))) % 180  # OpenCV hue range is 0..179
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.5, 1.0), 0, 255)
    return Image.fromarray(cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB), "RGB")


# Sub-folders this builder owns under --out (the only ones --overwrite may replace).
OWNED_DIRS = ("gan", "edit")


@dataclass
class BuildConfig:
    out: Path = option(help="output folder (created if missing)")
    seed: int = option(0, "master seed: the same seed and flags give byte-identical data", ge=0, lt=2**63)
    gan_crops: int = option(480, "stage-1 photo crops (gan/train_photo)", ge=0)
    style_crops: int | None = option(None, "stage-1 style crops, gan/Cartoon/style (default: --gan-crops)", ge=0)
    test_crops: int = option(12, "stage-1 held-out test views (gan/test/test_photo)", ge=0)
    size: int = option(256, "stage-1 crop size (px)", ge=16)
    edit_samples: int = option(2000, "stage-2 training triplets", ge=0)
    edit_heldout_per_family: int = option(10, "stage-2 held-out triplets per family", ge=0)
    edit_size: int = option(128, "stage-2 image size (px)", ge=16)
    recolour_share: float = option(0.35, "fraction of the stage-2 triplets that recolour by colour name", ge=0, le=1)
    identity_share: float = option(0.1, "fraction of the stage-2 triplets whose instruction is out of scope "
                                   "(target: the unchanged input)", ge=0, le=1)
    stage1: Path | None = option(None, "stage-1 generator whose outputs join the editor's input domains "
                                 "(default: photos and the cartoon filter only)")
    stage1_pool: int = option(320, "views made by --stage1, drawn with replacement for its triplets", ge=1)
    families: tuple[str, ...] = option(tuple(EDIT_FAMILIES), "edit families to include (default: all registered)",
                                       choices=tuple(EDIT_FAMILIES))
    min_scale: float = option(0.3, "smallest crop side as a fraction of the photo's short side", ge=0.05, le=1.0)
    overwrite: bool = option(False, "replace earlier gan/ and edit/ folders under --out")

    def __post_init__(self):
        self.out = Path(self.out)
        self.families = tuple(self.families)
        if self.style_crops is None:
            self.style_crops = self.gan_crops
        for flag in ("gan_crops", "style_crops", "test_crops", "edit_samples", "edit_heldout_per_family"):
            if getattr(self, flag) < 0:
                raise ValueError(f"--{flag.replace('_', '-')} must be >= 0, got {getattr(self, flag)}")
        for flag in ("size", "edit_size"):
            if getattr(self, flag) < 16:
                raise ValueError(f"--{flag.replace('_', '-')} must be >= 16 pixels, got {getattr(self, flag)}")
        if not 0.05 <= self.min_scale <= 1.0:
            raise ValueError(f"--min-scale must be in [0.05, 1], got {self.min_scale}")
        if self.recolour_share + self.identity_share > 1:
            raise ValueError("--recolour-share + --identity-share must be <= 1")
        if self.stage1 is not None and not Path(self.stage1).is_file():
            raise UserInputError(f"--stage1 {self.stage1}: not found")
        unknown = [f for f in self.families if f not in EDIT_FAMILIES]
        if unknown or not self.families:
            raise ValueError(f"--families: unknown {unknown or 'empty'}; choose from {', '.join(EDIT_FAMILIES)}")
        check_fields(self)  # NaN/inf and the metadata bounds


def _prepare_out(config: BuildConfig) -> None:
    """Refuse to mix with an earlier build unless --overwrite (never silently overwrite data)."""
    if config.out.exists() and not config.out.is_dir():
        raise UserInputError(f"{config.out}: exists and is not a folder")
    for name in OWNED_DIRS:
        sub = config.out / name
        if sub.exists() and any(sub.iterdir()):
            if not config.overwrite:
                raise UserInputError(f"{sub}: already exists and is not empty (pass --overwrite to rebuild)")
            shutil.rmtree(sub)
    config.out.mkdir(parents=True, exist_ok=True)


def _write_images(items: list[tuple[str, Image.Image]], folder: Path, desc: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, img) in enumerate(tqdm(items, desc=desc, unit="img")):
        save_image(img, folder / f"{i:05d}_{name}.png")


def write_triplets(samples: list[EditSample], folder: Path, desc: str) -> Path:
    """Write images/<i>_in.png, images/<i>_out.png and metadata.jsonl (InstructPix2Pix columns)."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, s in enumerate(tqdm(samples, desc=desc, unit="triplet")):
        stem = f"{i:05d}_{s.photo}_{s.family}"
        save_image(Image.fromarray(s.source, "RGB"), images / f"{stem}_in.png")
        save_image(Image.fromarray(s.target, "RGB"), images / f"{stem}_out.png")
        rows.append({"input_image": f"images/{stem}_in.png", "edit_prompt": s.prompt,
                     "edited_image": f"images/{stem}_out.png", "family": s.family, "args": list(s.args),
                     "domain": s.domain})
    metadata = folder / "metadata.jsonl"
    metadata.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return metadata


def _domains(config: BuildConfig, photos: dict[str, Image.Image], rng: np.random.Generator) -> dict:
    """Input domains of the editor's training triplets: DOMAINS, plus a pool of real stage-1 outputs."""
    if config.stage1 is None or config.edit_samples == 0:
        return DOMAINS
    import torch

    from stylize_gan.checkpoint import load_generator
    from stylize_gan.inference import stylize_pil
    generator = load_generator(config.stage1).eval()
    views = crops(photos, config.stage1_pool, config.edit_size, rng, config.min_scale)
    with torch.inference_mode():
        pool = [(name, stylize_pil(generator, view)) for name, view in tqdm(views, desc="stage-1 pool", unit="img")]
    return {**DOMAINS, "stage1": pool}


def main(config: BuildConfig) -> dict[str, int]:
    """Build everything; returns the number of files written per part."""
    _prepare_out(config)
    # One generator per part, derived from the master seed: changing one count (e.g. --edit-samples)
    # leaves the other parts identical.
    seeds = np.random.SeedSequence(config.seed).spawn(3)
    gan_rng, style_rng, edit_rng = (np.random.default_rng(s) for s in seeds)

    # Stage 1 (AnimeGAN layout)
    content = load_photos(CONTENT)
    _write_images(crops(content, config.gan_crops, config.size, gan_rng, config.min_scale),
                  config.out / "gan" / "train_photo", "train_photo")
    style = load_photos(STYLE)
    style_crops = crops(style, config.style_crops, config.size, style_rng, config.min_scale)
    _write_images([(n, jitter_palette(cartoonize(c), style_rng))
                   for n, c in tqdm(style_crops, desc="cartoonize style", unit="img")],
                  config.out / "gan" / "Cartoon" / "style", "Cartoon/style")
    _write_images(heldout_photo_views(config.test_crops, config.size, config.seed),
                  config.out / "gan" / "test" / "test_photo", "test_photo")

    # Stage 2 (InstructPix2Pix triplets on photos and stage-1 styled crops)
    train = edit_samples({**content, **style}, config.edit_samples, config.edit_size, config.families,
                         heldout=False, rng=edit_rng, min_scale=config.min_scale, domains=_domains(config, {**content, **style}, edit_rng),
                         shares={"recolour": config.recolour_share, "identity": config.identity_share})
    write_triplets(train, config.out / "edit" / "train", "edit/train")
    heldout = heldout_edit_samples(config.edit_heldout_per_family, config.edit_size, config.seed,
                                   config.families)
    write_triplets(heldout, config.out / "edit" / "heldout", "edit/heldout")

    resolved = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    save_json({"config": resolved, "split": {"content": CONTENT, "style": STYLE, "heldout": HELDOUT}},
              config.out / "build_config.json")
    counts = {"train_photo": config.gan_crops, "style": config.style_crops, "test_photo": config.test_crops,
              "edit_train": len(train), "edit_heldout": len(heldout)}
    print("wrote " + ", ".join(f"{k}={v}" for k, v in counts.items()) + f" under {config.out}")
    return counts


def parse_args(argv: list[str] | None = None) -> BuildConfig:
    return parse_config(BuildConfig, argv, prog="python -m demo.build", description=__doc__.splitlines()[0])


@cli_errors
def cli(argv: list[str] | None = None) -> dict[str, int]:
    return main(parse_args(argv))


if __name__ == "__main__":
    cli()
