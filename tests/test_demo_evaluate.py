"""Evaluation metric and pass criteria, with stand-in models (identity must fail, oracle must pass)."""
import json

import numpy as np
import pytest
from PIL import Image

import demo.evaluate as ev
from demo.build import cli as build_cli
from demo.cartoon import cartoonize
from demo.edits import EDIT_FAMILIES

FAMILIES = ("black_and_white", "invert", "warmer", "pencil_sketch")
# a stage-2 stand-in that knows the answer: finds the family whose held-out phrasings hold the prompt
_PROMPT_TO_FAMILY = {p: n for n, f in EDIT_FAMILIES.items() for p in f.heldout_phrasings}


def oracle_edit(img, prompt):
    return Image.fromarray(EDIT_FAMILIES[_PROMPT_TO_FAMILY[prompt]].apply(np.asarray(img)))


def identity_edit(img, prompt):
    return img.copy()


def test_l1_scale_and_shape_check():
    a = np.zeros((4, 4, 3), np.uint8)
    assert ev.l1(a, a + 255) == pytest.approx(1.0)
    assert ev.l1(a, a) == 0.0
    with pytest.raises(ValueError, match="shapes"):
        ev.l1(a, np.zeros((4, 5, 3), np.uint8))


def test_identity_editor_fails_and_oracle_passes():
    kwargs = dict(per_family=2, size=32, families=FAMILIES)
    bad = ev.evaluate(edit_fn=identity_edit, **kwargs)
    assert not bad["pass"]
    assert all(not r["pass"] and r["output_l1"] == pytest.approx(r["input_l1"])
               for r in bad["edit"]["families"].values())
    good = ev.evaluate(edit_fn=oracle_edit, **kwargs)
    assert good["pass"] and set(good["edit"]["families"]) == set(FAMILIES)
    assert all(r["output_l1"] == 0.0 and r["n"] == 2 for r in good["edit"]["families"].values())


def test_half_error_boundary():
    # an editor that goes exactly half-way (rounded) from input to target sits at the threshold
    def halfway(img, prompt):
        src = np.asarray(img, np.float32)
        tgt = oracle_edit(img, prompt)
        return Image.fromarray(((src + np.asarray(tgt, np.float32)) / 2).round().astype(np.uint8))
    r = ev.evaluate(edit_fn=halfway, per_family=1, size=32, families=("invert",))["edit"]["families"]["invert"]
    assert r["ratio"] == pytest.approx(0.5, abs=0.01)


def test_stylizer_criterion():
    ident = ev.evaluate(stylize_fn=lambda im: im.copy(), gan_views=2, gan_size=32)
    assert not ident["pass"] and ident["stylize"]["n"] == 2
    oracle = ev.evaluate(stylize_fn=cartoonize, gan_views=2, gan_size=32)
    assert oracle["pass"] and oracle["stylize"]["output_l1"] == 0.0
    table = ev.format_table({**oracle, **ev.evaluate(edit_fn=oracle_edit, per_family=1, size=32,
                                                       families=FAMILIES)})
    assert table.count("\n") == 2 + len(FAMILIES) and "cartoon filter" in table and "| yes |" in table


def test_evaluate_reads_a_built_folder(tmp_path):
    build_cli(["--out", str(tmp_path), "--gan-crops", "1", "--test-crops", "2", "--size", "32",
               "--edit-samples", "1", "--edit-heldout-per-family", "2", "--edit-size", "32",
               "--families", *FAMILIES])
    res = ev.evaluate(cartoonize, oracle_edit, data=tmp_path, per_family=1, families=FAMILIES)
    assert res["pass"] and res["stylize"]["n"] == 2
    assert {r["n"] for r in res["edit"]["families"].values()} == {1}


def test_cli_exit_codes(tmp_path, monkeypatch, capsys):
    # the real loaders are replaced by stand-ins here only; the CLI flow, table and codes are real
    gan, editor = tmp_path / "g.safetensors", tmp_path / "editor"
    gan.write_bytes(b"x")
    editor.mkdir()
    monkeypatch.setattr(ev, "load_stylize_fn", lambda path, device="cpu": cartoonize)
    gates = []
    monkeypatch.setattr(ev, "load_edit_fn", lambda path, device="cpu", seed=0, size=128, edit_out_of_scope=False:
                        gates.append(edit_out_of_scope) or oracle_edit)
    common = ["--per-family", "1", "--size", "32", "--gan-views", "1", "--gan-size", "32",
              "--families", *FAMILIES]
    out_json = tmp_path / "r.json"
    res = ev.cli(["--gan", str(gan), "--editor", str(editor), "--json", str(out_json), *common])
    assert res["pass"] and json.loads(out_json.read_text())["pass"]
    assert "| 2: edit | invert |" in capsys.readouterr().out

    ev.cli(["--editor", str(editor), "--edit-out-of-scope", *common])
    assert gates == [False, True]  # the model alone, without the out-of-scope gate, on request

    monkeypatch.setattr(ev, "load_edit_fn", lambda path, device="cpu", seed=0, size=128, edit_out_of_scope=False:
                        identity_edit)
    with pytest.raises(SystemExit) as exc:
        ev.cli(["--editor", str(editor), *common])
    assert exc.value.code == 1

    for argv in ([*common], ["--gan", str(tmp_path / "missing.safetensors")], ["--editor", str(editor), "--size", "3"]):
        with pytest.raises(SystemExit) as exc:
            ev.cli(argv)
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "nothing to evaluate" in err and "missing.safetensors" in err and "--size" in err


def test_recolour_and_identity_are_judged_per_edit():
    from demo.samples import heldout_edit_samples
    samples = heldout_edit_samples(3, 32, 0, ("recolour", "identity"))
    answers = {(s.prompt, s.source.tobytes()): s.target for s in samples}

    def knows_the_answer(img, prompt):
        return Image.fromarray(answers[(prompt, np.asarray(img).tobytes())])
    good = ev.edit_report(samples, knows_the_answer)["families"]
    assert good["recolour"]["success_rate"] == 1.0 and good["identity"]["success_rate"] == 1.0
    assert good["recolour"]["mean_hit"] == 1.0 and good["recolour"]["mean_spill"] == 0.0
    lazy = ev.edit_report(samples, identity_edit)
    assert not lazy["pass"] and lazy["families"]["recolour"]["success_rate"] == 0.0
    assert lazy["families"]["identity"]["pass"]  # leaving the image alone is right for unknown edits
    table = ev.format_table({"edit": lazy})
    assert "| 2: edit | recolour | 3 |" in table and "| 0% | NO |" in table and "| - | 100% | yes |" in table


def test_a_family_gets_the_same_held_out_samples_whichever_others_are_asked_for():
    """tests/test_defaults.py evaluates subsets of families and pins the README table's values, which come from
    all families at once: a family's samples must not depend on the selection."""
    import numpy as np

    from demo.samples import heldout_edit_samples
    every = [s for s in heldout_edit_samples(2, 32, seed=0) if s.family == "identity"]
    alone = heldout_edit_samples(2, 32, seed=0, families=("identity",))
    assert [s.prompt for s in alone] == [s.prompt for s in every] and len(alone) == 2
    assert all(np.array_equal(np.asarray(a.source), np.asarray(b.source)) for a, b in zip(alone, every))
