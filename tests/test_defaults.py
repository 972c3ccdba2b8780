"""The bundled default models (checkpoints/): they load, run the whole chain fast enough to smoke-test,
and they meet the issue's bar on the held-out evaluation (photos and phrasings never seen in training):
an editor error at most half of the unedited input's in every family, and a stage-1 output closer to the
cartoon filter than the photo is. Beyond the bar, the tests pin down what the defaults achieve (the
editor's mean ratio; stage 1's outlines on the filter's ink), so a regression fails the suite."""
import pytest

from chain.defaults import DEFAULT_EDITOR, STYLES
from demo.edits import EDIT_FAMILIES
from demo.evaluate import evaluate, load_edit_fn, load_stylize_fn


@pytest.fixture(scope="module")
def report():
    return evaluate(load_stylize_fn(STYLES["cartoon"]), load_edit_fn(DEFAULT_EDITOR, seed=0, size=128),
                    per_family=3, gan_views=3, gan_size=192, seed=0)


def test_bundled_files_exist():
    assert STYLES["cartoon"].is_file()
    assert (DEFAULT_EDITOR / "model_index.json").is_file()
    # the real SD 1.5 CLIP tokenizer ships with it (ids from RESOURCES.md)
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_EDITOR / "tokenizer")
    assert tokenizer("a photograph of an astronaut riding a horse").input_ids == [
        49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]
    assert tokenizer.model_max_length == 77


def test_editor_moves_every_family_towards_its_target(report):
    families = report["edit"]["families"]
    assert set(families) == set(EDIT_FAMILIES)
    for name, row in families.items():
        assert row["output_l1"] < row["input_l1"], (name, row)


def test_editor_meets_the_half_error_bar_in_every_family(report):
    ratios = {name: row["ratio"] for name, row in report["edit"]["families"].items()}
    assert all(r <= 0.5 for r in ratios.values()), ratios
    assert sum(ratios.values()) / len(EDIT_FAMILIES) < 0.35, ratios


def test_stylizer_is_closer_to_the_filter_than_the_photo(report):
    row = report["stylize"]
    assert row["output_l1"] < row["input_l1"], row


def readme_ratio(stage_family: str) -> float:
    """The ratio column of the README's evaluation table row that starts with `| <stage> | <family> |`."""
    import re
    from pathlib import Path
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    row = re.search(rf"^\| {re.escape(stage_family)} \|(.*)$", readme, re.M)
    assert row, f"README evaluation table has no row {stage_family!r}"
    return float(row.group(1).split("|")[-3])  # ... | ratio | pass |


# Tolerance of the pin: the table rounds to 2 decimals (0.005), plus float differences between CPUs and torch
# builds (measured 0.7316 for the README's 0.73 on the reference machine).
RATIO_TOLERANCE = 0.02


def test_stylizer_ratio_is_the_readme_value():
    """Stage 1 measured exactly as the README's table (6 held-out views at 256 px, seed 0: the defaults of
    `python -m demo.evaluate`) lands on the table's ratio; a retrained generator must update the README."""
    row = evaluate(load_stylize_fn(STYLES["cartoon"]), None, gan_views=6, gan_size=256, seed=0)["stylize"]
    assert row["n"] == 6 and abs(row["ratio"] - readme_ratio("1: stylize | cartoon filter")) <= RATIO_TOLERANCE, row


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


def test_issue_criteria_met(report):
    assert report["pass"], report


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
