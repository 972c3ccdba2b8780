"""Property-based tests of image loading: random bytes, damaged real files, every PIL mode and random sizes
either load as upright 8-bit RGB or raise the one-line UserInputError naming the file, nothing else."""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from common.errors import UserInputError
from common.images import capped_size, load_image, load_image_capped

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
EXTS = [".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".gif"]
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif", "GIF": ".gif"}


def _seed_image(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (12, 17, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


SEEDS = {fmt: _seed_image(fmt) for fmt in FORMATS}


def _load_or_user_error(path) -> Image.Image | None:
    try:
        img = load_image(path)
    except UserInputError as err:
        assert path.name in str(err) and "\n" not in str(err)
        return None
    assert img.mode == "RGB" and img.width >= 1 and img.height >= 1
    return img


@FUZZ
@given(data=st.binary(max_size=3000), ext=st.sampled_from(EXTS))
def test_random_bytes(tmp_path, data, ext):
    path = tmp_path / f"random{ext}"
    path.write_bytes(data)
    _load_or_user_error(path)


@FUZZ
@given(fmt=st.sampled_from(sorted(FORMATS)), cut=st.floats(0, 1),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=8))
def test_damaged_real_files(tmp_path, fmt, cut, flips):
    """Valid files of each format, truncated at a random point and with random bytes overwritten."""
    data = bytearray(SEEDS[fmt])
    for where, value in flips:
        data[min(len(data) - 1, int(where * len(data)))] = value
    data = bytes(data[: max(1, int(cut * len(data)))]) if cut < 1 else bytes(data)
    path = tmp_path / f"damaged{FORMATS[fmt]}"
    path.write_bytes(data)
    _load_or_user_error(path)


MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "I", "I;16", "F", "LA"]
# Formats that can store each mode (PNG unless listed).
STORE = {"CMYK": "JPEG", "YCbCr": "JPEG", "LAB": "TIFF", "F": "TIFF"}


def _image(mode: str, w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    if mode == "F":
        return Image.fromarray(rng.normal(size=(h, w)).astype(np.float32))
    base = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    if mode == "PA":
        return base.convert("P").convert("PA")
    if mode in ("La", "RGBa"):
        return base.convert(mode.upper()).convert(mode)
    return base.convert(mode)


@FUZZ
@given(mode=st.sampled_from(MODES), w=st.integers(1, 48), h=st.integers(1, 48), seed=st.integers(0, 2**16))
def test_every_mode_and_size_loads_as_rgb(tmp_path, mode, w, h, seed):
    fmt = STORE.get(mode, "PNG")
    path = tmp_path / f"img{FORMATS[fmt]}"
    _image(mode, w, h, seed).save(path, format=fmt)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (w, h)


@FUZZ
@given(mode=st.sampled_from(MODES + ["PA", "La", "RGBa", "HSV", "RGBX"]), w=st.integers(1, 48),
       h=st.integers(1, 48), seed=st.integers(0, 2**16))
@example(mode="La", w=1, h=1, seed=0)  # found by hypothesis: PIL converts premultiplied La only to LA
def test_every_mode_converts_to_rgb_in_memory(mode, w, h, seed):
    """Modes no file format stores (premultiplied alpha, PA, HSV) still convert (a decoder may produce them)."""
    from common.images import _to_rgb
    out = _to_rgb(_image(mode, w, h, seed))
    assert out.mode == "RGB" and out.size == (w, h)


@FUZZ
@given(w=st.integers(1, 300), h=st.integers(1, 300), cap=st.integers(1, 320), fmt=st.sampled_from(["PNG", "JPEG"]),
       orientation=st.sampled_from([1, 3, 6, 8]))
def test_capped_loading_keeps_aspect_and_orientation(tmp_path, w, h, cap, fmt, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"big{FORMATS[fmt]}"
    Image.new("RGB", (w, h), (10, 200, 30)).save(path, format=fmt, exif=exif)
    upright = (h, w) if orientation in (6, 8) else (w, h)
    img, full = load_image_capped(path, cap)
    assert full == upright
    assert img.size == capped_size(upright, cap)
    assert max(img.size) <= max(cap, 1) and min(img.size) >= 1


@FUZZ
@given(w=st.integers(1, 100_000), h=st.integers(1, 100_000), cap=st.integers(1, 10_000))
def test_capped_size_properties(w, h, cap):
    cw, ch = capped_size((w, h), cap)
    assert 1 <= cw and 1 <= ch and max(cw, ch) <= max(cap, 1)
    if max(w, h) <= cap:
        assert (cw, ch) == (w, h)
    else:  # aspect kept up to rounding (and the 1-pixel floor)
        assert abs(cw / ch - w / h) <= (w / h) * (1 / ch + 1 / cw) + 1e-9 or min(cw, ch) == 1


def test_capped_loading_refuses_bad_cap(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    with pytest.raises(UserInputError, match="max side"):
        load_image_capped(tmp_path / "x.png", 0)
