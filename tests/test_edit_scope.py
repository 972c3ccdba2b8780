"""The out-of-scope notice: an editor folder's instruction index, read in the editor's own tokens."""
import shutil

import numpy as np
import pytest
from PIL import Image

from chain.defaults import DEFAULT_EDITOR
from edit_diffusion.editor import EditSettings, load_editor
from edit_diffusion.scope import INDEX_FILE, InstructionScope, write_index


def test_majority_of_the_nearest_decides_and_ties_go_to_the_nearest():
    def unit(**weights):
        norm = sum(w * w for w in weights.values()) ** 0.5
        return {int(k[1:]): w / norm for k, w in weights.items()}
    near, out, other = unit(t0=1, t1=1), unit(t1=1), unit(t2=1)
    scope = InstructionScope([near, near, near, out, out, other], ("a", "a", "a", "out", "out", "b"), "out")
    assert scope.family_of(unit(t1=1)) == "a"  # the two nearest are "out", but 3 of the 5 nearest are "a"
    tie = InstructionScope([unit(t0=1), unit(t1=1), unit(t1=1), unit(t0=9, t2=1)], ("x", "y", "y", "x"), "y")
    # nearest to t0: x (1.0), x (0.99), then the two y: 2 against 2, the nearest family wins
    assert tie.family_of(unit(t0=1, t1=0.01)) == "x"


def test_token_vectors_are_unit_bags_of_the_tokenizers_tokens():
    from transformers import AutoTokenizer

    from edit_diffusion.scope import cosine, token_vectors
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_EDITOR / "tokenizer")
    a, b, c = token_vectors(tokenizer, ["make it black and white", "white and black make it", "add a dog"])
    assert cosine(a, a) == pytest.approx(1.0) and cosine(a, b) == pytest.approx(1.0)  # order-free
    assert cosine(a, c) == 0.0  # no shared token


@pytest.fixture(scope="module")
def editor_with_index(tmp_path_factory):
    folder = tmp_path_factory.mktemp("editor") / "editor"
    shutil.copytree(DEFAULT_EDITOR, folder, ignore=shutil.ignore_patterns(INDEX_FILE))
    write_index(folder, [("make it black and white", "black_and_white")] * 5 + [("add a dog", "identity")] * 5
                + [("turn the green car blue", "recolour")] * 5, "identity")
    return load_editor(str(folder), device="cpu")


def test_notice_for_out_of_scope_instructions_only(editor_with_index, capsys):
    editor = editor_with_index
    assert editor.scope is not None
    notice = editor.scope_notice("add a dog")
    assert notice and "black and white" in notice and "recolour" in notice and "identity" not in notice
    assert editor.scope_notice("make it black and white") is None
    image = Image.fromarray(np.full((16, 16, 3), 120, np.uint8))
    editor.edit(image, "add a dog", EditSettings(seed=0, steps=1))
    assert capsys.readouterr().out.count("was not trained for this kind of edit") == 1
    editor.edit(image, "turn the green car blue", EditSettings(seed=0, steps=1))
    assert "was not trained" not in capsys.readouterr().out


def test_out_of_scope_leaves_the_picture_alone_unless_asked(editor_with_index, capsys):
    """Issue 18: an instruction the editor cannot do returns the input, pixel for pixel, once per variant; with
    edit_out_of_scope the model runs (and changes the picture) with the note saying the result will not follow."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    left, _ = editor_with_index.edit(image, "add a dog", EditSettings(seed=0, steps=1, num_variants=2))
    assert len(left) == 2 and all(np.array_equal(np.asarray(out), np.asarray(image)) for out in left)
    assert "left unchanged" in capsys.readouterr().out
    ran, _ = editor_with_index.edit(image, "add a dog", EditSettings(seed=0, steps=1, edit_out_of_scope=True))
    assert ran[0].size == image.size and np.abs(np.asarray(ran[0], float) - np.asarray(image, float)).mean() > 1
    assert "will not follow this instruction" in capsys.readouterr().out


def test_no_index_no_check(tmp_path):
    folder = tmp_path / "editor"
    shutil.copytree(DEFAULT_EDITOR, folder, ignore=shutil.ignore_patterns(INDEX_FILE))
    editor = load_editor(str(folder), device="cpu")
    assert editor.scope is None and editor.scope_notice("add a dog") is None
