"""Decoder-only VAE fine-tuning (train_edit.py --vae_train_decoder_only, demo.train_defaults
--vae-decoder-steps): the decoder learns to reconstruct better while the encoder, hence every latent and
the scaling_factor a trained UNet reads, stays bit for bit as it was (sd-vae-ft-mse's recipe)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderTiny

import train_edit
from common.errors import UserInputError
from demo.train_defaults import DefaultsConfig, edit_command
from edit_diffusion.scratch import build_vae, decoder_modules, pretrain_vae, vae_loss

from _edit_fixtures import TINY_VAE
from test_demo_train_defaults import _script_args
from test_edit_tiny_vae import TINY_TAESD, _args, inverted_pairs  # noqa: F401 (a fixture)


def _split(vae) -> tuple[dict, dict]:
    """(encoder side, decoder side) state dicts, cloned."""
    decoder_ids = {id(p) for module in decoder_modules(vae) for p in module.parameters()}
    encoder = {n: p.detach().clone() for n, p in vae.named_parameters() if id(p) not in decoder_ids}
    decoder = {n: p.detach().clone() for n, p in vae.named_parameters() if id(p) in decoder_ids}
    return encoder, decoder


@pytest.mark.parametrize("config", [TINY_TAESD, TINY_VAE], ids=["tiny", "kl"])
def test_decoder_only_keeps_the_encoder_and_scale_and_lowers_the_error(config):
    torch.manual_seed(0)
    vae = build_vae(config)
    vae.register_to_config(scaling_factor=1.7)
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    encoder_before, decoder_before = _split(vae)
    assert encoder_before and decoder_before
    with torch.no_grad():
        before = vae_loss(vae, images, kl_weight=0.0, generator=torch.Generator().manual_seed(0))[0].item()
    pretrain_vae(vae, iter([images] * 60), steps=60, lr=3e-3, kl_weight=1e-6, progress=False, decoder_only=True)
    encoder_after, decoder_after = _split(vae)
    for name, value in encoder_before.items():
        assert torch.equal(encoder_after[name], value), name
    assert any(not torch.equal(decoder_after[n], v) for n, v in decoder_before.items())
    assert vae.config.scaling_factor == 1.7  # not re-calibrated: the latents did not move
    with torch.no_grad():
        after = vae_loss(vae, images, kl_weight=0.0, generator=torch.Generator().manual_seed(0))[0].item()
    assert after < 0.9 * before
    assert not vae.training and not any(p.requires_grad for p in vae.parameters())


def test_decoder_only_refuses_an_encoder_rescale():
    with pytest.raises(UserInputError, match="--vae_latent_std"):
        pretrain_vae(build_vae(TINY_TAESD), iter([]), steps=1, lr=1e-3, kl_weight=0.0, progress=False,
                     latent_std=1.0, decoder_only=True)


def test_flag_errors_name_the_flag(inverted_pairs, tmp_path, capsys):
    args = [a for a in _args(inverted_pairs, tmp_path / "x", 1) if a not in ("--vae_pretrain_steps", "3")]
    for extra, message in ((["--vae_train_decoder_only"], "it needs --vae_pretrain_steps"),
                           (["--vae_pretrain_steps", "2", "--vae_train_decoder_only", "--vae_latent_std", "1"],
                            "--vae_train_decoder_only keeps it as it is")):
        with pytest.raises(SystemExit) as exit_info:
            train_edit.parse_args([*args, *extra])
        assert exit_info.value.code != 0
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_fine_tuning_a_trained_editor_changes_only_its_decoder(inverted_pairs, tmp_path):
    """A trained editor, then train_edit.py on it with a decoder-only VAE phase: the saved VAE has the same
    encoder and scaling_factor, a new decoder, and the stock pipeline loads the result."""
    first = tmp_path / "first"
    train_edit.main(train_edit.parse_args(_args(inverted_pairs, first, 1)))
    second = tmp_path / "second"
    train_edit.main(train_edit.parse_args([
        "--pretrained_model_name_or_path", str(first), "--vae_pretrain_steps", "3", "--vae_train_decoder_only",
        "--vae_learning_rate", "1e-2", "--vae_pretrain_crop", "24", "--train_data_dir", str(inverted_pairs),
        "--resolution", "24", "--train_batch_size", "2", "--max_train_steps", "1", "--seed", "0",
        "--output_dir", str(second)]))
    old, new = (AutoencoderTiny.from_pretrained(folder / "vae") for folder in (first, second))
    assert new.config.scaling_factor == old.config.scaling_factor
    for name, value in old.encoder.state_dict().items():
        assert torch.equal(new.encoder.state_dict()[name], value), name
    assert any(not torch.equal(new.decoder.state_dict()[n], v) for n, v in old.decoder.state_dict().items())


def test_train_defaults_passes_decoder_steps_with_an_initial_editor(tmp_path):
    start = tmp_path / "editor"
    start.mkdir()
    (start / "model_index.json").write_text("{}")
    cfg = DefaultsConfig(init_editor=start, vae_decoder_steps=7)
    argv = _script_args(edit_command(tmp_path / "demo", tmp_path / "run", cfg), "train_edit.py")
    config = train_edit.parse_args(argv)
    assert config.vae_pretrain_steps == 7 and config.vae_train_decoder_only
    assert config.vae_learning_rate == 3e-4 and config.vae_latent_std is None
    plain = train_edit.parse_args(_script_args(edit_command(tmp_path / "demo", tmp_path / "run",
                                                            DefaultsConfig(init_editor=start)), "train_edit.py"))
    assert plain.vae_pretrain_steps == 0 and not plain.vae_train_decoder_only
    with pytest.raises(UserInputError, match="--vae-decoder-steps"):
        DefaultsConfig(vae_decoder_steps=5)
