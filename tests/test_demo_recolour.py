"""Recolour by colour name and the identity family: exact targets, held-out pairs and the per-edit
criteria of the evaluation (they must pass the exact edit and fail the wrong ones)."""
import numpy as np
import pytest

from demo.colours import (COLOURS, HELDOUT_PAIRS, MAX_COLOUR_FRACTION, SOFT_EDGE, TRAIN_PAIRS, clearly, recolour,
                          rotate_hue, rotation, to_hsv, with_colour)
from demo.criteria import identity_check, recolour_check
from demo.edits import EDIT_FAMILIES
from demo.instructions import IDENTITY_HELDOUT, NOUNS_HELDOUT, NOUNS_TRAIN, draw_recolour
from demo.samples import DOMAINS, edit_samples, family_plan, heldout_edit_samples


def _hsv_pixel(h, s, v):
    import cv2
    px = np.array([[[h, s, v]]], np.float32)
    return np.clip(np.rint(cv2.cvtColor(px, cv2.COLOR_HSV2RGB) * 255), 0, 255).astype(np.uint8)


def test_recolour_known_values():
    px = np.array([[[0, 255, 0], [255, 0, 0], [128, 128, 128], [30, 90, 30]]], np.uint8)
    out = recolour(px, "green", "blue")
    assert out[0, 0].tolist() == [0, 64, 255]  # pure green -> hue 225, same saturation and value
    assert out[0, 1].tolist() == [255, 0, 0]  # red is not green
    assert out[0, 2].tolist() == [128, 128, 128]  # grey has no colour
    hsv_in, hsv_out = to_hsv(px[:, 3:]), to_hsv(out[:, 3:])  # dark green keeps its value and saturation
    assert abs(hsv_out[0, 0, 0] - 225) < 2 and np.allclose(hsv_in[0, 0, 1:], hsv_out[0, 0, 1:], atol=0.01)


def test_band_edge_is_soft():
    green = COLOURS["green"]
    half = _hsv_pixel(green.hue + green.width + SOFT_EDGE / 2, 1.0, 1.0)
    out_hue = to_hsv(recolour(half, "green", "blue"))[0, 0, 0]
    in_hue = to_hsv(half)[0, 0, 0]
    assert (out_hue - in_hue) == pytest.approx((225 - 120) / 2, abs=3)  # half the rotation
    outside = _hsv_pixel(green.hue + green.width + SOFT_EDGE + 1, 1.0, 1.0)
    assert np.array_equal(recolour(outside, "green", "blue"), outside)


def test_every_band_stays_within_60_degrees():
    # the evaluation's "clearly not A" pixels (> 60 degrees away) must be untouched by the exact edit
    for colour in COLOURS.values():
        assert colour.width + SOFT_EDGE < 60


def test_heldout_pairs_never_drawn_for_training_and_every_colour_is_trained_both_ways():
    assert len(HELDOUT_PAIRS) >= 10 and not set(HELDOUT_PAIRS) & set(TRAIN_PAIRS)
    rng = np.random.default_rng(0)
    drawn = {draw_recolour(rng, heldout=False)[1] for _ in range(3000)}
    assert drawn == set(TRAIN_PAIRS)
    assert {a for a, _ in TRAIN_PAIRS} == set(COLOURS) == {b for _, b in TRAIN_PAIRS}
    heldout = {draw_recolour(rng, heldout=True)[1] for _ in range(500)}
    assert heldout == set(HELDOUT_PAIRS)


def test_heldout_wording_is_not_in_training():
    rng = np.random.default_rng(1)
    train = {draw_recolour(rng, heldout=False)[0] for _ in range(3000)}
    heldout = [draw_recolour(rng, heldout=True)[0] for _ in range(300)]
    assert not set(heldout) & train
    assert all(any(n in h for n in NOUNS_HELDOUT) for h in heldout)
    assert not set(NOUNS_HELDOUT) & set(NOUNS_TRAIN)
    assert not set(IDENTITY_HELDOUT) & set(EDIT_FAMILIES["identity"].train_phrasings)


def test_with_colour_supplies_missing_colours_by_hue_rotation():
    rng = np.random.default_rng(0)
    img = np.zeros((32, 32, 3), np.uint8)
    img[:, :16] = (230, 30, 30)  # red half, grey half
    img[:, 16:] = 90
    assert with_colour(img, "red") is img  # already there: unchanged
    purple = with_colour(img, "purple")
    assert purple is not None and np.array_equal(purple[:, 16:], img[:, 16:])
    assert abs(to_hsv(purple)[0, 0, 0] - COLOURS["purple"].hue) < 2
    assert with_colour(np.full((16, 16, 3), 120, np.uint8), "green") is None  # no colour at all
    assert rng is not None


