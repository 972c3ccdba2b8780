"""Smoke runs of train_edit.py (bundled tiny from-scratch configs, real CLIP tokenizer, real photos):
checkpoints and pruning, resume with `latest`, final pipeline folder, TensorBoard images, editing CLI;
plus the real SD 1.5 UNet architecture with the 8-channel surgery at a tiny latent size."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline
from PIL import Image

import train_edit
from common.training import RESULT_KEYS
from edit_diffusion.__main__ import cli as edit_cli
from edit_diffusion.editor import EditSettings, edit_image, load_editor
from edit_diffusion.scratch import build_unet
from edit_diffusion.surgery import expand_conv_in

from _edit_fixtures import write_inverted_triplets


def photo(name: str, size: int = 48) -> Image.Image:
    from skimage import data
    return Image.fromarray(getattr(data, name)()).convert("RGB").resize((size, size))


@pytest.fixture(scope="module")
def triplet_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("triplets")
    write_inverted_triplets(folder, ["astronaut", "chelsea", "coffee"], [48, 56, 64])
    return folder


def train_args(data: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return ["--unet_config", "tiny", "--vae_config", "tiny", "--text_encoder_config", "tiny", "--tokenizer", "clip",
            "--train_text_encoder", "--prediction_type", "sample", "--vae_pretrain_steps", "2",
            "--vae_pretrain_crop", "32", "--train_data_dir", str(data), "--resolution", "32", "--random_flip",
            "--train_batch_size", "2", "--max_train_steps", str(steps), "--checkpointing_steps", "2",
            "--checkpoints_total_limit", "2", "--learning_rate", "1e-3", "--lr_warmup_steps", "1", "--seed", "0",
            "--use_ema", "--output_dir", str(out), "--validation_image", str(data / "0_in.png"),
            "--validation_prompt", "invert the colors", "--validation_steps", "3", "--validation_inference_steps", "2",
            "--default_steps", "3", *extra]


@pytest.fixture(scope="module")
def trained(triplet_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "editor"
    with pytest.warns(UserWarning, match="xformers"):
        first = train_edit.main(train_edit.parse_args(
            train_args(triplet_dir, out, 6, "--enable_xformers_memory_efficient_attention")))
    checkpoints_after_first = sorted(p.name for p in out.glob("checkpoint-*"))
    second = train_edit.main(train_edit.parse_args(
        train_args(triplet_dir, out, 8, "--resume_from_checkpoint", "latest")))
    return out, first, checkpoints_after_first, second


def test_checkpoints_pruned_to_limit(trained):
    out, first, after_first, _ = trained
    assert first["step"] == 6 and tuple(first) == RESULT_KEYS  # the schema stage 1 returns too
    assert Path(first["files"]["pipeline"]) == out and "checkpoint-6" in first["files"]
    assert after_first == ["checkpoint-4", "checkpoint-6"]
    ckpt = out / "checkpoint-6"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "ema.safetensors").is_file()
    assert (ckpt / "vae" / "config.json").is_file()
    assert json.loads((ckpt / "trainer_state.json").read_text())["global_step"] == 6


def test_resume_latest_continues_to_step_8(trained):
    out, _, _, second = trained
    assert second["step"] == 8
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-6", "checkpoint-8"]


def test_final_folder_loads_with_stock_pipeline_and_edits(trained):
    out = trained[0]
    assert not list(out.rglob("*.bin")) or all("checkpoint-" in str(p) for p in out.rglob("*.bin"))
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(str(out), safety_checker=None)
    assert pipe.unet.config.in_channels == 8
    assert pipe.scheduler.config.prediction_type == "sample"
    pipe.set_progress_bar_config(disable=True)
    result = pipe("invert the colors", image=photo("rocket", 32), num_inference_steps=2,
                  generator=torch.Generator().manual_seed(0)).images[0]
    assert result.size == (32, 32)
    defaults = json.loads((out / "edit_defaults.json").read_text())
    assert defaults["steps"] == 3 and defaults["scheduler"] == "ddim"


def test_tensorboard_holds_validation_images_and_scalars(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = trained[0]
    acc = EventAccumulator(str(out / "logs"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert "images/validation" in tags["images"]
    assert {"loss/train", "lr/unet", "perf/samples_per_sec"} <= set(tags["scalars"])
    assert len(acc.Images("images/validation")) >= 2
    assert list((out / "validation").glob("images_validation_*.png"))


def test_editor_api_and_cli(trained, tmp_path, capsys):
    out = trained[0]
    pipe = load_editor(str(out))
    image = photo("chelsea", 40).resize((60, 40))
    variants, used = edit_image(pipe, image, "invert the colors", EditSettings(num_variants=2, resolution=32))
    assert len(variants) == 2 and all(v.size == (60, 40) for v in variants)
    assert used.steps == 3 and used.scheduler == "ddim" and used.seed is not None
    assert "seed:" in capsys.readouterr().out
    again, _ = edit_image(pipe, image, "invert the colors", EditSettings(num_variants=2, resolution=32, seed=used.seed))
    assert list(again[0].getdata()) == list(variants[0].getdata())
    long_text = "invert " * 100
    edit_image(pipe, image, long_text, EditSettings(seed=1, resolution=32))
    edit_image(pipe, image, long_text, EditSettings(seed=1, resolution=32))
    assert capsys.readouterr().out.count("only the first 77 are used") == 1
    with pytest.raises(ValueError, match="empty"):
        edit_image(pipe, image, "   ", EditSettings())
    with pytest.raises(ValueError, match="cannot run this model"):
        edit_image(pipe, image, "x", EditSettings(scheduler="euler_a"))

    src = tmp_path / "in.png"
    image.save(src)
    paths = edit_cli(["--model", str(out), "--input", str(src), "--edit", "invert the colors", "--output",
                      str(tmp_path / "out.png"), "--seed", "3", "--resolution", "32", "--scheduler", "dpmpp"])
    # the file is the API's edit with the same settings: every flag reached EditSettings (not just any image)
    expected, used = edit_image(pipe, Image.open(src).convert("RGB"), "invert the colors",
                                EditSettings(seed=3, resolution=32, scheduler="dpmpp"))
    assert used.scheduler == "dpmpp" and Image.open(paths[0]).size == (60, 40)
    assert list(Image.open(paths[0]).convert("RGB").getdata()) == list(expected[0].getdata())
    with pytest.raises(SystemExit) as err:  # refuses to overwrite without --overwrite
        edit_cli(["--model", str(out), "--input", str(src), "--edit", "x", "--output", str(paths[0])])
    assert err.value.code == 2
    with pytest.raises(SystemExit):
        edit_cli(["--model", str(out), "--input", str(src), "--edit", "x", "--output", str(tmp_path / "o2.png"),
                  "--cfg-image", "0.5"])
    assert "silently turns off ALL guidance" in capsys.readouterr().err


def test_train_cli_errors_are_one_line(tmp_path, capsys, triplet_dir):
    with pytest.raises(SystemExit) as err:
        train_edit.cli(["--unet_config", "tiny", "--vae_config", "tiny", "--text_encoder_config", "tiny",
                        "--train_data_dir", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "o")])
    assert err.value.code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    with pytest.raises(SystemExit) as err:
        train_edit.cli(["--unet_config", "tiny", "--vae_config", "tiny", "--text_encoder_config", "tiny",
                        "--train_data_dir", str(triplet_dir), "--output_dir", str(tmp_path / "o"), "--push_to_hub"])
    assert err.value.code == 2 and "--push_to_hub" in capsys.readouterr().err


@pytest.mark.slow
def test_sd15_unet_architecture_with_surgery_runs_forward():
    """Real SD 1.5 UNet shapes (about 860M parameters) with the 8-channel surgery, one forward at 16x16 latents."""
    torch.manual_seed(0)
    unet = build_unet("sd15")
    assert tuple(unet.config.block_out_channels) == (320, 640, 1280, 1280) and unet.config.cross_attention_dim == 768
    assert 800e6 < sum(p.numel() for p in unet.parameters()) < 900e6
    expand_conv_in(unet)
    assert unet.conv_in.weight.shape == (320, 8, 3, 3) and unet.config.in_channels == 8
    with torch.no_grad():
        out = unet(torch.randn(1, 8, 16, 16), torch.tensor([500]), torch.randn(1, 77, 768)).sample
    assert out.shape == (1, 4, 16, 16) and torch.isfinite(out).all()
    del unet


def _short_run(data: Path, out: Path) -> list[str]:
    return ["--unet_config", "tiny", "--vae_config", "tiny", "--text_encoder_config", "tiny",
            "--train_data_dir", str(data), "--resolution", "32", "--train_batch_size", "1", "--max_train_steps", "20",
            "--checkpointing_steps", "100", "--output_dir", str(out), "--seed", "0"]


def test_sigint_saves_checkpoint_and_stops(triplet_dir, tmp_path, monkeypatch):
    import os
    import signal

    import edit_diffusion.trainer as trainer
    calls = []

    def loss_then_signal(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    real = trainer.edit_loss
    monkeypatch.setattr(trainer, "edit_loss", loss_then_signal)
    with pytest.raises(SystemExit) as err:
        train_edit.cli(_short_run(triplet_dir, tmp_path / "run"))
    assert err.value.code == 130
    assert [p.name for p in (tmp_path / "run").glob("checkpoint-*")] == ["checkpoint-2"]
    assert not (tmp_path / "run" / "model_index.json").exists()


def test_nonfinite_losses_stop_training(triplet_dir, tmp_path, monkeypatch, capsys):
    import edit_diffusion.trainer as trainer
    real = trainer.edit_loss
    monkeypatch.setattr(trainer, "edit_loss", lambda *a, **k: (real(*a, **k)[0] * float("nan"), {}))
    with pytest.raises(SystemExit) as err:
        train_edit.cli(_short_run(triplet_dir, tmp_path / "run"))
    assert err.value.code == 1
    assert "non-finite" in capsys.readouterr().err
