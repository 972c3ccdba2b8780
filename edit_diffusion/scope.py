"""Does this editor know this kind of edit? A cheap check in the editor's own text-encoder space.

A small editor trained on a few edit kinds (the bundled one) also learned to leave an image alone
for instructions it cannot do; users should be told so rather than wonder why nothing happened. An
editor folder may ship `instruction_index.json`: instructions it was trained on, each with its
family, one family marked as "not an edit this model does". An instruction is out of scope when
most of its k nearest index instructions (cosine similarity of the mean-pooled text-encoder states)
belong to that family. Folders without the file (every hub model) get no check and no notice.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

INDEX_FILE = "instruction_index.json"
# neighbours that vote; odd, so two families cannot tie when only two are near
NEIGHBOURS = 5


@torch.no_grad()
def embed_instructions(text_encoder, tokenizer, texts: list[str], batch: int = 256) -> torch.Tensor:
    """(N, D) unit vectors: the text encoder's last hidden states averaged over each text's real tokens
    (pads excluded; CLIP's causal mask keeps pads from changing the earlier states)."""
    device = next(text_encoder.parameters()).device
    rows = []
    for start in range(0, len(texts), batch):
        tokens = tokenizer(texts[start:start + batch], padding="max_length", truncation=True,
                           max_length=tokenizer.model_max_length, return_tensors="pt")
        mask = tokens.attention_mask.to(device)
        states = text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0].float()
        pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        rows.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
    return torch.cat(rows)


@dataclass(frozen=True)
class InstructionScope:
    embeddings: torch.Tensor     # (N, D) unit rows, one per index instruction
    families: tuple[str, ...]    # (N,) family of each index instruction
    unknown_family: str          # the family meaning "not an edit this model does"

    def family_of(self, embedding: torch.Tensor) -> str:
        """Majority family of the NEIGHBOURS most similar index instructions of one (D,) unit vector."""
        similarity = self.embeddings @ embedding
        nearest = similarity.topk(min(NEIGHBOURS, len(self.families))).indices.tolist()
        votes = Counter(self.families[i] for i in nearest)
        best = max(votes.values())
        return next(self.families[i] for i in nearest if votes[self.families[i]] == best)  # ties: the nearest

    def is_known(self, text_encoder, tokenizer, instruction: str) -> bool:
        embedding = embed_instructions(text_encoder, tokenizer, [instruction])[0]
        return self.family_of(embedding) != self.unknown_family

    def notice(self, model_name: str | None) -> str:
        """The one line users see for an out-of-scope instruction, naming what the editor does know."""
        known = ", ".join(sorted({f.replace("_", " ") for f in self.families} - {self.unknown_family}))
        return (f"note: {model_name or 'this editor'} was not trained for this kind of edit (it knows: {known}); "
                "it will most likely leave the image as it is")


def load_scope(folder: str | Path | None, text_encoder, tokenizer) -> InstructionScope | None:
    """The folder's instruction index embedded by its own text encoder; None when it has none."""
    path = Path(folder) / INDEX_FILE if folder else None
    if path is None or not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    texts = [row["text"] for row in data["instructions"]]
    families = tuple(row["family"] for row in data["instructions"])
    return InstructionScope(embed_instructions(text_encoder, tokenizer, texts), families, data["unknown_family"])


def write_index(folder: str | Path, instructions: list[tuple[str, str]], unknown_family: str) -> Path:
    """Write `instruction_index.json`: (text, family) pairs and the out-of-scope family's name."""
    path = Path(folder) / INDEX_FILE
    rows = [{"text": text, "family": family} for text, family in instructions]
    path.write_text(json.dumps({"unknown_family": unknown_family, "instructions": rows}, indent=0) + "\n",
                    encoding="utf-8")
    return path
