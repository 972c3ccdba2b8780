"""The diffusers README's InstructPix2Pix training command, verbatim except --resolution, --max_train_steps and
--checkpointing_steps (and the script name), run offline on the hub-shaped cache: from SD 1.5 (4 -> 8 channel
surgery) in process, and from timbrooks/instruct-pix2pix through `accelerate launch` (as the module
accelerate.commands.launch, like the VS Code configuration). Its second command (--val_image_url,
--report_to=wandb) is refused before any work where wandb is missing; with a local image and TensorBoard it
runs, validation included."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from diffusers import StableDiffusionInstructPix2PixPipeline

import hub_cache as hub
import train_edit

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")

ROOT = Path(__file__).resolve().parent.parent
# examples/instruct_pix2pix/README.md of diffusers, "Toy example" (with its MODEL_NAME / DATASET_ID exports)
README_COMMAND = """accelerate launch --mixed_precision="fp16" train_instruct_pix2pix.py \\
    --pretrained_model_name_or_path=$MODEL_NAME \\
    --dataset_name=$DATASET_ID \\
    --enable_xformers_memory_efficient_attention \\
    --resolution=256 --random_flip \\
    --train_batch_size=4 --gradient_accumulation_steps=4 --gradient_checkpointing \\
    --max_train_steps=15000 \\
    --checkpointing_steps=5000 --checkpoints_total_limit=1 \\
    --learning_rate=5e-05 --max_grad_norm=1 --lr_warmup_steps=0 \\
    --conditioning_dropout_prob=0.05 \\
    --mixed_precision=fp16 \\
    --seed=42"""
# the same README, with validation and Weights & Biases
README_VALIDATION = README_COMMAND + """ \\
    --val_image_url="https://hf.co/datasets/diffusers/diffusers-images-docs/resolve/main/mountain.png" \\
    --validation_prompt="make the mountains snowy" \\
    --report_to=wandb"""
SMALLER = {"--resolution=256": "--resolution=16", "--max_train_steps=15000": "--max_train_steps=2",
           "--checkpointing_steps=5000": "--checkpointing_steps=1"}


def readme_command(text: str, model: str, **replace: str) -> tuple[list[str], list[str]]:
    """(accelerate launch options, script arguments) of a README command, smaller where SMALLER says."""
    text = text.replace("\\\n", " ")  # line continuations, as the shell joins them
    words = shlex.split(text.replace("$MODEL_NAME", model).replace("$DATASET_ID", hub.DATASET))
    words = [SMALLER.get(w, w) for w in words]
    for old, new in replace.items():
        words = [new if w.startswith(old) else w for w in words]
    script = words.index("train_instruct_pix2pix.py")
    return words[2:script], words[script + 1:]


def check_run(out: Path, model: str, last_step: int) -> None:
    """The last checkpoint only (--checkpoints_total_limit=1), and a final pipeline folder that loads as an
    editor."""
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [f"checkpoint-{last_step}"]
    assert (out / f"checkpoint-{last_step}" / "optimizer.bin").is_file()
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(str(out))
    assert pipe.unet.config.in_channels == 8
    assert type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert (out / "train_config.json").is_file() and model in (out / "train_config.json").read_text()


def test_readme_command_from_sd15_with_surgery(hub_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the command names no --output_dir: the default folder, under the cwd
    _, args = readme_command(README_COMMAND, hub.SD15)
    with pytest.warns(UserWarning, match="xformers"):  # not installed here: PyTorch attention, with a warning
        result = train_edit.cli(args)
    assert result["step"] == 2
    out = tmp_path / "runs" / "instruct-pix2pix-model"
    check_run(out, hub.SD15, 2)


def test_readme_command_from_instruct_pix2pix_through_accelerate_launch(hub_cache, tmp_path):
    launcher, args = readme_command(README_COMMAND, hub.IP2P, **{"--max_train_steps": "--max_train_steps=1"})
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *launcher, "--num_processes=1",
                           "--num_machines=1", "--dynamo_backend=no", str(ROOT / "train_edit.py"), *args,
                           f"--output_dir={out}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_run(out, hub.IP2P, 1)


def test_readme_validation_command(hub_cache, tmp_path, monkeypatch, capsys, real_photo):
    monkeypatch.chdir(tmp_path)
    import importlib.util
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real_find_spec(name, *a))
    _, args = readme_command(README_VALIDATION, hub.IP2P)
    with pytest.raises(SystemExit) as exc:
        train_edit.cli(args)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "--report_to wandb: wandb is not installed" in err
    assert not (tmp_path / "runs").exists()
    # a local path for --val_image_url and TensorBoard: trains; --validation_epochs 1 validates after epochs 0
    # and 1 (one step each here: steps 1 and 2), then the end of training (step 2; --validation_steps 100: never)
    real_photo.resize((40, 40)).save(tmp_path / "mountain.png")
    _, args = readme_command(README_VALIDATION, hub.IP2P, **{"--val_image_url": "--val_image_url=mountain.png",
                                                            "--report_to": "--report_to=tensorboard"})
    train_edit.cli(args + ["--validation_inference_steps=1", "--validation_epochs=1"])
    saved = sorted(p.name for p in (tmp_path / "runs" / "instruct-pix2pix-model" / "validation").glob("*.png"))
    assert saved == ["images_validation_0000001.png", "images_validation_0000002.png"]
