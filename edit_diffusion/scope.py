"""Does this editor know this kind of edit? A cheap nearest-neighbour check over its training instructions.

A small editor trained on a few edit kinds (the bundled one) cannot add a hat or change an expression;
run anyway, it smears a learned colour cast over the picture. An editor folder may ship
`instruction_index.json`: instructions it was trained on, each with its family, one family marked as
"not an edit this model does". An instruction is out of scope when most of its k nearest index
instructions belong to that family; the editor then leaves the image unchanged and says so in one line
(`--edit-out-of-scope` runs the model anyway). Folders without the file (every hub model) get no check.

Nearness is the cosine of bag-of-token counts (the editor's own tokenizer), not of text-encoder states:
measured on held-out wording (demo/scope_index.py), the bundled editor's from-scratch encoder,
mean-pooled, raised the notice on 47 (the previous editor) and 127 (the new one, mid-training) of 301
in-scope instructions; token counts over the index's core instructions raised it on 1. A small encoder
trained for one task keeps what the UNet needs, not a similarity between sentences.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

INDEX_FILE = "instruction_index.json"
# neighbours that vote; odd, so two families cannot tie when only two are near
NEIGHBOURS = 5

TokenVector = dict[int, float]


def token_vectors(tokenizer, texts: list[str]) -> list[TokenVector]:
    """Unit-length bag-of-token counts of each text (special tokens left out)."""
    vectors = []
    for ids in tokenizer(texts, add_special_tokens=False).input_ids:
        counts = Counter(ids)
        norm = math.sqrt(sum(c * c for c in counts.values())) or 1.0
        vectors.append({token: c / norm for token, c in counts.items()})
    return vectors


def cosine(a: TokenVector, b: TokenVector) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(v * b.get(k, 0.0) for k, v in a.items())


@dataclass(frozen=True)
class InstructionScope:
    vectors: list[TokenVector]   # one per index instruction
    families: tuple[str, ...]    # family of each index instruction
    unknown_family: str          # the family meaning "not an edit this model does"

    def family_of(self, vector: TokenVector) -> str:
        """Majority family of the NEIGHBOURS most similar index instructions."""
        similarity = [cosine(vector, v) for v in self.vectors]
        nearest = sorted(range(len(similarity)), key=lambda i: -similarity[i])[:NEIGHBOURS]
        votes = Counter(self.families[i] for i in nearest)
        best = max(votes.values())
        return next(self.families[i] for i in nearest if votes[self.families[i]] == best)  # ties: the nearest

    def is_known(self, tokenizer, instruction: str) -> bool:
        return self.family_of(token_vectors(tokenizer, [instruction])[0]) != self.unknown_family

    def notice(self, model_name: str | None, left_unchanged: bool = True) -> str:
        """The one line users see for an out-of-scope instruction, naming what the editor does know and what
        happens: the image is left unchanged, unless the user asked to run the model anyway."""
        known = ", ".join(sorted({f.replace("_", " ") for f in self.families} - {self.unknown_family}))
        outcome = ("so the image is left unchanged (--edit-out-of-scope runs the model anyway)" if left_unchanged
                   else "so the result will not follow this instruction")
        return f"note: {model_name or 'this editor'} was not trained for this kind of edit (it knows: {known}); {outcome}"


def load_scope(folder: str | Path | None, tokenizer) -> InstructionScope | None:
    """The folder's instruction index in its own tokenizer's tokens; None when it has none."""
    path = Path(folder) / INDEX_FILE if folder else None
    if path is None or not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    texts = [row["text"] for row in data["instructions"]]
    families = tuple(row["family"] for row in data["instructions"])
    return InstructionScope(token_vectors(tokenizer, texts), families, data["unknown_family"])


def write_index(folder: str | Path, instructions: list[tuple[str, str]], unknown_family: str) -> Path:
    """Write `instruction_index.json`: (text, family) pairs and the out-of-scope family's name."""
    path = Path(folder) / INDEX_FILE
    rows = [{"text": text, "family": family} for text, family in instructions]
    path.write_text(json.dumps({"unknown_family": unknown_family, "instructions": rows}, indent=0) + "\n",
                    encoding="utf-8")
    return path
