"""The diffusers recipe's data conventions: a --train_data_dir read like `datasets`' imagefolder (metadata.jsonl
keys ending in `_file_name` name image columns, metadata files in subfolders), checked against `datasets`
itself; and --dataset_name with --dataset_config_name / --cache_dir."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageOps

import hub_cache as hub
from common.errors import UserInputError
from edit_diffusion.data import Columns, read_triplets, to_pil


def write_imagefolder(folder, rows: int = 3) -> None:
    """train/metadata.jsonl with the imagefolder keys the diffusers recipe's users write."""
    from skimage import data
    split = folder / "train"
    split.mkdir(parents=True)
    lines = []
    for i, name in enumerate(["astronaut", "coffee", "chelsea"][:rows]):
        img = Image.fromarray(getattr(data, name)()).convert("RGB").resize((24, 24))
        img.save(split / f"{i}_in.png")
        ImageOps.invert(img).save(split / f"{i}_out.png")
        lines.append(json.dumps({"input_image_file_name": f"{i}_in.png", "edit_prompt": f"invert {name}",
                                 "edited_image_file_name": f"{i}_out.png"}))
    (split / "metadata.jsonl").write_text("\n".join(lines) + "\n")


def test_imagefolder_file_name_keys_read_like_datasets_does(tmp_path):
    import datasets
    write_imagefolder(tmp_path)
    ours = read_triplets(train_data_dir=str(tmp_path))
    # the recipe's own reading: load_dataset("imagefolder", data_files={"train": <dir>/**})
    theirs = datasets.load_dataset("imagefolder", data_files={"train": str(tmp_path / "**")},
                                   cache_dir=str(tmp_path / "cache"))["train"]
    assert {"input_image", "edit_prompt", "edited_image"} <= set(theirs.column_names)
    assert sorted(t.edit_prompt for t in ours) == sorted(theirs["edit_prompt"])
    by_prompt = {row["edit_prompt"]: row for row in theirs}
    for triplet in ours:
        row = by_prompt[triplet.edit_prompt]
        assert np.array_equal(np.asarray(to_pil(triplet.input_image)), np.asarray(row["input_image"].convert("RGB")))
        assert np.array_equal(np.asarray(to_pil(triplet.edited_image)), np.asarray(row["edited_image"].convert("RGB")))


def test_project_keys_still_work_and_bad_rows_name_the_line(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "metadata.jsonl").write_text(json.dumps(
        {"source": "a.png", "instruction": "x", "target_file_name": "a.png"}) + "\n")
    rows = read_triplets(train_data_dir=str(tmp_path), columns=Columns("source", "instruction", "target"))
    assert rows[0].input_image == tmp_path / "a.png" and rows[0].edited_image == tmp_path / "a.png"
    with pytest.raises(UserInputError, match=r"metadata.jsonl:1: missing column\(s\) \['input_image'"):
        read_triplets(train_data_dir=str(tmp_path))


def test_dataset_config_and_cache_dir_reach_datasets(hub_cache, tmp_path):
    rows = read_triplets(dataset_name=hub.DATASET, dataset_config_name="default")
    assert len(rows) == hub.DATASET_ROWS and rows[0].edit_prompt == "invert the colors"
    with pytest.raises(UserInputError, match=f"--dataset_name {hub.DATASET}: cannot load .*not in the datasets "
                                             "cache"):
        read_triplets(dataset_name=hub.DATASET, cache_dir=str(tmp_path / "empty-cache"))
