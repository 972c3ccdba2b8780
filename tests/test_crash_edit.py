"""Stage-2 training survives interruption: real `train_edit.py` processes are SIGKILLed and SIGTERMed, then
resumed with `--resume_from_checkpoint latest`; the result must match an uninterrupted run. A save that dies
half-way never becomes the `latest` checkpoint. Non-finite losses are skipped, then training stops."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.checkpoints import load_tensors

from _edit_fixtures import write_inverted_triplets

REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore", HF_HUB_OFFLINE="1",
           TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
STEPS = 24


@pytest.fixture(scope="module")
def triplets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("triplets")
    write_inverted_triplets(folder, ["astronaut", "chelsea", "coffee", "rocket"], [40] * 4)
    return folder


def edit_flags(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--unet_config", "tiny", "--vae_config", "tiny", "--text_encoder_config", "tiny", "--tokenizer", "clip",
            "--prediction_type", "sample", "--train_data_dir", str(data), "--resolution", "32", "--random_flip",
            "--train_batch_size", "2", "--max_train_steps", str(STEPS), "--checkpointing_steps", "2",
            "--checkpoints_total_limit", "2", "--learning_rate", "1e-3", "--lr_warmup_steps", "2", "--seed", "0",
            "--default_steps", "2", "--output_dir", str(out), *extra]


def latest_step(out: Path) -> int:
    steps = [int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(steps, default=-1)


def _run_until(flags: list[str], out: Path, step: int, sig: int, log: Path) -> subprocess.CompletedProcess:
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "train_edit.py", *flags], cwd=REPO, env=ENV,
                                stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.time() + 600
        while proc.poll() is None and time.time() < deadline and latest_step(out) < step:
            time.sleep(0.02)
        assert proc.poll() is None, f"run ended before step {step}: {log.read_text()[-2000:]}"
        proc.send_signal(sig)
        proc.wait(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", log.read_text())


def test_kill_and_term_then_resume_matches_uninterrupted(triplets, tmp_path):
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, "train_edit.py", *edit_flags(triplets, reference)], cwd=REPO, env=ENV,
                   check=True, capture_output=True)

    out = tmp_path / "interrupted"
    killed = _run_until(edit_flags(triplets, out), out, 4, signal.SIGKILL, tmp_path / "kill.log")
    assert killed.returncode == -signal.SIGKILL
    first = latest_step(out)
    assert 4 <= first < STEPS

    resume = edit_flags(triplets, out, "--resume_from_checkpoint", "latest")
    termed = _run_until(resume, out, first + 4, signal.SIGTERM, tmp_path / "term.log")
    assert termed.returncode == 128 + signal.SIGTERM, termed.stderr[-2000:]
    assert "Traceback" not in termed.stderr and "stopped by SIGTERM at step" in termed.stderr
    stopped_at = int(termed.stderr.split("stopped by SIGTERM at step ")[1].split(";")[0])
    assert latest_step(out) == stopped_at  # the final checkpoint is at the exact step it stopped
    assert not (out / "model_index.json").exists()  # an interrupted run does not pose as a finished model

    done = subprocess.run([sys.executable, "train_edit.py", *resume], cwd=REPO, env=ENV, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from checkpoint-{stopped_at} at step {stopped_at}" in done.stdout + done.stderr
    for part in ("unet", "text_encoder"):
        ref = load_tensors(next((reference / part).glob("*.safetensors")))
        new = load_tensors(next((out / part).glob("*.safetensors")))
        differ = [k for k in ref if not torch.equal(ref[k], new[k])]
        assert not differ, f"{part} differs from the uninterrupted run: {differ[:5]}"


def test_half_written_checkpoint_is_never_latest(tmp_path, monkeypatch):
    """A save that dies before it completes leaves checkpoint-<previous> as `latest`; the next save cleans up."""
    from accelerate import Accelerator

    import edit_diffusion.checkpointing as ckpt
    from edit_diffusion.config import EditTrainConfig

    config = EditTrainConfig(pretrained_model_name_or_path="base", train_data_dir="x", checkpoints_total_limit=3)
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Linear(3, 2))
    ckpt.save_checkpoint(accelerator, tmp_path, 2, config, parts=None, ema=None)
    real_save_json = ckpt.save_json

    def die(*args, **kwargs):
        raise KeyboardInterrupt  # the process is killed while writing checkpoint-4

    monkeypatch.setattr(ckpt, "save_json", die)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(accelerator, tmp_path, 4, config, parts=None, ema=None)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-2"]
    assert ckpt.find_resume_dir(tmp_path, "latest").name == "checkpoint-2"
    monkeypatch.setattr(ckpt, "save_json", real_save_json)
    ckpt.save_checkpoint(accelerator, tmp_path, 4, config, parts=None, ema=None)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-4"]
    assert not list(tmp_path.glob(".checkpoint-*.tmp"))
    saved = load_tensors(tmp_path / "checkpoint-4" / "model.safetensors")
    assert torch.equal(saved["weight"], model.weight.detach())
