"""The bundled photos load offline and the split keeps training and evaluation photos apart."""
import numpy as np
import pytest
from PIL import Image

from common.errors import UserInputError
from demo.photos import CONTENT, HELDOUT, PHOTOS, STYLE, export_example, load_photo


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_every_photo_loads_as_rgb(name):
    img = load_photo(name)
    assert img.mode == "RGB" and min(img.size) >= 256
    assert np.asarray(img).std() > 5  # a real picture, not a blank placeholder


def test_split_is_disjoint_and_registered():
    groups = [set(CONTENT), set(STYLE), set(HELDOUT)]
    for i, a in enumerate(groups):
        assert a <= set(PHOTOS)
        for b in groups[i + 1:]:
            assert not a & b
    assert len(HELDOUT) >= 3 and len(CONTENT) >= 3 and len(STYLE) >= 3
    # the stereo pair is nearly one picture: both views must be in the same group
    assert {"motorcycle_left", "motorcycle_right"} <= set(CONTENT)


def test_unknown_photo_lists_valid_names():
    with pytest.raises(UserInputError, match="astronaut"):
        load_photo("nope")


def test_export_example_writes_and_never_overwrites(tmp_path):
    out = export_example("coffee", tmp_path / "coffee.png")
    assert Image.open(out).size == load_photo("coffee").size
    with pytest.raises(UserInputError, match="already exists"):
        export_example("astronaut", out)
