"""AnimeGAN edge smoothing: the vectorized version equals the per-pixel reference."""
import numpy as np
import pytest
from PIL import Image

from stylize_gan.smoothing import edge_mask, edge_smooth, edge_smooth_reference, ensure_smooth_dir

from _gan_fixtures import photo_crops, posterize, single_thread  # noqa: F401


@pytest.mark.parametrize("seed", [0, 1])
def test_vectorized_equals_reference_on_real_photo(seed):
    rgb = photo_crops(1, size=48, seed=seed)[0]
    mask = edge_mask(rgb)
    assert 0 < mask.mean() < 1  # the crop has edges and flat parts: both branches are exercised
    fast, ref = edge_smooth(rgb), edge_smooth_reference(rgb)
    np.testing.assert_array_equal(fast, ref)
    assert (fast[~mask] == rgb[~mask]).all()  # pixels away from edges are untouched
    assert (fast[mask] != rgb[mask]).any()


def test_vectorized_equals_reference_at_borders_and_odd_sizes():
    rgb = posterize(photo_crops(1, size=40, seed=2)[0])[:37, :29]  # hard edges reach the image border
    np.testing.assert_array_equal(edge_smooth(rgb), edge_smooth_reference(rgb))


def test_ensure_smooth_dir_creates_missing_once_and_names_bad_files(tmp_path):
    style = tmp_path / "style"
    style.mkdir()
    for i, crop in enumerate(photo_crops(3)):
        Image.fromarray(posterize(crop)).save(style / f"{i}.png")
    (style / "broken.jpg").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="broken.jpg"):
        out = ensure_smooth_dir(style, tmp_path / "smooth")
    assert sorted(p.name for p in out) == ["0.png", "1.png", "2.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(out[0])), edge_smooth(np.asarray(Image.open(style / "0.png"))))
    before = out[0].stat().st_mtime_ns
    (style / "broken.jpg").unlink()
    ensure_smooth_dir(style, tmp_path / "smooth")  # nothing left to do: files are not rewritten
    assert out[0].stat().st_mtime_ns == before
