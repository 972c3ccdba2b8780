"""The bundled default models (checkpoints/): they load, run the whole chain fast enough to smoke-test,
and they meet the issue's bar on the held-out evaluation (photos, phrasings and colour pairs never seen in
training): an editor error at most half of the unedited input's in every global family, recolours and
out-of-scope instructions judged per edit (demo/criteria.py), and a stage-1 output closer to the cartoon
filter than the photo is. Beyond the bar, the tests pin down what the defaults achieve (the editor's mean
ratio, the README's per-edit rates, stage 1's outlines on the filter's ink), so a regression fails the suite."""
import pytest

from chain.defaults import DEFAULT_EDITOR, STYLES
from demo.edits import EDIT_FAMILIES, GLOBAL_FAMILIES
from demo.evaluate import evaluate, load_edit_fn, load_stylize_fn

PER_EDIT_FAMILIES = ("recolour", "identity")


@pytest.fixture(scope="module")
def editor_fn():
    return load_edit_fn(DEFAULT_EDITOR, seed=0, size=128)


@pytest.fixture(scope="module")
def report(editor_fn):
    return evaluate(load_stylize_fn(STYLES["cartoon"]), editor_fn, per_family=3, gan_views=3, gan_size=192, seed=0,
                    families=GLOBAL_FAMILIES)


@pytest.fixture(scope="module")
def per_edit_report(editor_fn):
    """Recolour and identity as the README's table measures them: 10 held-out edits each, 128 px, seed 0."""
    return evaluate(edit_fn=editor_fn, per_family=10, size=128, seed=0, families=PER_EDIT_FAMILIES)["edit"]


def test_bundled_files_exist():
    assert STYLES["cartoon"].is_file()
    assert (DEFAULT_EDITOR / "model_index.json").is_file()
    # all-MiniLM-L6-v2's WordPiece tokenizer ships with it (bert-base-uncased ids: [CLS] 101, [SEP] 102),
    # capped at SD's 77 tokens, and its text encoder is the pretrained BERT stored in fp16
    import json

    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_EDITOR / "tokenizer")
    assert tokenizer("a photograph of an astronaut riding a horse").input_ids == [
        101, 1037, 9982, 1997, 2019, 19748, 5559, 1037, 3586, 102]
    assert tokenizer.model_max_length == 77
    assert json.loads((DEFAULT_EDITOR / "model_index.json").read_text())["text_encoder"][1] == "BertModel"


# Global families the shipped editor fails with 3 held-out edits per family (issue 18's extended set: new
# black-and-white words such as "b&w", "colorless", "no color"; plain photos as inputs besides cartoons). None
# since the second recolour fine-tune: black and white, the last one, measures 0.30 here (0.26 at 10 per family,
# README table). Strict: a family listed here that passes fails its mark, so the list only holds real failures.
KNOWN_FAILURES: dict[str, str] = {}
ISSUE_18 = "issue 18 open: the shipped editor fails this family on the extended held-out set (ratio {})"


def _global_cases():
    return [pytest.param(f, marks=pytest.mark.xfail(strict=True, reason=ISSUE_18.format(KNOWN_FAILURES[f])))
            if f in KNOWN_FAILURES else f for f in GLOBAL_FAMILIES]


def test_every_global_family_is_evaluated(report):
    assert set(report["edit"]["families"]) == set(GLOBAL_FAMILIES)
    assert set(EDIT_FAMILIES) == {*GLOBAL_FAMILIES, *PER_EDIT_FAMILIES}


@pytest.mark.parametrize("family", _global_cases())
def test_editor_meets_the_half_error_bar(report, family):
    row = report["edit"]["families"][family]
    assert row["output_l1"] < row["input_l1"] and row["ratio"] <= 0.5, row


def test_mean_ratio_of_the_passing_global_families(report):
    ratios = {n: r["ratio"] for n, r in report["edit"]["families"].items() if n not in KNOWN_FAILURES}
    assert sum(ratios.values()) / len(ratios) < MEAN_GLOBAL_RATIO, ratios


@pytest.mark.parametrize("family", PER_EDIT_FAMILIES)
def test_per_edit_rates_are_the_readme_values(per_edit_report, family):
    """Recolour (colour-A pixels moved to B, the rest kept) and identity (unknown instructions leave the
    image alone): the share of passing edits is the README table's, within one edit of ten."""
    row = per_edit_report["families"][family]
    assert row["n"] == 10 and abs(row["success_rate"] - readme_cell(f"2: edit | {family}", -3)) <= 0.1 + 1e-9, row


def test_out_of_scope_notice_on_the_bundled_editor(editor_fn):
    editor = editor_fn.editor
    assert editor.scope is not None  # checkpoints/editor ships instruction_index.json
    for unknown in ("add a red hat", "remove the person on the left", "make him smile"):
        assert editor.scope_notice(unknown) is not None, unknown
    for known in ("make it black and white", "give it a sepia look", "convert this picture to black and white",
                  "what would a thermal camera see", "increase contrast a lot"):
        assert editor.scope_notice(known) is None, known


