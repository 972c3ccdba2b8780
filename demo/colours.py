"""Colour names, hue maths and the exact recolour edit ("turn the green chairs blue").

The selection is by colour, not by object: every pixel whose hue lies in colour A's band (and that is
saturated and bright enough to have a colour at all) gets B's hue, keeping its HSV saturation and
value; everything else is unchanged. So "the green chairs" also recolours green leaves; the README
says so. Hues are in degrees on OpenCV's float HSV scale (H in [0, 360), S and V in [0, 1]).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Colour:
    # the usual hue of the name, degrees
    hue: float
    # half-width (degrees) of the band that is fully recoloured; wide for colours that cover a wide
    # hue span in real photos (foliage greens, sky blues), narrow where neighbours are close
    # (orange sits 25-30 degrees from red and from yellow)
    width: float
    # words that name it in instructions (the first is the canonical name)
    names: tuple[str, ...]


COLOURS: dict[str, Colour] = {
    "red": Colour(0.0, 15.0, ("red", "scarlet")),
    "orange": Colour(30.0, 12.0, ("orange",)),
    "yellow": Colour(55.0, 12.0, ("yellow", "golden")),
    "green": Colour(120.0, 35.0, ("green",)),
    "cyan": Colour(180.0, 18.0, ("cyan", "teal", "turquoise")),
    "blue": Colour(225.0, 28.0, ("blue",)),
    "purple": Colour(275.0, 22.0, ("purple", "violet")),
    "pink": Colour(320.0, 20.0, ("pink", "magenta")),
}

# Band edges fade to zero over this many degrees beyond `width` (soft edges: no hard seams in
# gradients). width + SOFT_EDGE stays below 60 for every colour, so pixels more than 60 degrees away
# are never touched (the evaluation's "clearly not A").
SOFT_EDGE = 15.0
# Saturation and value ramps: grey, white and near-black pixels have no reliable hue and stay as they are.
SAT_RAMP = (0.15, 0.30)
VAL_RAMP = (0.12, 0.24)

# Ordered (A, B) pairs never used in training: the evaluation asks for these, to show the model
# composes "from A" and "to B" instead of memorising pairs. Every colour stays a source and a
# target in training.
HELDOUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "green"), ("orange", "purple"), ("yellow", "blue"), ("green", "pink"), ("cyan", "red"),
    ("blue", "yellow"), ("purple", "orange"), ("pink", "cyan"), ("green", "orange"), ("blue", "red"),
    ("red", "cyan"), ("yellow", "purple"),
)
TRAIN_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (a, b) for a in COLOURS for b in COLOURS if a != b and (a, b) not in HELDOUT_PAIRS)


def rotation(source: str, target: str) -> float:
    """Signed hue rotation (degrees, in [-180, 180)) that takes `source`'s hue to `target`'s, the short way round."""
    return (COLOURS[target].hue - COLOURS[source].hue + 180.0) % 360.0 - 180.0


# Training pairs are drawn in proportion to their rotation's size. Drawn uniformly, half of them turn a
# hue by less than 90 degrees (neighbours such as red to orange, learned first and passed every time),
# and the shipped editor (trained that way) undershot long turns: red to green ended at hues 54-90,
# red to purple 20-45 degrees short. Weighting by size raises the share of turns of 90 degrees or more
# from 50% to 71%, and the smallest pair (orange to yellow, 25 degrees) is still drawn 0.28 times as
# often as uniform.
_TRAIN_TURNS = [abs(rotation(a, b)) for a, b in TRAIN_PAIRS]
TRAIN_PAIR_WEIGHTS: tuple[float, ...] = tuple(turn / sum(_TRAIN_TURNS) for turn in _TRAIN_TURNS)


def to_hsv(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> float32 HSV, H in degrees [0, 360), S and V in [0, 1]."""
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)


def hue_distance(hue: np.ndarray, centre: float) -> np.ndarray:
    """Absolute circular distance in degrees, in [0, 180]."""
    d = np.abs((hue - centre) % 360.0)
    return np.minimum(d, 360.0 - d)


def _ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def colour_weight(hsv: np.ndarray, colour: str) -> np.ndarray:
    """(H, W) in [0, 1]: how much each pixel counts as `colour` (1 inside the band, soft edges)."""
    spec = COLOURS[colour]
    in_band = _ramp(-hue_distance(hsv[..., 0], spec.hue), -(spec.width + SOFT_EDGE), -spec.width)
    return in_band * _ramp(hsv[..., 1], *SAT_RAMP) * _ramp(hsv[..., 2], *VAL_RAMP)


def recolour(rgb: np.ndarray, source: str, target: str) -> np.ndarray:
    """Exact target: rotate the hue of colour-`source` pixels by (target - source), weighted by the band.
    A rotation (not a hue overwrite) keeps the shading inside a region: a pixel 10 degrees off the
    source hue ends 10 degrees off the target hue."""
    if source not in COLOURS or target not in COLOURS:
        raise ValueError(f"recolour: unknown colour in {(source, target)}; choose from {', '.join(COLOURS)}")
    hsv = to_hsv(rgb)
    delta = rotation(source, target)
    out = hsv.copy()
    out[..., 0] = (hsv[..., 0] + colour_weight(hsv, source) * delta) % 360.0
    back = cv2.cvtColor(out, cv2.COLOR_HSV2RGB)
    return np.clip(np.rint(back * 255.0), 0, 255).astype(np.uint8)


def clearly_coloured(hsv: np.ndarray) -> np.ndarray:
    """Bool mask of pixels saturated and bright enough to have a clear hue (the evaluation's bars)."""
    return (hsv[..., 1] > 0.35) & (hsv[..., 2] > 0.25)


