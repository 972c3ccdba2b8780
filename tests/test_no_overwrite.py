"""Nothing the user has is replaced silently: two inputs never share an output (folder runs of infer.py and of
stage 1), and the trainers leave the bundled models in checkpoints/ alone unless told so explicitly."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from common.checkpoints import BUNDLED_DIR
from common.errors import UserInputError
from common.images import folder_targets

from _webapp_models import build_tiny_generator


def _folder(root: Path, *names: str) -> Path:
    root.mkdir()
    for i, name in enumerate(names):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / name)
    return root


def test_same_stem_gets_distinct_outputs(tmp_path):
    """The rule: an input already named like its output keeps the name, the others add the suffix to their
    full name (a.png -> a.png, a.jpg -> a.jpg.png, a.jpeg -> a.jpeg.png)."""
    src = _folder(tmp_path / "in", "a.jpg", "a.png", "a.jpeg", "b.webp")
    pairs = {i.name: o.name for i, o in folder_targets(src, tmp_path / "out", suffix=".png")}
    assert pairs == {"a.jpg": "a.jpg.png", "a.png": "a.png", "a.jpeg": "a.jpeg.png", "b.webp": "b.png"}


def test_clash_the_rule_cannot_resolve_is_refused(tmp_path):
    src = _folder(tmp_path / "in", "a.jpg", "a.png", "a.jpg.png")  # a.jpg -> a.jpg.png, which is an input's name
    with pytest.raises(UserInputError, match="a.jpg.png: both"):
        folder_targets(src, tmp_path / "out", suffix=".png")


def test_infer_refuses_an_intermediate_name_shared_by_two_inputs(tmp_path):
    """a.png with --save-intermediate also writes a_stylized.png, which is input a_stylized.png's output."""
    from infer import _jobs, parse_args
    src = _folder(tmp_path / "in", "a.png", "a_stylized.png")
    argv = ["--input", str(src), "--output", str(tmp_path / "out"), "--edit", "x", "--variants", "2"]
    assert len(_jobs(parse_args(argv))) == 2  # variants alone: a-1.png, a-2.png, a_stylized-1.png, ...
    with pytest.raises(UserInputError, match="a_stylized.png: both"):
        _jobs(parse_args([*argv[:-2], "--save-intermediate"]))
    assert not (tmp_path / "out").exists()


def test_stage1_folder_same_stem_writes_both(tmp_path):
    from stylize_gan.checkpoint import load_generator
    from stylize_gan.inference import stylize_path
    src = _folder(tmp_path / "in", "a.jpg", "a.png")
    gen = load_generator(build_tiny_generator(tmp_path / "g.safetensors"))
    written = stylize_path(gen, src, tmp_path / "out")
    assert sorted(p.name for p in written) == ["a.jpg", "a.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg", "a.png"]


def test_trainer_defaults_write_under_runs():
    from edit_diffusion.config import EditTrainConfig
    from stylize_gan.config import GanTrainConfig
    assert GanTrainConfig.__dataclass_fields__["checkpoint_dir"].default.startswith("runs/")
    assert EditTrainConfig.__dataclass_fields__["output_dir"].default.startswith("runs/")


@pytest.mark.parametrize("flag,value", [("--checkpoint-dir", "gan"), ("--log-dir", "gan/logs"),
                                        ("--save-image-dir", ".")])
def test_gan_trainer_refuses_bundled_folder(flag, value):
    from train_gan import parse_args
    argv = ["--data-dir", "d", "--dataset", "Toy", flag, str(BUNDLED_DIR / value)]
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    config = parse_args([*argv, "--allow-overwrite-bundled"])
    assert config.allow_overwrite_bundled


def test_edit_trainer_refuses_bundled_folder(capsys):
    from train_edit import parse_args
    argv = ["--train_data_dir", "d", "--unet_config", "tiny", "--vae_config", "tiny", "--text_encoder_config", "tiny",
            "--output_dir", "checkpoints/editor"]  # relative to the repository root, where the tests run
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert "--allow-overwrite-bundled" in capsys.readouterr().err
    assert parse_args([*argv, "--allow_overwrite_bundled"]).allow_overwrite_bundled
