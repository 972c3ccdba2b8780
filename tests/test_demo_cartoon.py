"""The procedural cartoon filter: same size, deterministic, really changes the picture."""
import numpy as np
import pytest

from demo.cartoon import CartoonSettings, cartoonize, cartoonize_array, ink_mask
from demo.photos import load_photo


@pytest.fixture(scope="module")
def photo():
    return load_photo("chelsea").resize((64, 43))  # odd, non-square size on purpose


def test_cartoonize_keeps_size_and_changes_image(photo):
    out = cartoonize(photo)
    assert out.size == photo.size and out.mode == "RGB"
    diff = np.abs(np.asarray(out, float) - np.asarray(photo, float)).mean() / 255
    assert diff > 0.02


def test_cartoonize_is_deterministic(photo):
    assert np.array_equal(np.asarray(cartoonize(photo)), np.asarray(cartoonize(photo)))


def test_cartoon_has_few_paint_colours_plus_ink(photo):
    settings = CartoonSettings(colors=6)
    out = cartoonize_array(np.asarray(photo), settings)
    colours = np.unique(out.reshape(-1, 3), axis=0)
    assert len(colours) <= settings.colors + 1  # k paints + the ink colour
    mask = ink_mask(np.asarray(photo), settings)
    assert 0 < mask.mean() < 0.5  # some lines, not a black picture
    assert (out[mask] == np.array(settings.ink, np.uint8)).all()


def test_uniform_image_does_not_break_kmeans():
    flat = np.full((32, 32, 3), 77, np.uint8)
    out = cartoonize_array(flat)
    assert out.shape == flat.shape and np.isfinite(out).all()


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="edge_block"):
        CartoonSettings(edge_block=8)
    with pytest.raises(ValueError, match="colors"):
        CartoonSettings(colors=1)
