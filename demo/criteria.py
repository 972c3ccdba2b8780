"""Per-edit success tests of the families that a plain L1 ratio does not judge well.

A recolour touches a small part of the image, so its L1 ratio says little: an editor that recolours the
whole picture can score as well as one that recolours the right pixels. Identity's target is the input,
so its input error is zero and a ratio does not exist. Each test takes (source, output, args) as
(H, W, 3) uint8 RGB arrays and returns (passed, measurements); a family passes when at least
SUCCESS_RATE of its edits pass.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .colours import COLOURS, clearly, clearly_not, hue_distance, to_hsv

SUCCESS_RATE = 0.8
# recolour: share of the clearly-A pixels that must end near B, how near (hue degrees), how saturated,
# and how much the clearly-not-A pixels may change (mean absolute, 0..1)
RECOLOUR_HIT_SHARE, RECOLOUR_HUE_TOLERANCE, RECOLOUR_MIN_SATURATION, RECOLOUR_MAX_SPILL = 0.6, 35.0, 0.15, 0.05
# identity: the largest mean absolute change (0..1) of an instruction the editor does not know
IDENTITY_MAX_CHANGE = 0.04

Check = Callable[[np.ndarray, np.ndarray, tuple], tuple[bool, dict]]


def _mean_abs(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    diff = np.abs(a.astype(np.float32) - b.astype(np.float32)) / 255.0
    if mask is not None:
        if not mask.any():
            return 0.0
        diff = diff[mask]
    return float(diff.mean())


def recolour_check(source: np.ndarray, output: np.ndarray, args: tuple) -> tuple[bool, dict]:
    """At least 60% of the clearly-A pixels within 35 degrees of B's hue with saturation > 0.15, and the
    clearly-not-A pixels changed by at most 0.05 on average."""
    colour_a, colour_b = args
    hsv_in, hsv_out = to_hsv(source), to_hsv(output)
    is_a, not_a = clearly(hsv_in, colour_a), clearly_not(hsv_in, colour_a)
    near_b = (hue_distance(hsv_out[..., 0], COLOURS[colour_b].hue) <= RECOLOUR_HUE_TOLERANCE) \
        & (hsv_out[..., 1] > RECOLOUR_MIN_SATURATION)
    hit = float(near_b[is_a].mean()) if is_a.any() else 0.0
    spill = _mean_abs(source, output, not_a)
    return hit >= RECOLOUR_HIT_SHARE and spill <= RECOLOUR_MAX_SPILL, {"hit": hit, "spill": spill}


def identity_check(source: np.ndarray, output: np.ndarray, args: tuple) -> tuple[bool, dict]:
    """The image is left (nearly) alone: mean absolute change at most 0.04."""
    change = _mean_abs(source, output)
    return change <= IDENTITY_MAX_CHANGE, {"change": change}


# family name -> its per-edit test; families not listed are judged by the L1 ratio alone
CHECKS: dict[str, Check] = {"recolour": recolour_check, "identity": identity_check}
