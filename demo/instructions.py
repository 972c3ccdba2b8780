"""Instructions of the two open-ended families: recolour ("turn the green chairs blue") and identity
(edits the bundled editor cannot do, whose target is the unchanged image).

Training sentences are drawn from templates x nouns x colour words x filler words; held-out sentences
use other templates, nouns and verbs, so the evaluation measures wording the model never saw. The
noun never changes the target: the recolour is by colour, not by object.
"""
from __future__ import annotations

import numpy as np

from .colours import COLOURS, HELDOUT_PAIRS, TRAIN_PAIR_WEIGHTS, TRAIN_PAIRS

# {a}: source colour word, {n}: noun phrase, {b}: target colour word. The source always comes first.
RECOLOUR_TRAIN = (
    "turn the {a} {n} {b}", "turn the {a} {n} to {b}", "turn the {a} {n} into {b}", "change the {a} {n} to {b}",
    "change the colour of the {a} {n} to {b}", "change the color of the {a} {n} to {b}", "make the {a} {n} {b}",
    "paint the {a} {n} {b}", "recolor the {a} {n} {b}", "recolour the {a} {n} to {b}", "the {a} {n} should be {b}",
    "{a} {n} to {b}", "make all {a} {n} {b}", "color the {a} {n} {b}", "colour the {a} {n} {b}",
    "replace {a} with {b}", "swap {a} for {b}", "everything {a} should become {b}", "make everything that is {a} {b}",
    "turn {a} into {b}", "{a} to {b}", "from {a} to {b}", "change {a} to {b}", "make the {a} ones {b}",
)
RECOLOUR_HELDOUT = (
    "i want the {a} {n} to be {b}", "could you make the {a} {n} look {b}", "switch the {a} {n} over to {b}",
    "have the {a} {n} painted {b}", "the {a} {n} need to be {b}", "set every {a} {n} to {b}",
)
NOUNS_TRAIN = (
    "chairs", "car", "suit", "roof", "flowers", "leaves", "shirt", "things", "parts", "areas", "wall", "door",
    "dress", "cup", "sofa", "boat", "house", "jacket", "bag", "ball", "umbrella", "balloons", "trees", "grass",
    "apples", "fence", "bike", "truck", "curtains", "lamp", "book", "mug", "shoes", "scarf", "tie", "bench",
    "sign", "kite", "tiles", "pillows", "bottle", "plate", "toy", "stripes", "letters", "details", "objects",
    "stuff", "bits", "sky", "water", "fur", "hair", "background", "clothes", "fruit", "paint", "pattern",
)
NOUNS_HELDOUT = ("bus", "tram", "flag", "helmet", "saucer", "uniform", "lettering", "cushions", "jersey", "vase")

# Identity: instructions outside what the bundled editor does (adding / removing objects,
# expressions, scene changes, unknown art styles). Colour words appear too, so that "add a red hat"
# is not read as a recolour: a recolour names two colours and a colour verb.
_ID_OBJECTS = ("dog", "cat", "tree", "car", "person", "bird", "rainbow", "boat", "crown", "moustache", "clock",
               "pair of sunglasses", "window", "chair", "lamp", "horse", "flower", "ball", "robot", "castle")
_ID_WHO = ("him", "her", "them", "the man", "the woman", "the cat", "the person")
_ID_TRAIN_CORES = (
    "add a {o}", "add a {c} {o}", "put a {o} in the corner", "put a {c} {o} next to {w}", "remove the {o}",
    "delete the {o}", "erase the {o}", "get rid of the {o}", "give {w} a {o}", "give {w} a {c} {o}",
    "make {w} smile", "make {w} laugh", "make {w} look surprised", "make {w} frown", "make {w} older",
    "make {w} younger", "close {w} eyes", "replace the background with a beach", "replace the {o} with a {o2}",
    "turn it into a watercolor painting", "make it look like an oil painting", "in the style of van gogh",
    "make it pixel art", "make it out of lego", "turn {w} into a statue", "add snow", "add rain",
    "move the {o} to the left", "make the {o} bigger", "make the {o} smaller", "zoom in", "rotate it",
    "add text that says hello", "make it a stained glass window", "add a {o} in the sky", "put {w} on the moon",
)
IDENTITY_HELDOUT = (
    "add a red hat", "put fireworks in the sky", "let her hold a cup of tea", "turn him into a robot",
    "make it a mosaic", "add a giraffe in the back", "remove the text", "make her hair longer",
    "add a blue balloon", "give him a green tie", "replace the sky with a starry night", "add a second moon",
    "make the person wave", "put glasses on her", "draw a spaceship above them", "make it look like claymation",
    "remove the people", "add a bowl of cherries", "give the cat wings", "turn this into an origami scene",
)


def _fill(template: str, **words: str) -> str:
    return " ".join(template.format(**words).split())  # an empty slot leaves no double space


def colour_word(name: str, rng: np.random.Generator) -> str:
    """The canonical name most of the time, a synonym otherwise (teal, violet, magenta ...)."""
    names = COLOURS[name].names
    return names[0] if len(names) == 1 or rng.random() < 0.6 else names[int(rng.integers(1, len(names)))]


def recolour_instruction(source: str, target: str, rng: np.random.Generator, heldout: bool) -> str:
    templates, nouns = (RECOLOUR_HELDOUT, NOUNS_HELDOUT) if heldout else (RECOLOUR_TRAIN, NOUNS_TRAIN)
    template = templates[int(rng.integers(0, len(templates)))]
    noun = nouns[int(rng.integers(0, len(nouns)))]
    text = _fill(template, a=colour_word(source, rng), n=noun, b=colour_word(target, rng))
    if not heldout and rng.random() < 0.25:
        text = _fill(text.replace(" the ", " "))  # without articles, as people type
    return text


def draw_recolour(rng: np.random.Generator, heldout: bool) -> tuple[str, tuple[str, str]]:
    """(instruction, (source colour, target colour)); held-out draws use held-out pairs and wording.
    Training pairs are weighted by the size of their hue rotation (TRAIN_PAIR_WEIGHTS); held-out pairs
    are drawn uniformly, as before, so the evaluation set does not change."""
    if heldout:
        source, target = HELDOUT_PAIRS[int(rng.integers(0, len(HELDOUT_PAIRS)))]
    else:
        source, target = TRAIN_PAIRS[int(rng.choice(len(TRAIN_PAIRS), p=TRAIN_PAIR_WEIGHTS))]
    return recolour_instruction(source, target, rng, heldout), (source, target)


def identity_train_phrasings() -> tuple[str, ...]:
    """Every training identity core expanded over objects, people and colours (order fixed)."""
    out = []
    colours = tuple(COLOURS)
    for i, core in enumerate(_ID_TRAIN_CORES):
        for j, obj in enumerate(_ID_OBJECTS):
            out.append(_fill(core, o=obj, o2=_ID_OBJECTS[(j + 7) % len(_ID_OBJECTS)], w=_ID_WHO[(i + j) % len(_ID_WHO)],
                             c=colours[(i + j) % len(colours)]))
    return tuple(dict.fromkeys(out))
