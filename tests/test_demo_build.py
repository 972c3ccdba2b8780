"""The demo data builder writes the AnimeGAN and InstructPix2Pix layouts, reproducibly."""
import json

import pytest
from PIL import Image

from demo.build import BuildConfig, cli, main, parse_args
from demo.edits import EDIT_FAMILIES

TINY = ["--gan-crops", "3", "--style-crops", "2", "--test-crops", "4", "--size", "32",
        "--edit-samples", "6", "--edit-heldout-per-family", "1", "--edit-size", "24",
        "--families", "invert", "sepia", "thermal", "recolour", "identity",
        "--stage1", "checkpoints/gan/cartoon.safetensors", "--stage1-pool", "2"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    cli(["--out", str(out), "--seed", "3", *TINY])
    return out


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_gan_layout(built):
    counts = {"train_photo": 3, "Cartoon/style": 2, "test/test_photo": 4}
    for sub, n in counts.items():
        files = sorted((built / "gan" / sub).glob("*.png"))
        assert len(files) == n, sub
        assert all(Image.open(f).size == (32, 32) for f in files)


@pytest.mark.parametrize("split,n", [("train", 6), ("heldout", 5)])
def test_edit_metadata_parses_and_files_exist(built, split, n):
    from demo.colours import COLOURS, HELDOUT_PAIRS
    folder = built / "edit" / split
    rows = _rows(folder / "metadata.jsonl")
    assert len(rows) == n
    for row in rows:
        assert set(row) == {"input_image", "edit_prompt", "edited_image", "family", "args", "domain"}
        assert row["family"] in ("invert", "sepia", "thermal", "recolour", "identity")
        pool = EDIT_FAMILIES[row["family"]]
        if row["family"] == "recolour":  # drawn: both colours named, held-out pairs only in held-out rows
            source, target = row["args"]
            assert any(w in row["edit_prompt"] for w in COLOURS[source].names), row
            assert any(w in row["edit_prompt"] for w in COLOURS[target].names), row
            assert ((source, target) in HELDOUT_PAIRS) == (split == "heldout")
        elif row["family"] == "identity" and split == "train":
            assert any(row["edit_prompt"].endswith(p) or p in row["edit_prompt"] for p in pool.train_phrasings)
        else:
            assert row["edit_prompt"] in (pool.train_phrasings if split == "train" else pool.heldout_phrasings)
        for key in ("input_image", "edited_image"):
            assert Image.open(folder / row[key]).size == (24, 24)


def test_targets_are_the_exact_edit(built):
    import numpy as np
    folder = built / "edit" / "train"
    for row in _rows(folder / "metadata.jsonl"):
        src = np.asarray(Image.open(folder / row["input_image"]).convert("RGB"))
        out = np.asarray(Image.open(folder / row["edited_image"]).convert("RGB"))
        assert np.array_equal(EDIT_FAMILIES[row["family"]].apply(src, *row["args"]), out)


def test_train_shares_and_domains(built):
    rows = _rows(built / "edit" / "train" / "metadata.jsonl")
    families = [r["family"] for r in rows]
    # 6 triplets: recolour round(6 * 0.35) = 2, identity round(0.6) = 1, one each of the three filters
    assert families.count("recolour") == 2 and families.count("identity") == 1
    assert {r["domain"] for r in rows} <= {"photo", "cartoon", "stage1"}


def test_heldout_uses_only_heldout_photos(built):
    rows = _rows(built / "edit" / "heldout" / "metadata.jsonl")
    assert all(any(p in r["input_image"] for p in ("astronaut", "coffee", "grace_hopper")) for r in rows)
    split = json.loads((built / "build_config.json").read_text())["split"]
    assert split["heldout"] == ["astronaut", "coffee", "grace_hopper"]


def test_same_seed_same_bytes(built, tmp_path):
    main(parse_args(["--out", str(tmp_path), "--seed", "3", *TINY]))
    for f in (built / "edit").rglob("*.*"):
        assert f.read_bytes() == (tmp_path / f.relative_to(built)).read_bytes(), f


def test_refuses_to_mix_with_an_earlier_build(built, capsys):
    with pytest.raises(SystemExit) as exc:
        cli(["--out", str(built), *TINY])
    assert exc.value.code == 2 and "--overwrite" in capsys.readouterr().err


def test_bad_flags_exit_2(tmp_path, capsys):
    for argv in (["--out", str(tmp_path), "--size", "4"], ["--out", str(tmp_path), "--families", "nope"]):
        with pytest.raises(SystemExit) as exc:
            cli(argv)
        assert exc.value.code == 2
    assert "--size" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--edit-samples"):
        BuildConfig(out=tmp_path, edit_samples=-1)
