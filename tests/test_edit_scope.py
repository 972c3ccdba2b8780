"""The out-of-scope notice: an editor folder's instruction index, read in the editor's own text space."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from chain.defaults import DEFAULT_EDITOR
from edit_diffusion.editor import EditSettings, load_editor
from edit_diffusion.scope import INDEX_FILE, InstructionScope, write_index

torch.set_num_threads(1)


def test_majority_of_the_nearest_decides_and_ties_go_to_the_nearest():
    e = torch.eye(4)
    near = torch.nn.functional.normalize(e[0] + e[1], dim=0)
    scope = InstructionScope(torch.stack([near, near, near, e[1], e[1], e[2]]),
                             ("a", "a", "a", "out", "out", "b"), "out")
    assert scope.family_of(e[1]) == "a"  # the two nearest are "out", but 3 of the 5 nearest are "a"
    tie = InstructionScope(torch.stack([e[0], e[1], e[1], e[0] * 0.9 + e[2] * 0.1]), ("x", "y", "y", "x"), "y")
    # query nearest to e[0]: x (1.0), x (0.9), then the two y: 2 against 2, the nearest family wins
    assert tie.family_of(torch.nn.functional.normalize(e[0] + 0.01 * e[1], dim=0)) == "x"


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


def test_no_index_no_check(tmp_path):
    folder = tmp_path / "editor"
    shutil.copytree(DEFAULT_EDITOR, folder, ignore=shutil.ignore_patterns(INDEX_FILE))
    editor = load_editor(str(folder), device="cpu")
    assert editor.scope is None and editor.scope_notice("add a dog") is None
