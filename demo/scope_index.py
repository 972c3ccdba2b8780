"""The bundled editor's instruction index (edit_diffusion/scope.py) and how well it tells edits apart.

The index holds training instructions only: drawn from every family's training wording with a fixed
seed. The measurement uses held-out wording only: in-scope instructions that raise the notice are
false alarms, out-of-scope (identity) instructions that raise it are detections.
"""
from __future__ import annotations

import numpy as np

from .edits import EDIT_FAMILIES

UNKNOWN_FAMILY = "identity"


def index_instructions(seed: int = 0, per_family: int = 120, unknown: int = 360,
                       known: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    """(text, family) pairs of training instructions of the `known` families (default: all), `per_family`
    each, and `unknown` of the out-of-scope family (its wording is the most varied), de-duplicated. Drawn
    families enter without their random filler words ("can you ... please"), which would otherwise dominate
    the token counts: with them, 15 of 301 held-out in-scope instructions raised the notice; without, 1."""
    known = tuple(f for f in EDIT_FAMILIES if f != UNKNOWN_FAMILY) if known is None else known
    rng = np.random.default_rng(seed)
    pairs: dict[str, str] = {}
    for family in (*known, UNKNOWN_FAMILY):
        for _ in range(unknown if family == UNKNOWN_FAMILY else per_family):
            pairs.setdefault(EDIT_FAMILIES[family].instruction(rng, heldout=False, filler=False)[0], family)
    return list(pairs.items())


def heldout_instructions(seed: int = 0, recolours: int = 120) -> list[tuple[str, str]]:
    """Held-out wording: every held-out phrasing of the fixed families, drawn held-out recolours."""
    rng = np.random.default_rng(seed + 1)
    out = [(p, family) for family, spec in EDIT_FAMILIES.items() if spec.draw is None
           for p in spec.heldout_phrasings]
    out += [(EDIT_FAMILIES["recolour"].instruction(rng, heldout=True)[0], "recolour") for _ in range(recolours)]
    return out + [(p, UNKNOWN_FAMILY) for p in EDIT_FAMILIES[UNKNOWN_FAMILY].heldout_phrasings]


def scope_report(editor, seed: int = 0) -> dict:
    """False alarms on held-out wording of the families the editor's index knows, and detections of held-out
    wording it does not know (the out-of-scope family, and any family missing from the index)."""
    known = set(editor.scope.families) - {editor.scope.unknown_family}
    flagged = [(family in known, editor.scope_notice(text) is not None) for text, family in heldout_instructions(seed)]
    in_scope = [hit for is_known, hit in flagged if is_known]
    unknown = [hit for is_known, hit in flagged if not is_known]
    return {"false_alarms": int(sum(in_scope)), "in_scope": len(in_scope),
            "detected": int(sum(unknown)), "out_of_scope": len(unknown)}
