"""Stage-1 training survives interruption: real `train_gan.py` processes are SIGKILLed, SIGTERMed and SIGINTed
at several points and resumed; the resumed run must end bit-identical (weights, optimizer state, step) to an
uninterrupted run. Also: a crash between the checkpoint files, and non-finite losses (skipped, then a stop)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.checkpoints import load_tensors, read_metadata
from common.errors import TrainingStopped
from train_gan import cli, parse_args

from _gan_fixtures import TINY_TRAIN_FLAGS, make_paired_folders, single_thread  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
EPOCHS = 30  # 4 pairs / batch 2 = 2 steps per epoch -> 60 steps, a checkpoint every epoch


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return make_paired_folders(tmp_path_factory.mktemp("pairs") / "data", n=4)[0].parent


def _flags(data: Path, ckpt: Path, *extra: str) -> list[str]:
    return ["--mode", "paired", "--data-dir", str(data), "--checkpoint-dir", str(ckpt), *TINY_TRAIN_FLAGS,
            "--image-size", "48", "--epochs", str(EPOCHS), "--initial-epochs", "2", "--save-interval", "1",
            "--log-interval", "5", "--threads", "1", *extra]


def saved_step(ckpt: Path) -> int:
    """Step of the last complete checkpoint (-1 when there is none yet)."""
    state = ckpt / "training_state.safetensors"
    if not state.exists():
        return -1
    return json.loads(read_metadata(state)["info"])["step"]


def _run_until(flags: list[str], ckpt: Path, step: int, sig: int, log: Path) -> subprocess.CompletedProcess:
    """Start train_gan.py, send `sig` once a checkpoint of at least `step` exists, wait for the exit."""
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "train_gan.py", *flags], cwd=REPO, env=ENV,
                                stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.time() + 600
        while proc.poll() is None and time.time() < deadline:
            try:
                if saved_step(ckpt) >= step:
                    break
            except Exception:  # noqa: BLE001 - the file may be replaced while we read its header
                pass
            time.sleep(0.02)
        assert proc.poll() is None, f"run ended before step {step}: {log.read_text()[-2000:]}"
        proc.send_signal(sig)
        proc.wait(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", log.read_text())


def _final_state(ckpt: Path) -> dict[str, torch.Tensor]:
    state = load_tensors(ckpt / "training_state.safetensors")
    return {k: v for k, v in state.items() if k.startswith(("optim.", "model."))}


def _assert_same_run(a: Path, b: Path) -> None:
    assert saved_step(a) == saved_step(b) == 2 * EPOCHS
    ga, gb = load_tensors(a / "generator.safetensors"), load_tensors(b / "generator.safetensors")
    assert ga.keys() == gb.keys() and all(torch.equal(ga[k], gb[k]) for k in ga), "generator weights differ"
    sa, sb = _final_state(a), _final_state(b)
    assert sa.keys() == sb.keys() and any(k.startswith("optim.generator.") for k in sa)
    differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not differ, f"optimizer / weight state differs: {differ[:5]}"


def test_kill_term_int_then_resume_matches_uninterrupted(pairs, tmp_path):
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, "train_gan.py", *_flags(pairs, reference)], cwd=REPO, env=ENV, check=True,
                   capture_output=True)

    ckpt = tmp_path / "interrupted"
    # 1. SIGKILL: no chance to save; the last complete checkpoint (an epoch boundary) must be intact
    killed = _run_until(_flags(pairs, ckpt), ckpt, 4, signal.SIGKILL, tmp_path / "kill.log")
    assert killed.returncode == -signal.SIGKILL
    first = saved_step(ckpt)
    assert 4 <= first < 2 * EPOCHS and first % 2 == 0

    # 2. resumed, then SIGTERM: a final checkpoint at the exact step it stopped, exit 143, no traceback
    resume = _flags(pairs, ckpt, "--resume_cond", "gen_dis")
    termed = _run_until(resume, ckpt, first + 6, signal.SIGTERM, tmp_path / "term.log")
    assert termed.returncode == 128 + signal.SIGTERM, termed.stderr[-2000:]
    assert "Traceback" not in termed.stderr
    assert "stopped by SIGTERM at step" in termed.stderr and "--resume_cond gen_dis" in termed.stderr
    stopped_at = int(termed.stderr.split("stopped by SIGTERM at step ")[1].split(";")[0])
    assert saved_step(ckpt) == stopped_at > first + 6 - 1

    # 3. resumed, then SIGINT (Ctrl-C): same clean stop, exit 130
    inted = _run_until(resume, ckpt, stopped_at + 4, signal.SIGINT, tmp_path / "int.log")
    assert inted.returncode == 128 + signal.SIGINT, inted.stderr[-2000:]
    assert "Traceback" not in inted.stderr and "stopped by SIGINT" in inted.stderr

    # 4. resumed to the end: identical to never having been interrupted
    done = subprocess.run([sys.executable, "train_gan.py", *resume], cwd=REPO, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_same_run(reference, ckpt)


def _in_process(pairs: Path, ckpt: Path, *extra: str) -> list[str]:
    return _flags(pairs, ckpt, "--epochs", "3", *extra)


def test_crash_between_checkpoint_files_resumes_from_last_complete_save(pairs, tmp_path, monkeypatch):
    """generator.safetensors of save N+1 written, training_state of save N+1 not: resume uses save N entirely."""
    import stylize_gan.checkpoint as ckpt_module
    reference = tmp_path / "reference"
    cli(_in_process(pairs, reference))

    real_save = ckpt_module.save_training_state

    def crash_at_step_4(path, optimizers, rng, info, models=None):
        if info["step"] == 4:
            raise KeyboardInterrupt  # the process dies here: after G / D / config, before the state file
        real_save(path, optimizers, rng, info, models)

    ckpt = tmp_path / "crashed"
    monkeypatch.setattr(ckpt_module, "save_training_state", crash_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        cli.__wrapped__(_in_process(pairs, ckpt))
    monkeypatch.setattr(ckpt_module, "save_training_state", real_save)
    assert saved_step(ckpt) == 2
    assert json.loads(read_metadata(ckpt / "generator.safetensors")["extra"])["step"] == 4  # one save newer
    cli(_in_process(pairs, ckpt, "--resume_cond", "gen_dis"))
    assert saved_step(ckpt) == saved_step(reference) == 6
    ga, gb = load_tensors(reference / "generator.safetensors"), load_tensors(ckpt / "generator.safetensors")
    assert all(torch.equal(ga[k], gb[k]) for k in ga)


def _nan_batches(monkeypatch, bad_steps: set[int] | None):
    """make_batch returns a NaN source on the given (1-based) steps, or on every step from the 3rd when None."""
    import stylize_gan.trainer as trainer
    real, calls = trainer.make_batch, {"n": 0}

    def make_batch(*args, **kwargs):
        calls["n"] += 1
        batch = real(*args, **kwargs)
        if (bad_steps is None and calls["n"] >= 3) or (bad_steps and calls["n"] in bad_steps):
            batch.source = torch.full_like(batch.source, float("nan"))
        return batch
    monkeypatch.setattr(trainer, "make_batch", make_batch)


def test_nonfinite_steps_are_skipped_with_a_warning(pairs, tmp_path, monkeypatch, capsys):
    _nan_batches(monkeypatch, {3, 5})  # one init-phase step and one adversarial step
    result = cli(_in_process(pairs, tmp_path / "ck"))
    err = capsys.readouterr().err
    assert err.count("non-finite loss or gradients") == 2 and "step skipped (1 in a row)" in err
    assert result["step"] == 6
    for name in ("generator", "discriminator"):
        weights = load_tensors(tmp_path / "ck" / f"{name}.safetensors")
        assert all(torch.isfinite(v).all() for v in weights.values()), f"{name} weights got NaN"
    state = load_tensors(tmp_path / "ck" / "training_state.safetensors")
    assert all(torch.isfinite(v).all() for k, v in state.items() if k.startswith("optim."))


def test_training_stops_after_repeated_nonfinite_steps(pairs, tmp_path, monkeypatch, capsys):
    _nan_batches(monkeypatch, None)
    config = parse_args(_in_process(pairs, tmp_path / "ck", "--max-nonfinite-steps", "3"))
    from train_gan import main
    with pytest.raises(TrainingStopped, match="3 non-finite steps in a row at step 5"):
        main(config)
    assert saved_step(tmp_path / "ck") == 4  # the last epoch-end save (its skipped steps changed nothing) is kept
    weights = load_tensors(tmp_path / "ck" / "generator.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values())
    with pytest.raises(SystemExit) as exit_:  # through the CLI: one line, exit code 1
        cli(_in_process(pairs, tmp_path / "ck2", "--max-nonfinite-steps", "3"))
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: training stopped: 3 non-finite")
