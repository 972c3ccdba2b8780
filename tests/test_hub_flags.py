"""Every flag of diffusers' train_instruct_pix2pix.py (tests/data/diffusers_ip2p_flags.md, copied from the
reference list) parses in train_edit.py and reaches the config with the same meaning; the defaults that
differ are exactly the ones the README lists; what cannot run here is refused in one line before any work."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import train_edit
from edit_diffusion.config import EditTrainConfig

FLAGS_FILE = Path(__file__).parent / "data" / "diffusers_ip2p_flags.md"
ROW = re.compile(r"^\| `--(\w+)` \| (.+?) \| (.+?) \|$")
# diffusers flag -> our field, where the names differ
FIELD = {"val_image_url": "validation_image"}
# Our defaults that differ from the recipe's (diffusers value, ours), each listed in the README with its reason.
DIFFERENT_DEFAULTS = {
    "pretrained_model_name_or_path": ("required", None),  # optional here: --unet_config etc. train from scratch
    "num_validation_images": (4, 1),
    "validation_epochs": (1, None),
    "output_dir": ("instruct-pix2pix-model", "runs/instruct-pix2pix-model"),
    "train_batch_size": (16, 4),
    "conditioning_dropout_prob": (None, 0.05),
}
# A value per flag that its checks accept (and that differs from the default, so reaching the config shows)
VALUES = {"resolution": "64", "mixed_precision": "bf16", "report_to": "all", "lr_scheduler": "cosine",
          "resume_from_checkpoint": "latest", "local_rank": "0", "conditioning_dropout_prob": "0.1",
          "adam_beta1": "0.5", "adam_beta2": "0.9", "val_image_url": "mountain.png", "dataloader_num_workers": "2"}


def read_flags() -> list[tuple[str, str, str]]:
    """(flag name, default text, kind) rows of the reference table."""
    rows = [ROW.match(line.strip()).groups() for line in FLAGS_FILE.read_text().splitlines()
            if ROW.match(line.strip())]
    return [(name, default.strip("` "), kind) for name, default, kind in rows]


FLAGS = read_flags()


def test_reference_list_is_complete():
    assert len(FLAGS) == 51  # the script's 51 flags, none lost in the copy


def _default(text: str, kind: str):
    if text in ("None", "required"):
        return None if text == "None" else "required"
    if kind == "store_true":
        return text == "True"
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    return text.strip('"')


def _value(name: str, kind: str) -> tuple[str | None, object]:
    """(argv value or None for a switch, the value the config should hold)."""
    if kind == "store_true":
        return None, True
    text = VALUES.get(name, "3" if kind == "int" else "0.25" if kind == "float" else f"{name}-value")
    return text, int(text) if kind == "int" else float(text) if kind == "float" else text


@pytest.mark.parametrize("name,default,kind", FLAGS, ids=[f[0] for f in FLAGS])
def test_every_diffusers_flag_parses_and_reaches_the_config(name, default, kind):
    base = {"pretrained_model_name_or_path": "org/model", "dataset_name": "org/data",
            "validation_prompt": "make it snowy", "val_image_url": "mountain.png"}
    if name == "train_data_dir":
        del base["dataset_name"]
    text, want = _value(name, kind)
    argv = [f"--{k}={v}" for k, v in base.items() if k != name]
    argv += [f"--{name}"] if text is None else [f"--{name}={text}"]  # the recipe's --flag=value spelling
    config = train_edit.parse_args(argv)
    assert getattr(config, FIELD.get(name, name)) == want


def test_defaults_differ_only_where_documented():
    ours = EditTrainConfig.__dataclass_fields__
    differing = {}
    for name, default, kind in FLAGS:
        theirs, mine = _default(default, kind), ours[FIELD.get(name, name)].default
        if theirs != mine:
            differing[name] = (theirs, mine)
    assert differing == DIFFERENT_DEFAULTS


def test_local_rank_minus_one_and_below(capsys):
    base = ["--pretrained_model_name_or_path", "org/model", "--dataset_name", "org/data"]
    assert train_edit.parse_args(base + ["--local_rank", "-1"]).local_rank == -1
    with pytest.raises(SystemExit) as exc:
        train_edit.parse_args(base + ["--local_rank", "-2"])
    assert exc.value.code == 2 and "--local_rank" in capsys.readouterr().err


REFUSED = {
    "wandb not installed": (["--report_to=wandb"], "--report_to wandb: wandb is not installed"),
    "comet_ml not installed": (["--report_to", "comet_ml"], "--report_to comet_ml: comet_ml is not installed"),
    "8-bit Adam without bitsandbytes": (["--use_8bit_adam"], "needs bitsandbytes"),
    "push offline": (["--push_to_hub", "--hub_model_id", "me/model"], "--push_to_hub: the hub is unreachable in "
                                                                      "offline mode"),
    "token with wandb": (["--push_to_hub", "--hub_token", "hf_x", "--report_to", "wandb"],
                         "--hub_token with --report_to wandb"),
}


@pytest.mark.parametrize("extra,message", REFUSED.values(), ids=list(REFUSED))
def test_what_cannot_run_is_refused_in_one_line_before_work(extra, message, tmp_path, capsys, monkeypatch):
    import importlib.util
    real_find_spec = importlib.util.find_spec
    # the refusals must not depend on what this machine happens to have installed
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in (
        "wandb", "comet_ml", "bitsandbytes") else real_find_spec(name, *a))
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        train_edit.cli(["--pretrained_model_name_or_path", "nobody/not-cached", "--dataset_name", "nobody/none",
                        "--output_dir", str(out)] + extra)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert message in err
    assert not out.exists()  # refused before anything was written


def test_installed_tracker_other_than_tensorboard_is_one_line(tmp_path, capsys, monkeypatch):
    import importlib.util
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "wandb" else real_find_spec(name, *a))
    with pytest.raises(SystemExit) as exc:
        train_edit.cli(["--pretrained_model_name_or_path", "a/b", "--dataset_name", "c/d", "--report_to", "wandb",
                        "--output_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and "TensorBoard" in err


def test_scale_lr_and_optimizer_class():
    import torch

    from edit_diffusion.recipe import learning_rate, optimizer_class
    config = train_edit.parse_args(["--pretrained_model_name_or_path", "a/b", "--dataset_name", "c/d",
                                    "--learning_rate=5e-05", "--train_batch_size=4",
                                    "--gradient_accumulation_steps=4", "--scale_lr"])
    assert learning_rate(config, num_processes=2) == pytest.approx(5e-05 * 4 * 4 * 2)
    config.scale_lr = False
    assert learning_rate(config, num_processes=2) == 5e-05
    assert optimizer_class(config) is torch.optim.AdamW