def test_with_colour_turns_a_mostly_colour_view_into_a_local_one():
    # 90% red, 10% blue: "turn the red things green" would be a near-global hue shift, so the view is
    # rotated until red covers a share in range (the blue tenth lands on red).
    img = np.zeros((40, 40, 3), np.uint8)
    img[:36] = (230, 30, 30)
    img[36:] = (30, 30, 230)
    out = with_colour(img, "red")
    assert out is not None and out is not img
    share = clearly(to_hsv(out), "red").mean()
    assert 0.03 <= share <= MAX_COLOUR_FRACTION and share == pytest.approx(0.1, abs=0.01)
    assert with_colour(np.full((16, 16, 3), (230, 30, 30), np.uint8), "red") is None  # one hue everywhere


def test_retries_spread_over_the_usable_photos():
    # Five grey photos and two coloured ones: the slots of the grey ones go to both coloured photos,
    # not all to the one that follows them in order.
    from PIL import Image
    grey = {f"grey{i}": Image.new("RGB", (64, 64), (120, 120, 120)) for i in range(5)}
    half = np.full((64, 64, 3), 120, np.uint8)
    half[:, :32] = (40, 200, 40)
    photos = {**grey, "green_a": Image.fromarray(half), "green_b": Image.fromarray(half)}
    samples = edit_samples(photos, 70, 32, ("recolour",), False, np.random.default_rng(0), min_scale=0.9,
                           domains={"photo": DOMAINS["photo"]})
    counts = [sum(s.photo == name for s in samples) for name in ("green_a", "green_b")]
    assert sum(counts) == 70 and min(counts) >= 20, counts


def _two_colour_image():
    img = np.zeros((32, 32, 3), np.uint8)
    img[:, :12] = (40, 200, 40)  # green
    img[:, 12:24] = (210, 40, 40)  # red
    img[:, 24:] = 128  # grey
    return img


def test_recolour_check_passes_the_exact_edit_and_fails_wrong_ones():
    img = _two_colour_image()
    ok, m = recolour_check(img, recolour(img, "green", "blue"), ("green", "blue"))
    assert ok and m["hit"] == 1.0 and m["spill"] == 0.0
    assert not recolour_check(img, img, ("green", "blue"))[0]  # nothing done
    # the whole picture's hue rotated: the red part turns too (the bundled editor's old behaviour)
    wholesale = rotate_hue(img, COLOURS["blue"].hue - COLOURS["green"].hue)
    ok, m = recolour_check(img, wholesale, ("green", "blue"))
    assert m["hit"] == 1.0 and m["spill"] > 0.05 and not ok
    assert not recolour_check(img, recolour(img, "green", "pink"), ("green", "blue"))[0]  # wrong target


def test_identity_check():
    img = _two_colour_image()
    assert identity_check(img, img.copy(), ())[0]
    assert not identity_check(img, 255 - img, ())[0]


def test_family_plan_shares():
    plan = family_plan(100, ("recolour", "identity", "invert", "sepia"), {"recolour": 0.35, "identity": 0.1},
                       np.random.default_rng(0))
    assert len(plan) == 100 and plan.count("recolour") == 35 and plan.count("identity") == 10
    assert plan.count("invert") + plan.count("sepia") == 55 and abs(plan.count("invert") - plan.count("sepia")) <= 1


def test_heldout_recolour_views_hold_the_source_colour():
    from demo.colours import clearly
    samples = heldout_edit_samples(6, 48, 0, ("recolour",))
    assert len(samples) == 6 and {s.domain for s in samples} == {"photo", "cartoon"}
    for s in samples:
        assert s.args in HELDOUT_PAIRS
        assert clearly(to_hsv(s.source), s.args[0]).mean() >= 0.03


def test_training_pairs_are_drawn_in_proportion_to_their_rotation():
    # long turns (>= 90 degrees) are the hard ones and every held-out pair is one: 71% of training draws
    # instead of the 50% a uniform draw gives; the shortest turn is still drawn
    rng = np.random.default_rng(0)
    draws = [draw_recolour(rng, heldout=False)[1] for _ in range(20000)]
    long_share = np.mean([abs(rotation(a, b)) >= 90 for a, b in draws])
    assert 0.69 < long_share < 0.73
    counts = {pair: draws.count(pair) for pair in TRAIN_PAIRS}
    assert counts[("red", "blue")] > 4 * counts[("orange", "yellow")] > 0  # 135 vs 25 degrees
    assert rotation("red", "green") == 120 and rotation("green", "red") == -120 and rotation("cyan", "red") == -180
