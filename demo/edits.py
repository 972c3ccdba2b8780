"""Edit families with exact ground truth: the stage-2 instruction triplets of the built-in editor.

Each family is a deterministic, vectorized (H, W, 3) uint8 -> (H, W, 3) uint8 function plus the
instructions that ask for it. Effects are deliberately strong so the unedited input is far from the
target (the evaluation asks the editor to halve the input's L1 error). Held-out phrasings use other
sentence templates than training, but the same key words, so a text encoder trained from scratch on
the training phrasings can still recognise them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from .colours import DISTRACTOR_SHARE, recolour, with_colour, with_distractor
from .instructions import IDENTITY_HELDOUT, RECOLOUR_HELDOUT, RECOLOUR_TRAIN, draw_recolour, \
    identity_train_phrasings

# Sentence templates. "{}" takes an adjective ("make it warmer") or, for LOOK templates, a style
# noun ("apply a sepia filter"). Train and held-out templates never share a full sentence.
TRAIN_ADJ = ("make it {}", "turn the image {}", "{}", "make this {}", "make the picture {}",
             "change it to {}", "turn this photo {}", "i want it {}", "set the image to {}", "go {}")
TRAIN_LOOK = ("apply a {} filter", "give it a {} look", "add a {} effect", "{} filter", "a {} look for the picture")
# Training sentences are a core template wrapped in a random prefix and suffix. A text encoder trained
# from scratch on a few fixed sentences reads the whole sentence shape, and an unseen wording of a known
# key word then lands anywhere (a held-out "black and white" came out yellow); with filler words
# varied independently of the family, only the key words carry the edit.
TRAIN_PREFIXES = ("", "please ", "can you ", "now ", "hey, ", "i need you to ", "quickly ", "let's ")
TRAIN_SUFFIXES = ("", " please", " thanks", " for me", " now", " a lot", " if possible", "!")
HELDOUT_ADJ = ("{} version please", "i would like this {}", "could you render the photo {}")
HELDOUT_LOOK = ("use a {} style", "{} effect on this image")


@dataclass(frozen=True)
class EditFamily:
    # exact ground truth: ((H, W, 3) uint8 RGB, *args) -> (H, W, 3) uint8 RGB
    apply: Callable[..., np.ndarray]
    # instructions (or, for drawn families, sentence templates) used to build training triplets
    train_phrasings: tuple[str, ...]
    # instructions (or templates) used only by the evaluation (never in training)
    heldout_phrasings: tuple[str, ...]
    # families with parameters draw (instruction, args) themselves, e.g. recolour's colour pair;
    # None: a phrasing from the pools above and no args
    draw: Callable[[np.random.Generator, bool], tuple[str, tuple]] | None = None
    # adapts a source view so the args can apply (recolour: the view must contain the source colour);
    # returns None when this view cannot be used
    prepare: Callable[[np.ndarray, tuple], np.ndarray | None] | None = None
    # args that make a sensible example (tests, docs)
    example_args: tuple = ()
    # training views only, after `prepare`: (view, args, rng) -> view (recolour: add a far colour that must
    # stay); the held-out views never pass through it, so the evaluation set does not depend on it
    train_augment: Callable[[np.ndarray, tuple, np.random.Generator], np.ndarray] | None = None

    def __post_init__(self):
        overlap = set(self.train_phrasings) & set(self.heldout_phrasings)
        if overlap:
            raise ValueError(f"held-out phrasings also used in training: {sorted(overlap)}")

    def instruction(self, rng: np.random.Generator, heldout: bool, filler: bool = True) -> tuple[str, tuple]:
        """(instruction, args) for one triplet: drawn, or a phrasing from the pool with no args. Drawn training
        instructions get random filler words around them unless `filler` is False."""
        if self.draw is not None:
            text, args = self.draw(rng, heldout)
            return (text if heldout or not filler else wrap(text, rng)), args
        pool = self.heldout_phrasings if heldout else self.train_phrasings
        return pool[int(rng.integers(0, len(pool)))], ()


def wrap(core: str, rng: np.random.Generator) -> str:
    """A core instruction in a random training prefix and suffix (see TRAIN_PREFIXES)."""
    return TRAIN_PREFIXES[int(rng.integers(0, len(TRAIN_PREFIXES)))] + core + \
        TRAIN_SUFFIXES[int(rng.integers(0, len(TRAIN_SUFFIXES)))]


def _phrasings(adjectives: tuple[str, ...], looks: tuple[str, ...], train_extra: tuple[str, ...],
               heldout_extra: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Expand the templates over a family's key words; order is fixed so sampling is reproducible."""
    def expand(adj_templates, look_templates, extra):
        out = [t.format(a) for t in adj_templates for a in adjectives]
        out += [t.format(lk) for t in look_templates for lk in looks]
        return tuple(dict.fromkeys(out + list(extra)))  # de-duplicated, order kept
    cores = expand(TRAIN_ADJ, TRAIN_LOOK, train_extra)
    wrapped = tuple(dict.fromkeys(f"{pre}{core}{suf}" for core in cores
                                  for pre in TRAIN_PREFIXES for suf in TRAIN_SUFFIXES))
    return {"train_phrasings": wrapped,
            "heldout_phrasings": expand(HELDOUT_ADJ, HELDOUT_LOOK, heldout_extra)}


