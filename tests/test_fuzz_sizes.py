"""Property-based size round trips: the generator's pad-and-crop, tiled inference, tile layout, square crops
and the editor's working size always give back the sizes they promise, with finite pixels."""
from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from stylize_gan.data import fit_square
from stylize_gan.inference import _tile_starts, stylize_pil, stylize_tensor
from stylize_gan.networks import build_generator

from _gan_fixtures import single_thread  # noqa: F401

FUZZ = settings(max_examples=40, deadline=None)


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    return build_generator("unet", width=4, depth=2, res_blocks=1).eval()


@FUZZ
@given(length=st.integers(1, 5000), tile_units=st.integers(4, 64), overlap=st.integers(0, 64),
       multiple=st.sampled_from([1, 2, 4, 8, 16]))
def test_tile_layout_covers_the_image(length, tile_units, overlap, multiple):
    tile = max(tile_units, -(-16 // multiple)) * multiple  # stylize_tensor's rule: tile >= 2 * overlap + 16
    overlap = min(overlap, (tile - 16) // 2)
    starts = _tile_starts(length, tile, overlap, multiple)
    assert starts[0] == 0 and starts == sorted(set(starts))
    assert all(s % multiple == 0 for s in starts)
    if length <= tile:
        assert starts == [0]
        return
    assert starts[-1] + tile >= length and starts[-1] < length  # the last tile reaches the end
    for a, b in zip(starts, starts[1:]):
        assert b - a <= tile - overlap or b == starts[-1]  # neighbours share at least `overlap` pixels
        assert a + tile >= b  # no gap


@FUZZ
@given(w=st.integers(1, 70), h=st.integers(1, 70))
def test_stylize_keeps_any_size(generator, w, h):
    img = Image.new("RGB", (w, h), (120, 60, 200))
    out = stylize_pil(generator, img)
    assert out.size == (w, h) and out.mode == "RGB"


@settings(max_examples=15, deadline=None)
@given(w=st.integers(33, 110), h=st.integers(1, 110), seed=st.integers(0, 1000))
@example(w=100, h=1, seed=0)  # found by hypothesis: the statistics thumbnail of a 1-pixel-high strip was 0 high
def test_tiled_inference_keeps_size_and_is_finite(generator, w, h, seed):
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    y = stylize_tensor(generator, x, tile=32, overlap=8, stats_size=64)
    assert y.shape == x.shape and torch.isfinite(y).all()


@FUZZ
@given(w=st.integers(1, 400), h=st.integers(1, 400), size=st.integers(16, 128))
def test_fit_square_is_exact(w, h, size):
    assert fit_square(Image.new("RGB", (w, h)), size).size == (size, size)


@FUZZ
@given(w=st.integers(1, 20_000), h=st.integers(1, 20_000), cap=st.integers(1, 2048),
       multiple=st.sampled_from([8, 16, 32, 64]))
def test_editor_working_size(w, h, cap, multiple):
    from edit_diffusion.editor import working_size
    ww, wh = working_size(w, h, cap, multiple)
    assert ww % multiple == 0 and wh % multiple == 0 and ww >= multiple and wh >= multiple
    assert max(ww, wh) <= max(cap, multiple) + multiple  # capped up to one rounding step
