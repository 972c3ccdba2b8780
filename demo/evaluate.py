"""Evaluate the default models on photos and phrasings held out from training.

    python -m demo.evaluate --gan checkpoints/gan.safetensors --editor checkpoints/editor

Stage 2: for each edit family, L1 (mean absolute difference, [0, 1] scale) of the edited image to the
exact ground-truth edit, and of the unedited input to it; a global family passes when the editor's
error is at most half the input's. Recolour and identity are judged per edit (demo/criteria.py) and
pass when at least 80% of their edits do. Stage 1: L1 of the generator output to cartoonize(photo) against L1 of the
photo itself to it; passes when the generator is closer. Exit code 1 when a criterion fails.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from common.checkpoints import save_json
from common.cli import check_fields, option, parse_config
from common.errors import UserInputError, cli_errors
from common.images import list_images, load_image

from .cartoon import cartoonize
from .criteria import CHECKS, SUCCESS_RATE
from .edits import EDIT_FAMILIES
from .samples import EditSample, heldout_edit_samples, heldout_photo_views
from .scope_index import scope_report

StylizeFn = Callable[[Image.Image], Image.Image]
EditFn = Callable[[Image.Image, str], Image.Image]

# Pass criteria of the issue: the editor must at least halve the input's error.
EDIT_MAX_RATIO = 0.5


def l1(a: np.ndarray | Image.Image, b: np.ndarray | Image.Image) -> float:
    """Mean absolute difference of two same-shape uint8 RGB images, on a [0, 1] scale."""
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    if a.shape != b.shape:
        raise ValueError(f"l1: shapes differ {a.shape} vs {b.shape}")
    return float(np.abs(a - b).mean() / 255.0)


def _same_size(out: Image.Image, ref: Image.Image, what: str) -> Image.Image:
    """Models promise the input size; if one does not, compare anyway but say so (never hide it)."""
    out = out.convert("RGB")
    if out.size != ref.size:
        print(f"warning: {what} returned {out.size}, input was {ref.size}; resized for the metric",
              file=sys.stderr)
        out = out.resize(ref.size, Image.BICUBIC)
    return out


def _family_result(row: dict[str, list]) -> dict:
    out_err, in_err = float(np.mean(row["output"])), float(np.mean(row["input"]))
    result = {"n": len(row["output"]), "output_l1": out_err, "input_l1": in_err,
              "ratio": out_err / in_err if in_err > 0 else float("inf")}
    if row["checks"]:
        result["success_rate"] = float(np.mean([ok for ok, _ in row["checks"]]))
        for key in row["checks"][0][1]:
            result[f"mean_{key}"] = float(np.mean([m[key] for _, m in row["checks"]]))
        result["pass"] = result["success_rate"] >= SUCCESS_RATE
    else:
        result["pass"] = out_err <= EDIT_MAX_RATIO * in_err
    return result


def edit_report(samples: list[EditSample], edit_fn: EditFn) -> dict:
    """Per-family mean L1 of editor output and of the input to the exact target, per-edit checks of the
    families in CHECKS, and pass flags."""
    per_family: dict[str, dict[str, list]] = {}
    for s in tqdm(samples, desc="evaluate editor", unit="edit"):
        src = Image.fromarray(s.source, "RGB")
        out = np.asarray(_same_size(edit_fn(src, s.prompt), src, "editor"))
        row = per_family.setdefault(s.family, {"output": [], "input": [], "checks": []})
        target = s.target
        row["output"].append(l1(out, target))
        row["input"].append(l1(s.source, target))
        if s.family in CHECKS:
            row["checks"].append(CHECKS[s.family](s.source, out, s.args))
    families = {family: _family_result(row) for family, row in per_family.items()}
    return {"families": families, "pass": bool(families) and all(f["pass"] for f in families.values())}


def stylize_report(photos: list[Image.Image], stylize_fn: StylizeFn) -> dict:
    """Mean L1 of generator output and of the photo to cartoonize(photo); passes when closer."""
    outs, ins = [], []
    for photo in tqdm(photos, desc="evaluate stylizer", unit="img"):
        photo = photo.convert("RGB")
        target = cartoonize(photo)
        outs.append(l1(_same_size(stylize_fn(photo), photo, "stylizer"), target))
        ins.append(l1(photo, target))
    out_err, in_err = float(np.mean(outs)), float(np.mean(ins))
    return {"n": len(photos), "output_l1": out_err, "input_l1": in_err,
            "ratio": out_err / in_err if in_err > 0 else float("inf"), "pass": out_err < in_err}


# --- held-out data: from a built folder, or rebuilt on the fly from the HELDOUT photos ------------
def read_heldout_edits(data: Path, per_family: int, families: tuple[str, ...]) -> list[EditSample]:
    """First `per_family` rows per family of <data>/edit/heldout/metadata.jsonl; the target is
    recomputed from the family (exact), the stored edited image is not trusted."""
    metadata = Path(data) / "edit" / "heldout" / "metadata.jsonl"
    if not metadata.is_file():
        raise UserInputError(f"{metadata}: not found (build it with `python -m demo.build --out {data}`)")
    taken: dict[str, int] = {}
    samples = []
    for line_no, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            family, prompt, image = row["family"], row["edit_prompt"], row["input_image"]
            args, domain = tuple(row.get("args", ())), row.get("domain", "cartoon")
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise UserInputError(f"{metadata}:{line_no}: bad row ({type(err).__name__}: {err})") from None
        if family not in EDIT_FAMILIES:
            raise UserInputError(f"{metadata}:{line_no}: unknown family {family!r}")
        if family not in families or taken.get(family, 0) >= per_family:
            continue
        taken[family] = taken.get(family, 0) + 1
        source = np.asarray(load_image(metadata.parent / image))
        samples.append(EditSample(source, prompt, family, Path(image).stem, args, domain))
    return samples


def read_heldout_photos(data: Path, count: int) -> list[Image.Image]:
    folder = Path(data) / "gan" / "test" / "test_photo"
    if not folder.is_dir():
        raise UserInputError(f"{folder}: not found (build it with `python -m demo.build --out {data}`)")
    return [load_image(p) for p in list_images(folder)[:count]]


def evaluate(stylize_fn: StylizeFn | None = None, edit_fn: EditFn | None = None, *,
             data: Path | None = None, per_family: int = 3, size: int = 128, gan_views: int = 6,
             gan_size: int = 256, seed: int = 0,
             families: tuple[str, ...] = tuple(EDIT_FAMILIES)) -> dict:
    """Run the held-out evaluation of whichever stages are given; returns numbers and pass flags."""
    if stylize_fn is None and edit_fn is None:
        raise UserInputError("nothing to evaluate: pass --gan and/or --editor")
    result: dict = {}
    if stylize_fn is not None:
        photos = read_heldout_photos(data, gan_views) if data else \
            [img for _, img in heldout_photo_views(gan_views, gan_size, seed)]
        result["stylize"] = stylize_report(photos, stylize_fn)
    if edit_fn is not None:
        samples = read_heldout_edits(data, per_family, families) if data else \
            heldout_edit_samples(per_family, size, seed, families)
        result["edit"] = edit_report(samples, edit_fn)
    result["pass"] = all(part["pass"] for part in result.values())
    return result


def format_table(result: dict) -> str:
    """Markdown table of an `evaluate` result (the README records this)."""
    lines = ["| stage | family | n | L1 model -> target | L1 input -> target | ratio | edits passing | pass |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    def row(stage, name, r):
        rate = f"{r['success_rate']:.0%}" if "success_rate" in r else "-"
        ratio = f"{r['ratio']:.2f}" if np.isfinite(r["ratio"]) else "-"
        lines.append(f"| {stage} | {name} | {r['n']} | {r['output_l1']:.4f} | {r['input_l1']:.4f} | "
                     f"{ratio} | {rate} | {'yes' if r['pass'] else 'NO'} |")
    if "stylize" in result:
        row("1: stylize", "cartoon filter", result["stylize"])
    for name, r in result.get("edit", {}).get("families", {}).items():
        row("2: edit", name, r)
    return "\n".join(lines)


# --- loading the real models (the APIs of stylize_gan and edit_diffusion) ------------------------
def load_stylize_fn(path: Path, device: str = "cpu") -> StylizeFn:
    import torch
    from stylize_gan.checkpoint import load_generator
    from stylize_gan.inference import stylize_pil

    generator = load_generator(path, device=device).eval()

    def stylize(img: Image.Image) -> Image.Image:
        with torch.inference_mode():
            return stylize_pil(generator, img)
    return stylize


def load_edit_fn(path: Path, device: str = "cpu", seed: int = 0, size: int = 128,
                 edit_out_of_scope: bool = False) -> EditFn:
    from edit_diffusion.editor import EditSettings, edit_image, load_editor

    pipe = load_editor(str(path), device=device)
    settings = EditSettings(seed=seed, resolution=size, edit_out_of_scope=edit_out_of_scope)

    def edit(img: Image.Image, prompt: str) -> Image.Image:
        # The model's own defaults (steps, guidance: None fields), fixed seed, evaluation resolution.
        variants, _ = edit_image(pipe, img, prompt, settings)
        return variants[0]
    edit.editor = pipe  # for the out-of-scope notice's report
    return edit


@dataclass
class EvalConfig:
    gan: Path | None = option(None, "stage-1 generator (.safetensors); omitted: stage 1 is not evaluated")
    editor: Path | None = option(None, "stage-2 editor pipeline folder; omitted: stage 2 is not evaluated")
    data: Path | None = option(None, "folder written by demo.build (default: rebuild the held-out set)")
    per_family: int = option(3, "held-out edits per family", ge=1)
    size: int = option(128, "editor evaluation size (px, on-the-fly held-out set)", ge=16)
    gan_views: int = option(6, "held-out photo views for stage 1", ge=1)
    gan_size: int = option(256, "stage-1 evaluation size (px)", ge=16)
    seed: int = option(0, "seed of the held-out crops and of the editor's sampling", ge=0, lt=2**63)
    device: str = option("cpu", "torch device, e.g. cpu or cuda")
    families: tuple[str, ...] = option(tuple(EDIT_FAMILIES), "edit families to evaluate (default: all registered)",
                                       choices=tuple(EDIT_FAMILIES))
    edit_out_of_scope: bool = option(False, "run the editor on instructions its index calls out of scope (as "
                                            "infer.py --edit-out-of-scope): the model alone, without the notice's gate")
    json_out: Path | None = option(None, "also write the result as JSON here", flag="--json")
    overwrite: bool = option(False, "replace an existing --json file")

    def __post_init__(self):
        check_fields(self)  # bounds, NaN/inf and choices from the field metadata, before anything else
        if self.gan is None and self.editor is None:
            raise UserInputError("nothing to evaluate: pass --gan and/or --editor")
        for flag, path in (("--gan", self.gan), ("--editor", self.editor), ("--data", self.data)):
            if path is not None and not Path(path).exists():
                raise UserInputError(f"{flag} {path}: not found")
        for flag, value in (("--per-family", self.per_family), ("--gan-views", self.gan_views)):
            if value < 1:
                raise ValueError(f"{flag} must be >= 1, got {value}")
        for flag, value in (("--size", self.size), ("--gan-size", self.gan_size)):
            if value < 16:
                raise ValueError(f"{flag} must be >= 16 pixels, got {value}")
        unknown = [f for f in self.families if f not in EDIT_FAMILIES]
        if unknown or not self.families:
            raise ValueError(f"--families: unknown {unknown or 'empty'}; choose from {', '.join(EDIT_FAMILIES)}")
        if self.json_out is not None:  # checked before minutes of evaluation, not after
            out = Path(self.json_out)
            if out.is_dir():
                raise UserInputError(f"--json {out}: is a folder, expected a file name")
            if not out.parent.is_dir():
                raise UserInputError(f"--json {out}: folder {out.parent} does not exist")
            if out.exists() and not self.overwrite:
                raise UserInputError(f"--json {out}: already exists (pass --overwrite to replace it)")


def main(config: EvalConfig) -> dict:
    stylize_fn = load_stylize_fn(config.gan, config.device) if config.gan else None
    edit_fn = load_edit_fn(config.editor, config.device, config.seed, config.size,
                           config.edit_out_of_scope) if config.editor else None
    result = evaluate(stylize_fn, edit_fn, data=config.data, per_family=config.per_family,
                      size=config.size, gan_views=config.gan_views, gan_size=config.gan_size,
                      seed=config.seed, families=config.families)
    print(format_table(result))
    editor = getattr(edit_fn, "editor", None)
    if editor is not None and getattr(editor, "scope", None) is not None:
        # the optional notice is not a pass criterion: its error rates are reported, not judged
        result["scope"] = r = scope_report(editor, config.seed)
        print(f"\nout-of-scope notice (held-out wording): {r['false_alarms']} false alarms in {r['in_scope']} "
              f"in-scope instructions, {r['detected']} of {r['out_of_scope']} out-of-scope ones noticed")
    print(f"\noverall: {'PASS' if result['pass'] else 'FAIL'}")
    if config.json_out:
        save_json(result, config.json_out)  # atomic: an interrupted run never leaves half a file
    return result


def parse_args(argv: list[str] | None = None) -> EvalConfig:
    return parse_config(EvalConfig, argv, prog="python -m demo.evaluate", description=__doc__.splitlines()[0])


@cli_errors
def cli(argv: list[str] | None = None) -> dict:
    result = main(parse_args(argv))
    if not result["pass"]:
        raise SystemExit(1)  # a failed criterion is not a usage error: 1, not 2
    return result


if __name__ == "__main__":
    cli()
