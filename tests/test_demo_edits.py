"""Edit families: exact, deterministic, strong effects; train and held-out phrasings kept apart."""
import re

import numpy as np
import pytest

from demo.cartoon import cartoonize
from demo.edits import EDIT_FAMILIES, GLOBAL_FAMILIES, EditFamily, apply_edit, black_and_white
from demo.photos import load_photo
from demo.samples import center_square


@pytest.fixture(scope="module")
def image():
    # a typical editor input: a cartoonized held-out photo
    return np.asarray(cartoonize(center_square(load_photo("astronaut"), 64)))


def test_at_least_ten_families():
    assert len(EDIT_FAMILIES) >= 10


@pytest.mark.parametrize("name", [*GLOBAL_FAMILIES, "recolour"])
def test_family_is_exact_strong_and_shape_preserving(name, image):
    fam = EDIT_FAMILIES[name]
    args = fam.example_args
    if fam.prepare is not None:
        image = fam.prepare(image, args)  # recolour: a view that holds the source colour
    out = fam.apply(image.copy(), *args)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out, fam.apply(image.copy(), *args))
    change = np.abs(out.astype(float) - image).mean() / 255
    assert change > 0.04, f"{name} changes the image by only {change:.3f}"
    # odd sizes work too (the editor may see any resolution)
    assert fam.apply(image[:37, :51], *args).shape == (37, 51, 3)


def test_identity_family_leaves_the_image_alone(image):
    out = apply_edit("identity", image)
    assert np.array_equal(out, image) and out is not image


@pytest.mark.parametrize("name", list(EDIT_FAMILIES))
def test_phrasings_counts_and_disjoint(name):
    fam = EDIT_FAMILIES[name]
    assert len(fam.train_phrasings) >= 6 and len(fam.heldout_phrasings) >= 3
    assert not set(fam.train_phrasings) & set(fam.heldout_phrasings)
    # held-out wording shares a key word with training, so a text encoder trained from scratch can generalize
    words = lambda s: set(re.findall(r"[a-z]+", s)) - {"a", "the", "it", "this", "of", "to", "please"}
    train_words = set().union(*map(words, fam.train_phrasings))
    for phrase in fam.heldout_phrasings:
        assert words(phrase) & train_words, phrase


def test_no_phrasing_is_shared_between_families_or_leaks_into_training():
    all_train = [p for f in EDIT_FAMILIES.values() for p in f.train_phrasings]
    all_heldout = [p for f in EDIT_FAMILIES.values() for p in f.heldout_phrasings]
    assert len(all_train) == len(set(all_train)), "a training phrasing is ambiguous between families"
    assert len(all_heldout) == len(set(all_heldout))
    assert not set(all_train) & set(all_heldout)


def test_known_values():
    px = np.array([[[255, 0, 0], [10, 20, 30]]], np.uint8)
    assert black_and_white(px)[0, 0].tolist() == [76, 76, 76]  # 0.299 * 255
    assert apply_edit("invert", px)[0, 1].tolist() == [245, 235, 225]
    assert apply_edit("darker", px)[0, 0].tolist() == [102, 0, 0]


def test_overlapping_phrasings_are_refused():
    with pytest.raises(ValueError, match="held-out"):
        EditFamily(black_and_white, ("make it gray",) * 6, ("make it gray",))
    with pytest.raises(ValueError, match="unknown edit family"):
        apply_edit("sharpen", np.zeros((4, 4, 3), np.uint8))
