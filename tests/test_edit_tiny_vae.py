"""The norm-free AutoencoderTiny (TAESD-style) as the editor's VAE: built from a config's `_class_name`,
pre-trained, encoded for training, checkpointed and resumed, loaded by the stock pipeline without a
spurious type warning. demo/configs/editor_vae.json is the bundled editor's factor-1 VAE config,
trained here with the zero-terminal-SNR schedule as the bundled editor was."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderTiny
from PIL import Image

import train_edit
from common.errors import UserInputError
from edit_diffusion.editor import EditSettings, edit_image, load_editor
from edit_diffusion.scratch import build_vae, encode_latents, fold_latent_std, pretrain_vae, vae_loss
from edit_diffusion.step import encode_pair

from _edit_fixtures import TINY_VAE, write_inverted_triplets

TINY_EDITOR_VAE = Path(__file__).resolve().parent.parent / "demo" / "configs" / "editor_vae.json"
TINY_TAESD = {"_class_name": "AutoencoderTiny", "encoder_block_out_channels": [8, 8],
              "decoder_block_out_channels": [8, 8], "num_encoder_blocks": [1, 1], "num_decoder_blocks": [1, 1],
              "latent_channels": 4}


def test_class_name_selects_the_vae_and_unknown_names_are_refused():
    assert isinstance(build_vae(TINY_TAESD), AutoencoderTiny)
    assert isinstance(build_vae(TINY_VAE), AutoencoderKL)  # no _class_name: SD's KL autoencoder
    default = build_vae(str(TINY_EDITOR_VAE))
    assert isinstance(default, AutoencoderTiny)
    with torch.no_grad():  # factor 1: latents keep the image size
        assert encode_latents(default, torch.zeros(1, 3, 24, 40)).shape == (1, 4, 24, 40)
    with pytest.raises(UserInputError, match="_class_name 'VQModel'"):
        build_vae({**TINY_TAESD, "_class_name": "VQModel"})


def test_tiny_vae_encoding_is_deterministic_and_scaled():
    torch.manual_seed(0)
    vae = build_vae(TINY_TAESD)
    vae.register_to_config(scaling_factor=2.5)
    pixels = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        edited, image = encode_pair(vae, pixels, pixels)
        raw = encode_latents(vae, pixels, sample=True)  # no posterior: "sample" is the latents
    torch.testing.assert_close(image, raw)
    torch.testing.assert_close(edited, raw * 2.5)


def test_pretraining_the_tiny_vae_lowers_reconstruction_error_and_calibrates_scale():
    torch.manual_seed(0)
    vae = build_vae(TINY_TAESD)
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        before = vae_loss(vae, images, kl_weight=0.0)[0].item()
    pretrain_vae(vae, iter([images] * 60), steps=60, lr=3e-3, kl_weight=1e-6, progress=False)
    with torch.no_grad():
        after, logs = vae_loss(vae, images, kl_weight=0.0)
        z = encode_latents(vae, images) * vae.config.scaling_factor
    assert set(logs) == {"loss/vae_l1"}  # no KL term without a posterior
    assert after.item() < 0.7 * before
    assert 0.8 < float(z.std()) < 1.25
    assert not vae.training and not any(p.requires_grad for p in vae.parameters())


def test_folding_a_latent_std_rescales_the_raw_latents_and_keeps_the_reconstruction():
    torch.manual_seed(0)
    vae = build_vae(TINY_TAESD)
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        raw_before = encode_latents(vae, images)
        recon_before = vae.decode(raw_before * 0.05).sample  # small latents: the decoder's tanh clamp is linear
    gain = fold_latent_std(vae, images, 0.8)
    with torch.no_grad():
        raw_after = encode_latents(vae, images)
        recon_after = vae.decode(raw_after * 0.05).sample
    assert abs(float(raw_after.std()) - 0.8) < 1e-4
    torch.testing.assert_close(raw_after, raw_before * gain, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(recon_after, recon_before, rtol=1e-3, atol=1e-3)  # same map, up to tanh(x/3)*3
    with pytest.raises(UserInputError, match="--vae_latent_std needs an AutoencoderTiny"):
        fold_latent_std(build_vae(TINY_VAE), images, 1.0)


def test_pretraining_with_a_latent_std_starts_from_the_rescaled_vae_and_uses_every_batch():
    torch.manual_seed(0)
    vae = build_vae(TINY_TAESD)
    batches = [torch.rand(2, 3, 16, 16) * 2 - 1 for _ in range(4)]
    with torch.no_grad():
        raw_std = float(encode_latents(vae, batches[0]).std())
    used = iter(batches)
    pretrain_vae(vae, used, steps=4, lr=1e-4, kl_weight=0.0, progress=False, latent_std=20 * raw_std)
    assert next(used, None) is None  # the first batch measured the std and was also trained on
    with torch.no_grad():  # a small lr moves the scale little: the fold set it
        assert float(encode_latents(vae, batches[0]).std()) > 10 * raw_std


def test_latent_std_without_vae_pretraining_is_refused(inverted_pairs, tmp_path, capsys):
    args = [a for a in _args(inverted_pairs, tmp_path / "x", 1) if a not in ("--vae_pretrain_steps", "3")]
    with pytest.raises(SystemExit) as exit_info:
        train_edit.parse_args([*args, "--vae_latent_std", "1"])
    assert exit_info.value.code != 0
    assert "--vae_latent_std rescales the VAE before its pre-training" in capsys.readouterr().err


@pytest.fixture(scope="module")
def inverted_pairs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    write_inverted_triplets(folder, ["astronaut", "coffee"], [40, 40])
    return folder


def _args(data: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return ["--unet_config", "tiny", "--vae_config", str(TINY_EDITOR_VAE), "--text_encoder_config", "tiny",
            "--tokenizer", "clip", "--prediction_type", "sample", "--rescale_betas_zero_snr",
            "--vae_pretrain_steps", "3", "--vae_pretrain_crop", "24", "--train_data_dir", str(data), "--resolution", "24",
            "--train_batch_size", "2", "--max_train_steps", str(steps), "--checkpointing_steps", "2",
            "--learning_rate", "1e-3", "--seed", "0", "--output_dir", str(out), *extra]


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_training_resume_and_editing_with_the_tiny_vae(inverted_pairs, tmp_path):
    out = tmp_path / "editor"
    train_edit.main(train_edit.parse_args(_args(inverted_pairs, out, 2, "--vae_latent_std", "1.0")))
    assert json.loads((out / "model_index.json").read_text())["vae"] == ["diffusers", "AutoencoderTiny"]
    # --vae_latent_std 1: raw latents folded to unit std before pre-training, so the calibrated factor is near 1
    assert 0.7 < json.loads((out / "vae" / "config.json").read_text())["scaling_factor"] < 1.4
    # the default editor's recipe: its saved sampler keeps the zero-terminal-SNR schedule it was trained on
    assert json.loads((out / "scheduler" / "scheduler_config.json").read_text())["rescale_betas_zero_snr"] is True
    pretrained_vae = AutoencoderTiny.from_pretrained(out / "vae").state_dict()
    # resume: the saved (pre-trained, frozen) VAE is restored, not re-initialized or re-trained
    result = train_edit.main(train_edit.parse_args(_args(inverted_pairs, out, 4, "--resume_from_checkpoint", "latest")))
    assert result["step"] == 4
    resumed_vae = AutoencoderTiny.from_pretrained(out / "vae").state_dict()
    for key, value in pretrained_vae.items():
        torch.testing.assert_close(resumed_vae[key], value)

    # diffusers' loggers do not propagate to the root logger, so listen on the ones that warn
    seen = _Collect()
    loggers = [logging.getLogger(n) for n in ("diffusers.pipelines.pipeline_utils", "diffusers.configuration_utils")]
    for logger in loggers:
        logger.addHandler(seen)
    try:
        pipe = load_editor(str(out))
    finally:
        for logger in loggers:
            logger.removeHandler(seen)
    assert not [m for m in seen.messages if "Expected types" in m or "AutoencoderTiny" in m], seen.messages
    photo = Image.open(inverted_pairs / "0_in.png")
    variants, _ = edit_image(pipe, photo, "invert the colors", EditSettings(seed=0, steps=2, resolution=40))
    assert variants[0].size == photo.size
