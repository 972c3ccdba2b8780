"""Resuming either trainer from a checkpoint folder with a truncated, corrupt, foreign or malicious file stops with
one line naming the file (exit 2, no traceback); nothing is resumed silently inexact. Stage 2's save carries a
manifest (size + sha256 of every file), stage 1's training state a checksum of its tensors."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from common.errors import UserInputError
from edit_diffusion import checkpointing as ckpt

from _bad_input_workspace import Evil
from _edit_fixtures import write_inverted_triplets
from _gan_fixtures import TINY_TRAIN_FLAGS, make_paired_folders, single_thread  # noqa: F401 - autouse fixture

DAMAGES = ("truncated", "flipped", "evil")


def damage(path: Path, kind: str, marker: Path) -> None:
    """truncated: first half only; flipped: 16 bytes in the middle overwritten; evil: a malicious pickle."""
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "flipped":
        mid = len(data) // 2
        path.write_bytes(data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 16]) + data[mid + 16:])
    else:
        torch.save({"state": {0: {"w": Evil(marker)}}, "param_groups": []}, path)


@pytest.fixture(scope="module")
def edit_run(tmp_path_factory):
    """A 2-step tiny stage-2 run with a checkpoint at every step (EMA on, frozen VAE / text encoder saved)."""
    from edit_diffusion.config import EditTrainConfig
    from edit_diffusion.trainer import train
    root = tmp_path_factory.mktemp("edit_run")
    (root / "data").mkdir()
    write_inverted_triplets(root / "data", ["astronaut", "chelsea"], [40, 40])
    config = EditTrainConfig(unet_config="tiny", vae_config="tiny", text_encoder_config="tiny", tokenizer="clip",
                             prediction_type="sample", train_data_dir=str(root / "data"), resolution=32,
                             train_batch_size=2, max_train_steps=2, checkpointing_steps=1, seed=0, default_steps=2,
                             use_ema=True, output_dir=str(root / "run"))
    train(config)
    return root / "run" / "checkpoint-1", config


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.name != "trainer_state.json")


def test_edit_manifest_lists_every_file(edit_run):
    folder, _ = edit_run
    state = ckpt.load_json(folder / "trainer_state.json")
    assert sorted(state["files"]) == _files(folder)
    ckpt.verify_resume_folder(folder, 0)  # an intact save passes


def _refresh_manifest(folder: Path) -> None:
    state = ckpt.load_json(folder / "trainer_state.json")
    ckpt.save_json({**state, "files": ckpt.file_manifest(folder)}, folder / "trainer_state.json")


def _as_fsdp_sharded_save(folder: Path, copy: Path) -> None:
    """The checkpoint in the layout accelerate writes under FSDP's SHARDED_STATE_DICT: the optimizer as a
    torch.distributed.checkpoint folder optimizer_0/ (no optimizer.bin), with a fresh manifest."""
    import torch.distributed.checkpoint as dcp
    shutil.copytree(folder, copy)
    (copy / "optimizer.bin").unlink()
    dcp.save({"state": {"0.exp_avg": torch.zeros(4)}, "param_groups": {"lr": torch.tensor(1e-4)}},
             checkpoint_id=str(copy / "optimizer_0"))
    _refresh_manifest(copy)


def test_edit_fsdp_sharded_optimizer_state_resumes(edit_run, tmp_path):
    """A save made under configs/accelerate/fsdp2.yaml passes (it has no optimizer.bin: the GPU check's FSDP2
    resume was refused for that); the same save without its shard index is refused, naming the folder."""
    folder, _ = edit_run
    copy = tmp_path / "ckpt"
    _as_fsdp_sharded_save(folder, copy)
    assert (copy / "optimizer_0" / ".metadata").is_file() and not (copy / "optimizer.bin").exists()
    ckpt.verify_resume_folder(copy, 0)
    (copy / "optimizer_0" / ".metadata").unlink()
    _refresh_manifest(copy)
    with pytest.raises(UserInputError, match="optimizer_0"):
        ckpt.verify_resume_folder(copy, 0)


@pytest.mark.parametrize("kind", DAMAGES)
def test_edit_each_damaged_file_is_named(edit_run, kind, tmp_path):
    """Every file of the save, damaged in place: refused before any is loaded, the file named, no payload run."""
    folder, _ = edit_run
    marker = tmp_path / "PWNED"
    for name in _files(folder):
        path = folder / name
        original = path.read_bytes()
        try:
            damage(path, kind, marker)
            with pytest.raises(UserInputError, match=name.split("/")[-1]):
                ckpt.verify_resume_folder(folder, 0)
        finally:
            path.write_bytes(original)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["optimizer.bin", "scheduler.bin", "random_states_0.pkl"])
@pytest.mark.parametrize("kind", ["truncated", "random", "evil", "foreign"])
def test_edit_pickled_files_checked_without_manifest(edit_run, name, kind, tmp_path):
    """A save without a manifest (older version, or a hand-edited one): the files accelerate unpickles are
    still read safely and checked, so a damaged RNG state is no longer skipped silently."""
    folder, _ = edit_run
    copy = tmp_path / "ckpt"
    shutil.copytree(folder, copy)
    state = ckpt.load_json(copy / "trainer_state.json")
    del state["files"]
    ckpt.save_json(state, copy / "trainer_state.json")
    marker = tmp_path / "PWNED"
    path = copy / name
    if kind == "random":
        path.write_bytes(os.urandom(path.stat().st_size))
    elif kind == "foreign":  # a plain, readable torch file holding something else
        torch.save({"weight": torch.zeros(3)}, path)
    else:
        damage(path, kind, marker)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)]),
                                                      lambda step: 1.0)

    class Probe:  # what load_accelerator_state needs from an Accelerator, up to the point a file is refused
        process_index = 0

        def load_state(self, path):
            raise AssertionError("reached accelerate although a file is bad")

    with pytest.raises(UserInputError, match=name):
        ckpt.verify_resume_folder(copy, 0)
        ckpt.load_accelerator_state(Probe(), copy, lr_scheduler)
    assert not marker.exists()


def test_edit_cli_resume_from_damaged_optimizer_is_one_line(edit_run, tmp_path, capsys):
    """The issue's case end to end: a corrupt optimizer.bin -> `error: ...optimizer.bin...`, exit 2."""
    from train_edit import cli
    folder, config = edit_run
    run = tmp_path / "run"
    shutil.copytree(folder, run / "checkpoint-1")
    path = run / "checkpoint-1" / "optimizer.bin"
    path.write_bytes(os.urandom(path.stat().st_size))
    argv = ["--unet_config", "tiny", "--vae_config", "tiny", "--text_encoder_config", "tiny", "--tokenizer", "clip",
            "--prediction_type", "sample", "--train_data_dir", config.train_data_dir, "--resolution", "32",
            "--train_batch_size", "2", "--max_train_steps", "3", "--seed", "0", "--use_ema",
            "--output_dir", str(run), "--resume_from_checkpoint", "latest"]
    with pytest.raises(SystemExit) as exit_info:
        cli(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "optimizer.bin" in err[0], err


# --- stage 1 ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    from train_gan import cli
    root = tmp_path_factory.mktemp("gan_run")
    make_paired_folders(root / "pairs", n=4)
    argv = ["--mode", "paired", "--data-dir", str(root / "pairs"), *TINY_TRAIN_FLAGS, "--epochs", "1"]
    cli([*argv, "--checkpoint-dir", str(root / "ckpt")])
    return root, argv


GAN_DAMAGES = [("generator.safetensors", "truncated"), ("generator.safetensors", "evil"),
               ("discriminator.safetensors", "truncated"), ("discriminator.safetensors", "evil"),
               ("training_state.safetensors", "truncated"), ("training_state.safetensors", "flipped"),
               ("training_state.safetensors", "evil"), ("generator.safetensors", "foreign"),
               ("training_state.safetensors", "foreign")]


@pytest.mark.parametrize("name,kind", GAN_DAMAGES, ids=[f"{n.split('.')[0]}-{k}" for n, k in GAN_DAMAGES])
def test_gan_resume_from_damaged_file_is_one_line(gan_run, name, kind, tmp_path, capsys):
    """(A flipped byte in generator/discriminator.safetensors is harmless: the training state holds the
    weights of the same save and replaces them, so the resume stays exact.)"""
    from train_gan import cli
    root, argv = gan_run
    ckpt_dir = tmp_path / "ckpt"
    shutil.copytree(root / "ckpt", ckpt_dir)
    marker = tmp_path / "PWNED"
    if kind == "foreign":  # another file of the folder under this name
        other = "discriminator.safetensors" if name == "generator.safetensors" else "generator.safetensors"
        shutil.copy(ckpt_dir / other, ckpt_dir / name)
    else:
        damage(ckpt_dir / name, kind, marker)
    with pytest.raises(SystemExit) as exit_info:
        cli([*argv, "--epochs", "2", "--checkpoint-dir", str(ckpt_dir), "--resume_cond", "gen_dis"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and name in err[0], err
    assert not marker.exists()


@pytest.mark.parametrize("keep", ["generator", "discriminator"])
def test_gan_resume_from_a_crafted_one_network_state_is_one_line(gan_run, keep, tmp_path, capsys):
    """A training state re-written (checksum and metadata consistent) with one network's weights and optimizer
    only, as a crafted or half-written file would be: one line naming the file, not a KeyError traceback."""
    import json
    from safetensors.torch import save_file
    from common.checkpoints import load_tensors, read_metadata
    from stylize_gan.checkpoint import tensors_digest
    from train_gan import cli
    root, argv = gan_run
    ckpt_dir = tmp_path / "ckpt"
    shutil.copytree(root / "ckpt", ckpt_dir)
    path = ckpt_dir / "training_state.safetensors"
    meta, tensors = read_metadata(path), load_tensors(path)
    drop = "discriminator" if keep == "generator" else "generator"
    tensors = {k: v for k, v in tensors.items() if not k.startswith((f"model.{drop}.", f"optim.{drop}"))}
    info = json.loads(meta["info"])
    info["optimizers"].pop(drop)
    meta = {**meta, "info": json.dumps(info), "tensors_sha256": tensors_digest(tensors)}
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(SystemExit) as exit_info:
        cli([*argv, "--epochs", "2", "--checkpoint-dir", str(ckpt_dir), "--resume_cond", "gen_dis"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert len(err) == 1 and "training_state.safetensors" in err[0] and "expected generator and discriminator" in err[0], err


def test_edit_missing_random_state_is_named(edit_run, tmp_path):
    """With the manifest a missing file is named; without it (e.g. resumed by more processes than saved) too."""
    folder, _ = edit_run
    copy = tmp_path / "ckpt"
    shutil.copytree(folder, copy)
    (copy / "random_states_0.pkl").unlink()
    with pytest.raises(UserInputError, match="random_states_0.pkl: missing"):
        ckpt.verify_resume_folder(copy, 0)
    with pytest.raises(UserInputError, match="random_states_1.pkl: missing"):
        _without_manifest_check(folder, tmp_path, 1)


def _without_manifest_check(folder: Path, tmp_path: Path, rank: int) -> None:
    copy = tmp_path / "bare"
    shutil.copytree(folder, copy)
    state = ckpt.load_json(copy / "trainer_state.json")
    del state["files"]
    ckpt.save_json(state, copy / "trainer_state.json")
    ckpt.verify_resume_folder(copy, rank)
