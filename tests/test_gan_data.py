"""Dataset layouts, bad-file reporting, pair-consistent augmentation, deterministic sampling, sketches."""
import numpy as np
import pytest
import torch
from PIL import Image

from common.errors import UserInputError
from stylize_gan.data import (EpochSampler, UnpairedDataset, find_paired, find_unpaired, load_stack, make_augment,
                              sample_index)
from stylize_gan.make_sketches import cli as sketches_cli
from stylize_gan.sketches import SKETCHERS, canny_sketch, xdog_sketch

from _gan_fixtures import make_animegan_dataset, make_paired_folders, photo_crops, single_thread  # noqa: F401


def test_animegan_layout_generates_smooth_and_finds_test_photos(tmp_path):
    root = make_animegan_dataset(tmp_path / "ds", n=4)
    files = find_unpaired(root, "Toy")
    assert len(files.photos) == 4 and len(files.styles) == 4
    assert all(style.stem == smooth.stem for style, smooth in files.styles)
    assert (root / "Toy" / "smooth").is_dir() and files.test_photos[0].name == "t.png"
    with pytest.raises(UserInputError, match="Hayao"):
        find_unpaired(root, "Hayao")


def test_unreadable_and_mismatched_files_are_named_and_skipped(tmp_path):
    root = make_animegan_dataset(tmp_path / "ds", n=4)
    (root / "train_photo" / "zz_broken.jpg").write_bytes(b"\xff\xd8 truncated")
    files = find_unpaired(root, "Toy")
    with pytest.warns(UserWarning, match="zz_broken.jpg"):
        photos, kept = load_stack([(p,) for p in files.photos], 24, "train_photo")
    assert photos.shape == (4, 3, 24, 24) and photos.dtype == torch.uint8 and len(kept) == 4
    # a pair whose two images differ in size is "wrong-shaped"
    a, b = make_paired_folders(tmp_path / "pairs", n=3)
    Image.fromarray(photo_crops(1, size=50)[0]).save(b / "001.png")
    groups, split = find_paired(str(tmp_path / "pairs"), None, None)
    with pytest.warns(UserWarning, match="001.png"):
        pairs, _ = load_stack(groups, 24, "paired", split_ab=split)
    assert pairs.shape == (2, 6, 24, 24)
    with pytest.raises(UserInputError, match="no usable images"), pytest.warns(UserWarning):
        load_stack([(root / "train_photo" / "zz_broken.jpg",)], 24, "train_photo")


def test_paired_folders_ab_images_and_unmatched_names(tmp_path):
    a, b = make_paired_folders(tmp_path / "pairs", n=3)
    Image.fromarray(photo_crops(1)[0]).save(a / "lonely.png")
    with pytest.warns(UserWarning, match="lonely.png"):
        groups, split = find_paired(None, str(a), str(b))
    assert len(groups) == 3 and not split
    # pix2pix AB images: source on the left, target on the right
    ab_dir = tmp_path / "ab" / "train"
    ab_dir.mkdir(parents=True)
    left, right = np.zeros((20, 20, 3), np.uint8), np.full((20, 20, 3), 255, np.uint8)
    Image.fromarray(np.concatenate([left, right], axis=1)).save(ab_dir / "x.png")
    Image.fromarray(np.zeros((20, 41, 3), np.uint8)).save(ab_dir / "odd.png")
    groups, split = find_paired(str(tmp_path / "ab"), None, None)
    assert split and len(groups) == 2
    with pytest.warns(UserWarning, match="odd.png"):
        pairs, _ = load_stack(groups, 16, "paired", split_ab=True)
    assert pairs.shape == (1, 6, 16, 16)
    assert pairs[0, :3].max() == 0 and pairs[0, 3:].min() == 255


def test_augmentation_is_identical_for_both_images_of_a_pair():
    torch.manual_seed(0)
    augment = make_augment(24)
    src = torch.rand(4, 3, 40, 40)
    out = augment(torch.cat([src, 1 - src], dim=1))  # target = a function of the source, pixel by pixel
    assert out.shape == (4, 6, 24, 24)
    torch.testing.assert_close(out[:, 3:], 1 - out[:, :3], atol=1e-5, rtol=0)
    assert not torch.allclose(out[0, :3], out[1, :3])  # and it is random


def test_sampling_is_a_function_of_seed_epoch_index():
    sampler = EpochSampler(6, seed=3)
    sampler.set_epoch(2)
    first, again = list(sampler), list(sampler)
    assert first == again and sorted(first) == list(range(12, 18))
    sampler.set_epoch(3)
    assert [i % 6 for i in sampler] != [i % 6 for i in first]
    assert sample_index(0, 1, 2, 10) == sample_index(0, 1, 2, 10)
    data = UnpairedDataset(torch.zeros(6, 3, 4, 4, dtype=torch.uint8), torch.zeros(5, 6, 4, 4, dtype=torch.uint8), 0)
    assert data[13]["style"].shape == (6, 4, 4)


def test_sketches_are_dark_lines_on_white_and_cli_makes_pairs(tmp_path, capsys):
    photo = photo_crops(1, size=64)[0]
    for fn in (canny_sketch, xdog_sketch):
        sketch = fn(photo)
        assert sketch.shape == photo.shape and sketch.dtype == np.uint8
        assert np.median(sketch) == 255 and sketch.min() < 128  # mostly paper, some ink
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, crop in enumerate(photo_crops(3)):
        Image.fromarray(crop).save(photos / f"p{i}.jpg")
    assert sketches_cli(["--input", str(photos), "--output", str(tmp_path / "pairs"), "--method", "canny"]) == 3
    groups, split = find_paired(str(tmp_path / "pairs"), None, None)
    assert len(groups) == 3 and not split and groups[0][0].parent.name == "A"
    with pytest.raises(SystemExit) as exit_info:  # existing pairs are not overwritten
        sketches_cli(["--input", str(photos), "--output", str(tmp_path / "pairs")])
    assert exit_info.value.code == 2 and "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sketches_cli(["--input", str(photos), "--output", str(tmp_path / "x"), "--method", "hed"])
    assert set(SKETCHERS) == {"canny", "xdog"}
