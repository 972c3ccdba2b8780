"""Image I/O that never surprises: EXIF orientation applied, CMYK / palette / 16-bit / gray / RGBA
turned into 8-bit RGB, unreadable files reported by name, outputs written atomically and never
over the input or an existing file unless asked."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .checkpoints import atomic_write
from .errors import UserInputError, one_line

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
# Decompression-bomb guard: larger images are refused, big-but-sane ones are tiled or capped by callers.
MAX_PIXELS = 200_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# Stylizing at full size holds the picture several times as float planes (input, blended output, weights, the
# 8-bit copies) plus one tile's activations: 90-106 bytes a pixel measured with the default 1024 px tiles
# (tests/test_bounded_memory.py checks BYTES_PER_PIXEL holds). Larger results are refused before decoding
# rather than left to the out-of-memory killer.
BYTES_PER_PIXEL = 128
PROCESS_MAX_PIXELS = 40_000_000  # ~5 GB at BYTES_PER_PIXEL


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTS


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserInputError(f"{folder}: not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_path(p))


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB; alpha is composited over white, 16-bit is scaled, not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = Image.fromarray(np.nan_to_num((arr - lo) * scale).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode == "La":  # premultiplied: PIL only converts it to LA (which un-premultiplies)
        img = img.convert("LA")
    if img.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def _open_checked(path: Path) -> None:
    if not path.exists():
        raise UserInputError(f"{path}: file not found")
    if path.is_dir():
        raise UserInputError(f"{path}: is a folder, expected an image file")
    if path.stat().st_size == 0:
        raise UserInputError(f"{path}: empty file")


def _read(path: Path, max_side: int | None, max_pixels: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """(upright RGB image, its full upright size); shrunk to fit `max_side` when given. JPEGs are decoded
    directly at a reduced scale (libjpeg DCT scaling), so a huge photo never needs its full-size buffer.
    A result above `max_pixels` is refused before decoding."""
    _open_checked(path)
    try:
        with Image.open(path) as img:
            full = img.size
            if img.width < 1 or img.height < 1:
                raise UserInputError(f"{path}: image has no pixels")
            _check_pixels(path, capped_size(full, max_side) if max_side else full, max_pixels)
            if max_side and max(full) > max_side and img.format == "JPEG":
                img.draft("RGB", (max(1, full[0] * max_side // max(full)), max(1, full[1] * max_side // max(full))))
            img.load()
            # EXIF orientations 5-8 swap width and height: report the upright size
            if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                full = full[::-1]
            img = ImageOps.exif_transpose(img) or img
            rgb = _to_rgb(img)
    except UserInputError:
        raise
    except Image.DecompressionBombError:
        raise UserInputError(f"{path}: image too large (over {MAX_PIXELS:,} pixels)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        raise UserInputError(f"{path}: not a readable image ({type(err).__name__}: {one_line(err)})") from None
    target = capped_size(full, max_side) if max_side else full
    if rgb.size != target:  # JPEG draft scales by 1/2^k, rounding up: finish at the exact capped size
        rgb = rgb.resize(target, Image.LANCZOS, reducing_gap=3.0)
    return rgb, full


def _check_pixels(path: Path, size: tuple[int, int], max_pixels: int | None) -> None:
    if max_pixels is not None and size[0] * size[1] > max_pixels:
        raise UserInputError(f"{path}: {size[0]}x{size[1]} = {size[0] * size[1] / 1e6:.0f} MP is above the "
                             f"{max_pixels / 1e6:.0f} MP processed at full size (about {BYTES_PER_PIXEL} bytes of "
                             "memory a pixel); shrink it with --max-side, e.g. --max-side 8192")


def capped_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(w, h) scaled so the long side is at most `max_side`, aspect kept, each side at least 1."""
    scale = min(1.0, max_side / max(size))
    return tuple(max(1, round(side * scale)) for side in size)


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as upright 8-bit RGB, or raise `UserInputError` naming the file."""
    return _read(Path(path), None)[0]


def load_image_capped(path: str | os.PathLike, max_side: int | None,
                      max_pixels: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """Like `load_image`, but shrunk so the long side is at most `max_side` (None: no cap); also returns
    the image's full upright (width, height) so callers can print a notice when it was capped. A result
    above `max_pixels` (e.g. PROCESS_MAX_PIXELS) is refused before decoding, naming the limit."""
    if max_side is not None and max_side < 1:
        raise UserInputError(f"max side must be positive, got {max_side}")
    return _read(Path(path), max_side, max_pixels)


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> float tensor (3, H, W) in [-1, 1]."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """Float tensor (3, H, W) in [-1, 1] -> PIL RGB (non-finite values become 0)."""
    x = torch.nan_to_num(x.detach().float().cpu(), nan=0.0, posinf=1.0, neginf=-1.0)
    arr = ((x.clamp(-1, 1) + 1.0) * 127.5 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr, "RGB")


def check_output_path(output: str | os.PathLike, inputs: list[str | os.PathLike] = (),
                      overwrite: bool = False) -> Path:
    """Refuse outputs that would overwrite an input, an existing file (without `overwrite`), or land
    in a folder that does not exist."""
    output = Path(output)
    if output.suffix.lower() not in IMAGE_EXTS + VIDEO_EXTS and output.suffix:
        raise UserInputError(f"{output}: unsupported output extension {output.suffix!r} "
                             f"(use one of {', '.join(IMAGE_EXTS)})")
    for src in inputs:
        if Path(src).exists() and output.exists() and os.path.samefile(src, output):
            raise UserInputError(f"{output}: output path is the input; choose another name")
        if Path(src).resolve() == output.resolve():
            raise UserInputError(f"{output}: output path is the input; choose another name")
    if not output.parent.exists() and str(output.parent) not in ("", "."):
        raise UserInputError(f"{output.parent}: output folder does not exist")
    if output.is_dir():
        raise UserInputError(f"{output}: is a folder, expected an output file name")
    if output.exists() and not overwrite:
        raise UserInputError(f"{output}: already exists (pass --overwrite to replace it)")
    return output


def folder_targets(src: Path, dst: Path, suffix: str | None = None) -> list[tuple[Path, Path]]:
    """(input, output) pairs for a folder -> folder run: the images of `src` mapped into `dst` (same name,
    or the same stem with `suffix`). Two inputs with one stem (a.jpg, a.png -> a.png) both get an output:
    an input already named like its output keeps that name, the others take their full name plus the suffix
    (a.png -> a.png, a.jpg -> a.jpg.png). Refuses an empty input folder, an output that is a file, the input
    folder itself; existing files and creating `dst` are the caller's (their rules differ)."""
    images = list_images(src)
    if not images:
        raise UserInputError(f"{src}: no images ({', '.join(IMAGE_EXTS)}) in this folder")
    if dst.exists() and not dst.is_dir():
        raise UserInputError(f"{dst}: the input is a folder, so the output must be a folder")
    if dst.resolve() == src.resolve():
        raise UserInputError(f"{dst}: output folder is the input folder; choose another")
    names = [img.name if suffix is None else img.stem + suffix for img in images]
    count = Counter(names)
    names = [name if count[name] == 1 or name == img.name else img.name + suffix for img, name in zip(images, names)]
    pairs = [(img, dst / name) for img, name in zip(images, names)]
    refuse_shared_outputs([(img, [out]) for img, out in pairs])
    return pairs


def refuse_shared_outputs(outputs: list[tuple[Path, list[Path]]]) -> None:
    """Refuse, before any work, a run in which two inputs would write one file: (input, its outputs) pairs."""
    owner: dict[Path, Path] = {}
    for src, paths in outputs:
        for path in paths:
            if owner.setdefault(path, src) != src:
                raise UserInputError(f"{path}: both {owner[path].name} and {src.name} would be written there; "
                                     "rename one of the inputs")


def save_image(img: Image.Image, path: str | os.PathLike) -> None:
    """Write an image atomically, format from the extension (callers check the path first)."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    atomic_write(path, lambda tmp: img.save(tmp, format=fmt))
