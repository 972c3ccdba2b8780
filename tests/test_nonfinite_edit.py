"""Stage 2 under non-finite numbers: NaN losses are skipped with a warning (weights stay finite), training stops
with a one-line error after --max_nonfinite_steps in a row, and a half-precision edit that overflows to NaN
(black image) is recomputed in float32."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import train_edit
from common.checkpoints import load_tensors
from common.errors import TrainingStopped

from _webapp_models import build_tiny_editor, real_photo
from test_crash_edit import edit_flags, triplets  # noqa: F401 - the module-scoped triplet fixture


def _nan_losses(monkeypatch, bad_calls: set[int] | None):
    """edit_loss returns NaN on the given (1-based) calls, or on every call from the 3rd when None."""
    import edit_diffusion.trainer as trainer
    real, calls = trainer.edit_loss, {"n": 0}

    def edit_loss(*args, **kwargs):
        calls["n"] += 1
        loss, logs = real(*args, **kwargs)
        if (bad_calls is None and calls["n"] >= 3) or (bad_calls and calls["n"] in bad_calls):
            loss = loss * float("nan")
        return loss, logs
    monkeypatch.setattr(trainer, "edit_loss", edit_loss)


def _flags(data, out, steps: int, *extra):
    flags = edit_flags(data, out, *extra)
    flags[flags.index("--max_train_steps") + 1] = str(steps)
    return flags


def test_nan_losses_are_skipped(triplets, tmp_path, monkeypatch, capsys):  # noqa: F811
    torch.set_num_threads(1)
    _nan_losses(monkeypatch, {2, 3})
    result = train_edit.main(train_edit.parse_args(_flags(triplets, tmp_path / "out", 4)))
    err = capsys.readouterr().err
    assert err.count("non-finite loss") == 2 and "(2 in a row)" in err
    assert result["step"] == 4  # skipped batches are not optimisation steps
    unet = load_tensors(next((tmp_path / "out" / "unet").glob("*.safetensors")))
    assert all(torch.isfinite(v).all() for v in unet.values())


def test_nan_gradients_with_a_finite_loss_are_skipped(triplets, tmp_path, monkeypatch, capsys):  # noqa: F811
    """The guard checks gradients too (as stage 1 does): a finite loss whose backward gives NaN gradients
    (d sqrt(u)/du at u = 0 is inf, times du/dw = 0) must not reach the weights."""
    import edit_diffusion.trainer as trainer
    torch.set_num_threads(1)
    real, calls = trainer.edit_loss, {"n": 0}

    def edit_loss(unet, *args, **kwargs):
        calls["n"] += 1
        loss, logs = real(unet, *args, **kwargs)
        if calls["n"] == 2:
            weight = next(p for p in unet.parameters() if p.requires_grad)
            loss = loss + torch.sqrt(0 * weight.sum())  # value 0, gradient NaN
        return loss, logs
    monkeypatch.setattr(trainer, "edit_loss", edit_loss)
    result = train_edit.main(train_edit.parse_args(_flags(triplets, tmp_path / "out", 3)))
    err = capsys.readouterr().err
    assert err.count("non-finite loss or gradients at step 2 (gradients)") == 1 and result["step"] == 3
    unet = load_tensors(next((tmp_path / "out" / "unet").glob("*.safetensors")))
    assert all(torch.isfinite(v).all() for v in unet.values())


def test_training_stops_after_repeated_nan(triplets, tmp_path, monkeypatch, capsys):  # noqa: F811
    torch.set_num_threads(1)
    _nan_losses(monkeypatch, None)
    with pytest.raises(SystemExit) as exit_:
        train_edit.cli(_flags(triplets, tmp_path / "out", 6, "--max_nonfinite_steps", "3"))
    assert exit_.value.code == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: training stopped: 3 non-finite steps in a row at step 3")  # stage 1's words
    assert "Traceback" not in last
    ckpt = tmp_path / "out" / "checkpoint-2"  # the checkpoint before the NaNs is kept and finite
    weights = load_tensors(ckpt / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values())
    assert not (tmp_path / "out" / "model_index.json").exists()
    with pytest.raises(TrainingStopped):
        train_edit.main(train_edit.parse_args(_flags(triplets, tmp_path / "out2", 6, "--max_nonfinite_steps", "3")))


def test_half_precision_overflow_is_recomputed_in_float32(tmp_path):
    from edit_diffusion.editor import EditSettings, edit_image, load_editor
    torch.set_num_threads(1)
    folder = build_tiny_editor(tmp_path / "editor")
    pipe = load_editor(str(folder), dtype=torch.float16)
    with torch.no_grad():  # activations past float16's 65504 in the VAE decoder: what overflows on real GPUs
        pipe.vae.decoder.conv_in.weight.mul_(30000.0)
    image, settings = real_photo((32, 32)), EditSettings(steps=2, resolution=32, seed=0, cfg_text=1.0, cfg_image=1.0,
                                                        scheduler="ddim")
    assert not np.isfinite(pipe.edit_arrays(image, "make it red", settings)).all()  # the fp16 run alone: NaN / black
    outputs, _ = edit_image(pipe, image, "make it red", settings)
    assert pipe.unet.dtype == torch.float16  # restored after the float32 recomputation
    pipe32 = load_editor(str(folder))
    with torch.no_grad():
        pipe32.vae.decoder.conv_in.weight.mul_(30000.0)
    expected, _ = edit_image(pipe32, image, "make it red", settings)
    got, want = np.asarray(outputs[0], dtype=int), np.asarray(expected[0], dtype=int)
    assert got.std() > 0 and np.abs(got - want).max() <= 2  # the float32 result, not a black image