def clearly(hsv: np.ndarray, colour: str, max_distance: float = 12.0) -> np.ndarray:
    """Bool mask of pixels that are unambiguously `colour` (the evaluation's definition)."""
    return (hue_distance(hsv[..., 0], COLOURS[colour].hue) <= max_distance) & clearly_coloured(hsv)


def clearly_not(hsv: np.ndarray, colour: str) -> np.ndarray:
    """Bool mask of pixels that are unambiguously not `colour`: hue over 60 degrees away, or grey."""
    return (hue_distance(hsv[..., 0], COLOURS[colour].hue) > 60.0) | (hsv[..., 1] < 0.1)


def rotate_hue(rgb: np.ndarray, degrees: float) -> np.ndarray:
    """Hue-rotated copy (a photo in other colours: supplies colours the photos lack, e.g. purple)."""
    hsv = to_hsv(rgb)
    hsv[..., 0] = (hsv[..., 0] + degrees) % 360.0
    return np.clip(np.rint(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0), 0, 255).astype(np.uint8)


# A view more than this share clearly colour A makes "turn the A things B" a near-global hue shift,
# not the local edit the family teaches: the first recolour data drew a quarter of its views that way
# (crops of the orange-red `retina` photo), and the editor learned to tint everything. 0.7 lies above
# every held-out evaluation view (their largest share is 0.65), so the cap leaves the evaluation as it was.
MAX_COLOUR_FRACTION = 0.7


def _hue_peaks(hsv: np.ndarray, coloured: np.ndarray) -> list[float]:
    """Median hue of each occupied 10-degree bin of the coloured pixels, most common bin first."""
    hues = hsv[..., 0][coloured]
    counts, edges = np.histogram(hues, bins=36, range=(0.0, 360.0))
    order = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    return [float(np.median(hues[(hues >= edges[i]) & (hues < edges[i + 1])])) for i in order]


def with_colour(rgb: np.ndarray, colour: str, min_fraction: float = 0.03,
                max_fraction: float = MAX_COLOUR_FRACTION) -> np.ndarray | None:
    """A view whose clearly-`colour` share lies in [min_fraction, max_fraction]: `rgb` itself when it
    does; else a hue-rotated copy that puts one of its saturated hues on `colour` (the most common
    hue that gives a share in range); None when no rotation does (too few coloured pixels, or one
    hue everywhere)."""
    def in_range(hsv: np.ndarray) -> bool:
        return min_fraction <= clearly(hsv, colour).mean() <= max_fraction

    hsv = to_hsv(rgb)
    if in_range(hsv):
        return rgb
    coloured = clearly_coloured(hsv)
    if coloured.mean() < 2 * min_fraction:
        return None
    for peak in _hue_peaks(hsv, coloured)[:6]:
        rotated = rotate_hue(rgb, COLOURS[colour].hue - peak)
        if in_range(to_hsv(rotated)):
            return rotated
    return None


# Share of training recolour views given a distractor (below) when they hold no other colour. Measured on
# 600 training views of the earlier recipe: only 14% held 5% or more of clearly coloured pixels of a hue over
# 60 degrees from A (the photos, hue-rotated to supply A, are mostly one hue), so the editor seldom saw another
# colour stay as it was; on held-out photos it turned purple areas orange when asked for "green to orange".
DISTRACTOR_SHARE = 0.5
# A distractor must make up at least this share of the view (clearly coloured, over 60 degrees from A).
MIN_DISTRACTOR = 0.05


def far_share(hsv: np.ndarray, colour: str) -> float:
    """Share of pixels that are clearly coloured (the evaluation's saturation and value bars) and whose hue
    lies over 60 degrees from `colour`'s: the other colours an edit of `colour` must leave alone."""
    return float((clearly_coloured(hsv) & (hue_distance(hsv[..., 0], COLOURS[colour].hue) > 60.0)).mean())


def _soft_ellipse(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(H, W) float mask in [0, 1]: a random ellipse (radii 25-55% of the side) with feathered edges, so the
    pasted region has no hard seam."""
    h, w = size
    cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
    ry, rx = rng.uniform(0.25, 0.55) * h, rng.uniform(0.25, 0.55) * w
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    inside = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0).astype(np.float32)
    sigma = 0.03 * max(h, w)
    return cv2.GaussianBlur(inside, (0, 0), sigmaX=sigma, sigmaY=sigma)


def with_distractor(rgb: np.ndarray, colour: str, rng: np.random.Generator, tries: int = 6) -> np.ndarray:
    """A view that also holds a colour far from `colour`, so "turn the A things B" shows other colours staying:
    a soft elliptic region of `rgb` is replaced by a copy hue-rotated 75-285 degrees, which moves the A
    pixels in it (and every other hue) elsewhere on the wheel. Kept only when the result still has a share
    of clearly-`colour` pixels in [0.03, MAX_COLOUR_FRACTION] and at least MIN_DISTRACTOR of far hues;
    `rgb` itself when it already has that much of them, or when no try gives it. The exact target is
    computed from the returned view, so what the region holds never makes a target wrong."""
    if far_share(to_hsv(rgb), colour) >= MIN_DISTRACTOR:
        return rgb
    for _ in range(tries):
        rotated = rotate_hue(rgb, rng.uniform(75.0, 285.0)).astype(np.float32)
        mask = _soft_ellipse(rgb.shape[:2], rng)[..., None]
        mixed = np.clip(np.rint(mask * rotated + (1.0 - mask) * rgb), 0, 255).astype(np.uint8)
        hsv = to_hsv(mixed)
        if 0.03 <= clearly(hsv, colour).mean() <= MAX_COLOUR_FRACTION and far_share(hsv, colour) >= MIN_DISTRACTOR:
            return mixed
    return rgb
