"""Recolour training views with a distractor: a far colour that the edit must leave alone (demo/colours.py
with_distractor). Training views get one; held-out views never pass through it."""
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

import demo.edits
from demo.colours import MAX_COLOUR_FRACTION, MIN_DISTRACTOR, clearly, far_share, recolour, to_hsv, with_distractor
from demo.edits import EDIT_FAMILIES
from demo.samples import DOMAINS, edit_samples, heldout_edit_samples


def _green_on_grey(size=48):
    img = np.full((size, size, 3), 120, np.uint8)
    img[:, : size // 2] = (40, 200, 40)
    return img


def test_adds_a_far_colour_and_keeps_colour_a_in_range():
    img = _green_on_grey()
    assert far_share(to_hsv(img), "green") == 0.0
    out = with_distractor(img, "green", np.random.default_rng(0))
    hsv = to_hsv(out)
    assert out.shape == img.shape and out.dtype == np.uint8 and out is not img
    assert far_share(hsv, "green") >= MIN_DISTRACTOR
    assert 0.03 <= clearly(hsv, "green").mean() <= MAX_COLOUR_FRACTION
    # the grey half is grey still: a hue rotation cannot colour it
    assert (hsv[..., 1][img[..., 1] == 120] < 0.05).all()
    assert np.array_equal(out, with_distractor(img, "green", np.random.default_rng(0)))  # seeded


def test_views_that_already_hold_a_far_colour_are_kept():
    img = _green_on_grey()
    img[:12, 24:] = (30, 30, 230)  # blue, 105 degrees from green: already a distractor (12.5% of the view)
    assert with_distractor(img, "green", np.random.default_rng(0)) is img


def test_gives_up_when_no_region_works():
    grey = np.full((32, 32, 3), 120, np.uint8)  # no colour to rotate: unchanged
    assert with_distractor(grey, "green", np.random.default_rng(0)) is grey


def _train_views(n, seed=0):
    photos = {f"g{i}": Image.fromarray(_green_on_grey(96)) for i in range(3)}
    return edit_samples(photos, n, 48, ("recolour",), False, np.random.default_rng(seed), min_scale=0.9,
                        domains={"photo": DOMAINS["photo"]})


def test_training_views_get_a_distractor_at_the_set_share(monkeypatch):
    samples = _train_views(60)
    with_far = [far_share(to_hsv(s.source), s.args[0]) >= MIN_DISTRACTOR for s in samples]
    assert 0.3 <= np.mean(with_far) <= 0.7, np.mean(with_far)
    for s in samples[:10]:  # the exact target is the edit of the view the editor sees
        assert np.array_equal(s.target, recolour(s.source, *s.args))
    monkeypatch.setattr(demo.edits, "DISTRACTOR_SHARE", 0.0)
    assert not any(far_share(to_hsv(s.source), s.args[0]) >= MIN_DISTRACTOR for s in _train_views(20))


def test_held_out_views_never_pass_through_it(monkeypatch):
    def refuse(*_):
        raise AssertionError("train_augment called")
    monkeypatch.setitem(EDIT_FAMILIES, "recolour", replace(EDIT_FAMILIES["recolour"], train_augment=refuse))
    assert len(heldout_edit_samples(2, 32, families=("recolour",))) == 2
    with pytest.raises(AssertionError, match="train_augment called"):
        _train_views(2)