# --- the effects (float32 maths in [0, 255], rounded once at the end) -------------------------------
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as PIL's "L" conversion


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _gray(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ _LUMA  # (H, W)


def black_and_white(rgb: np.ndarray) -> np.ndarray:
    return _to_u8(np.repeat(_gray(rgb)[:, :, None], 3, axis=2))


# The classic sepia matrix (rows give output R, G, B from input R, G, B).
_SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)


def sepia(rgb: np.ndarray) -> np.ndarray:
    return _to_u8(rgb.astype(np.float32) @ _SEPIA.T)


def invert(rgb: np.ndarray) -> np.ndarray:
    return 255 - rgb


def _gain_offset(rgb: np.ndarray, gain: tuple[float, float, float], offset: tuple[float, float, float]):
    return _to_u8(rgb.astype(np.float32) * np.array(gain, np.float32) + np.array(offset, np.float32))


def warmer(rgb: np.ndarray) -> np.ndarray:
    # strong orange cast: red and a little green up, blue down
    return _gain_offset(rgb, (1.1, 1.0, 0.75), (60.0, 15.0, -40.0))


def cooler(rgb: np.ndarray) -> np.ndarray:
    # mirror of `warmer`: blue up, red down
    return _gain_offset(rgb, (0.75, 1.0, 1.1), (-40.0, 10.0, 60.0))


def brighter(rgb: np.ndarray) -> np.ndarray:
    # halve (x0.45) the distance to white: strong, and never clips detail to flat white
    return _to_u8(255.0 - (255.0 - rgb.astype(np.float32)) * 0.45)


def darker(rgb: np.ndarray) -> np.ndarray:
    return _to_u8(rgb.astype(np.float32) * 0.4)


def more_contrast(rgb: np.ndarray) -> np.ndarray:
    # fixed mid-gray pivot (not the image mean) keeps the effect local, hence easy to learn per pixel
    return _to_u8((rgb.astype(np.float32) - 128.0) * 2.2 + 128.0)