def readme_cell(stage_family: str, column: int) -> float:
    """A number cell of the README's evaluation table row that starts with `| <stage> | <family> |`
    (columns counted from the right: ... | ratio (-4) | edits passing (-3) | pass (-2) |)."""
    import re
    from pathlib import Path
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    row = re.search(rf"^\| {re.escape(stage_family)} \|(.*)$", readme, re.M)
    assert row, f"README evaluation table has no row {stage_family!r}"
    cell = row.group(1).split("|")[column].strip()
    return float(cell[:-1]) / 100 if cell.endswith("%") else float(cell)


def readme_ratio(stage_family: str) -> float:
    return readme_cell(stage_family, -4)


# Tolerance of the pin: the table rounds to 2 decimals (0.005), plus float differences between CPUs and torch
# builds (measured 0.7316 for the README's 0.73 on the reference machine).
RATIO_TOLERANCE = 0.02
# the bundled editor's mean ratio over the global families it passes (3 held-out edits each; measured 0.17)
MEAN_GLOBAL_RATIO = 0.25


def test_stylizer_ratio_is_the_readme_value():
    """Stage 1 measured exactly as the README's table (6 held-out views at 256 px, seed 0: the defaults of
    `python -m demo.evaluate`) lands on the table's ratio; a retrained generator must update the README."""
    row = evaluate(load_stylize_fn(STYLES["cartoon"]), None, gan_views=6, gan_size=256, seed=0)["stylize"]
    assert row["n"] == 6 and abs(row["ratio"] - readme_ratio("1: stylize | cartoon filter")) <= RATIO_TOLERANCE, row


def test_stylizer_is_closer_to_the_filter_than_the_photo(report):
    row = report["stylize"]
    assert row["output_l1"] < row["input_l1"], row


def test_stylizer_draws_ink_where_the_filter_does():
    """The outlines are in the right places: the generator darkens the filter's ink pixels of a held-out
    photo far more than the rest of it."""
    import numpy as np

    from demo.cartoon import ink_mask
    from demo.samples import heldout_photo_views

    stylize = load_stylize_fn(STYLES["cartoon"])
    for _, photo in heldout_photo_views(3, 192, 0):
        before = np.asarray(photo.convert("L"), dtype=np.float32)
        after = np.asarray(stylize(photo).convert("L"), dtype=np.float32)
        ink = ink_mask(np.asarray(photo.convert("RGB")))
        darkening = before - after
        assert darkening[ink].mean() > 5.0 and darkening[ink].mean() > 4 * abs(darkening[~ink].mean())


def _xfail_while(known: bool, reason: str):
    """A strict xfail mark while a failure is known (fixing it then fails the mark), no mark once it is fixed."""
    return pytest.mark.xfail(strict=True, reason=reason) if known else (lambda test: test)


@_xfail_while(bool(KNOWN_FAILURES), ISSUE_18.format(", ".join(f"{k} {v}" for k, v in KNOWN_FAILURES.items())))
def test_issue_criteria_met(report):
    """Stage 1 and every global family at 3 held-out edits each."""
    assert report["pass"], report


def test_recolour_meets_the_issue_target(per_edit_report):
    """Issue 18's bar: 80% of the README's held-out recolours pass (8 of 10 since run 8 at text guidance 1.3)."""
    assert per_edit_report["families"]["recolour"]["success_rate"] >= 0.8


def test_readme_main_command_runs_on_bundled_defaults(tmp_path, monkeypatch):
    """The README's first command (its infer.py part, output redirected to a temp folder) works as written."""
    import shlex
    from pathlib import Path

    import numpy as np

    import infer
    from common.images import load_image

    root = Path(__file__).resolve().parent.parent
    first_block = (root / "README.md").read_text().split("```bash\n")[1].split("```")[0]
    command = first_block.split("&& python infer.py ", 1)[1].strip()
    args = shlex.split(command)
    args[args.index("--output") + 1] = str(tmp_path / "out.png")
    monkeypatch.chdir(root)
    written = infer.cli(args + ["--seed", "0"])
    assert written == [tmp_path / "out.png"]
    src = load_image(root / args[args.index("--input") + 1])
    out = load_image(tmp_path / "out.png")
    assert out.size == src.size
    assert np.abs(np.asarray(out, dtype=np.int16) - np.asarray(src, dtype=np.int16)).mean() > 5


def test_chain_stylize_only_and_edit_only(tmp_path):
    import numpy as np
    from PIL import Image

    import infer
    from common.images import load_image

    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)).save(photo)
    infer.cli(["--input", str(photo), "--skip-edit", "--output", str(tmp_path / "s.png")])
    infer.cli(["--input", str(photo), "--skip-stylize", "--edit", "invert the colors", "--seed", "1",
               "--output", str(tmp_path / "e.png")])
    assert load_image(tmp_path / "s.png").size == (53, 37) == load_image(tmp_path / "e.png").size
    # each half is exactly what its stage gives on its own (not just any image of the right size)
    stylized = load_stylize_fn(STYLES["cartoon"])(load_image(photo))
    assert np.array_equal(np.asarray(load_image(tmp_path / "s.png")), np.asarray(stylized))
    edit = load_edit_fn(DEFAULT_EDITOR, seed=1, size=512)  # infer's defaults: --resolution 512
    assert np.array_equal(np.asarray(load_image(tmp_path / "e.png")),
                          np.asarray(edit(load_image(photo), "invert the colors")))