def pencil_sketch(rgb: np.ndarray) -> np.ndarray:
    """Colour-dodge sketch: gray divided by the blurred inverse gray (the usual pencil-sketch trick)."""
    gray = _gray(rgb)
    # Kernel scales with image size so the stroke width looks the same at 64 px and 512 px.
    sigma = max(1.0, min(rgb.shape[:2]) / 64.0)
    blurred_inv = cv2.GaussianBlur(255.0 - gray, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    sketch = gray * 255.0 / np.maximum(255.0 - blurred_inv, 1.0)
    return _to_u8(np.repeat(np.minimum(sketch, 255.0)[:, :, None], 3, axis=2))


def thermal(rgb: np.ndarray) -> np.ndarray:
    """Heat-map false colour: gray level mapped through OpenCV's JET colour map (blue cold, red hot)."""
    bgr = cv2.applyColorMap(_to_u8(_gray(rgb)), cv2.COLORMAP_JET)
    return np.ascontiguousarray(bgr[:, :, ::-1])


# --- the registry -----------------------------------------------------------------------------------
EDIT_FAMILIES: dict[str, EditFamily] = {
    "black_and_white": EditFamily(black_and_white, **_phrasings(
        ("black and white", "grayscale", "greyscale", "monochrome", "colorless", "colourless", "desaturated",
         "gray", "grey", "b&w"), ("black and white", "grayscale", "greyscale", "monochrome", "no color"),
        ("convert to grayscale", "remove the colors", "drop all the color", "remove all colour", "no color",
         "no colour", "without colour", "take the colour out", "only shades of gray", "desaturate it"),
        ("monochrome photo", "strip the colors out", "no colour at all", "desaturate the photo",
         "make it black & white", "take out every colour"))),
    "sepia": EditFamily(sepia, **_phrasings(
        ("sepia", "sepia toned", "old fashioned brown"), ("sepia", "vintage sepia"),
        ("convert to sepia", "make it look like an old brown photo"),
        ("sepia tone the picture", "old brown photograph look"))),
    "invert": EditFamily(invert, **_phrasings(
        ("inverted", "negative", "color inverted"), ("negative", "color inversion"),
        ("invert the colors", "invert the image", "turn it into a photo negative"),
        ("inverted colors", "negative of this picture"))),
    "warmer": EditFamily(warmer, **_phrasings(
        ("warmer", "warm", "orange toned"), ("warm", "warm orange"),
        ("increase the warmth", "add warm tones"),
        ("much warmer colors", "warm it up"))),
    "cooler": EditFamily(cooler, **_phrasings(
        ("cooler", "cold", "blue toned"), ("cool", "cold blue"),
        ("decrease the warmth", "add cool blue tones"),
        ("much cooler colors", "cool it down"))),
    "brighter": EditFamily(brighter, **_phrasings(
        ("brighter", "lighter", "more bright"), ("bright", "light"),
        ("increase the brightness", "brighten the image", "lighten it"),
        ("more brightness", "brighten it up"))),
    "darker": EditFamily(darker, **_phrasings(
        ("darker", "dim", "more dark"), ("dark", "dim"),
        ("decrease the brightness", "darken the image", "reduce the light"),
        ("less brightness", "darken it"))),
    "more_contrast": EditFamily(more_contrast, **_phrasings(
        ("high contrast", "more contrasty", "punchier"), ("high contrast", "strong contrast"),
        ("increase the contrast", "boost the contrast", "add more contrast"),
        ("more contrast", "contrast boost"))),
    "pencil_sketch": EditFamily(pencil_sketch, **_phrasings(
        ("a pencil sketch", "a pencil drawing", "sketched"), ("pencil sketch", "pencil drawing"),
        ("draw it as a pencil sketch", "turn it into a sketch"),
        ("pencil sketch of this", "sketch it with a pencil"))),
    "thermal": EditFamily(thermal, **_phrasings(
        ("thermal", "a heat map", "infrared"), ("thermal camera", "heat map"),
        ("show it as a thermal image", "convert to a heat map"),
        ("thermal image", "heat map colors"))),
}


def identity(rgb: np.ndarray) -> np.ndarray:
    return rgb.copy()


def _draw_identity(rng: np.random.Generator, heldout: bool) -> tuple[str, tuple]:
    pool = IDENTITY_HELDOUT if heldout else _IDENTITY_TRAIN
    return pool[int(rng.integers(0, len(pool)))], ()


def _prepare_recolour(rgb: np.ndarray, args: tuple) -> np.ndarray | None:
    return with_colour(rgb, args[0])


def _distract_recolour(rgb: np.ndarray, args: tuple, rng: np.random.Generator) -> np.ndarray:
    return with_distractor(rgb, args[0], rng) if rng.random() < DISTRACTOR_SHARE else rgb


_IDENTITY_TRAIN = identity_train_phrasings()
# Local and "leave it alone" families (their README rows): recolour by colour name, and identity
# for instructions outside the editor's reach.
EDIT_FAMILIES["recolour"] = EditFamily(recolour, RECOLOUR_TRAIN, RECOLOUR_HELDOUT, draw=draw_recolour,
                                       prepare=_prepare_recolour, example_args=("green", "blue"),
                                       train_augment=_distract_recolour)
EDIT_FAMILIES["identity"] = EditFamily(identity, _IDENTITY_TRAIN, IDENTITY_HELDOUT, draw=_draw_identity)
GLOBAL_FAMILIES: tuple[str, ...] = tuple(f for f in EDIT_FAMILIES if f not in ("recolour", "identity"))


def apply_edit(family: str, rgb: np.ndarray, *args) -> np.ndarray:
    """Ground-truth edit by family name; unknown names raise listing the valid ones."""
    if family not in EDIT_FAMILIES:
        raise ValueError(f"unknown edit family {family!r}; choose one of {', '.join(EDIT_FAMILIES)}")
    return EDIT_FAMILIES[family].apply(rgb, *args)
