"""Self-describing generator files, load errors, pickle-free optimizer state."""
import json

import pytest
import torch
from safetensors.torch import save_file

from common.errors import UserInputError
from stylize_gan.checkpoint import (flatten_optimizer, load_discriminator, load_generator, load_training_state,
                                    read_network_header, save_discriminator, save_generator, save_training_state,
                                    unflatten_optimizer)
from stylize_gan.networks import build_discriminator, build_generator

from _gan_fixtures import single_thread  # noqa: F401 (autouse fixture)

KWARGS = dict(in_channels=3, out_channels=3, width=4, depth=2, res_blocks=1, norm="instance")


def _generator():
    torch.manual_seed(0)
    return build_generator("unet", **KWARGS)


def test_generator_round_trip_rebuilds_from_file_alone(tmp_path):
    gen = _generator().eval()
    path = tmp_path / "g.safetensors"
    save_generator(gen, path, "unet", KWARGS, extra={"step": 7})
    arch, kwargs, extra = read_network_header(path, "stylize_gan.generator")
    assert (arch, kwargs, extra) == ("unet", KWARGS, {"step": 7})
    loaded = load_generator(path)  # no kwargs passed: everything comes from the file
    assert not loaded.training
    x = torch.rand(1, 3, 21, 18) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), gen(x))


def test_discriminator_round_trip_keeps_spectral_norm_state(tmp_path):
    torch.manual_seed(0)
    disc = build_discriminator("patch", in_channels=6, width=8, n_layers=2)
    disc(torch.randn(1, 6, 32, 32))  # one power iteration updates u, v
    save_discriminator(disc, tmp_path / "d.safetensors", "patch", dict(in_channels=6, width=8, n_layers=2))
    loaded = load_discriminator(tmp_path / "d.safetensors")
    for key, value in disc.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_load_errors_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        load_generator(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(UserInputError, match="not a readable safetensors"):
        load_generator(tmp_path / "junk.safetensors")
    diffusers = tmp_path / "pipe"
    diffusers.mkdir()
    (diffusers / "model_index.json").write_text("{}")
    with pytest.raises(UserInputError, match="diffusers"):
        load_generator(diffusers)
    # a valid safetensors file that is not ours (e.g. a UNet from elsewhere)
    save_file({"weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(UserInputError, match="not a stylize_gan.generator"):
        load_generator(tmp_path / "other.safetensors")
    # a discriminator file is not a generator
    save_discriminator(build_discriminator("patch", width=8, n_layers=1), tmp_path / "d.safetensors", "patch",
                       dict(width=8, n_layers=1))
    with pytest.raises(UserInputError, match="stylize_gan.discriminator"):
        load_generator(tmp_path / "d.safetensors")


def test_wrong_architecture_is_reported(tmp_path):
    path = tmp_path / "g.safetensors"
    save_generator(_generator(), path, "unet", dict(KWARGS, width=8))  # header lies about the width
    with pytest.raises(UserInputError, match="do not match"):
        load_generator(path)
    save_generator(_generator(), path, "resnet9", KWARGS)
    with pytest.raises(UserInputError, match="unknown architecture"):
        load_generator(path)
    save_generator(_generator(), path, "unet", dict(KWARGS, colour=True))
    with pytest.raises(UserInputError, match="cannot build"):
        load_generator(path)


def test_optimizer_state_round_trip_without_pickle(tmp_path):
    gen = _generator()
    opt = torch.optim.Adam(gen.parameters(), lr=1e-3, betas=(0.5, 0.999))
    for _ in range(2):
        opt.zero_grad()
        gen(torch.randn(1, 3, 16, 16)).mean().backward()
        opt.step()
    tensors, info = flatten_optimizer(opt, "optim.g")
    json.dumps(info)  # everything that is not a tensor is plain JSON
    rng = {"rng.torch": torch.get_rng_state()}
    save_training_state(tmp_path / "state.safetensors", {"g": opt}, rng, {"step": 2, "epoch": 0})
    states, rng_back, info_back = load_training_state(tmp_path / "state.safetensors")
    assert info_back == {"step": 2, "epoch": 0}
    assert torch.equal(rng_back["rng.torch"], rng["rng.torch"])
    fresh = torch.optim.Adam(_generator().parameters(), lr=5.0)
    fresh.load_state_dict(states["g"])
    assert fresh.param_groups[0]["lr"] == 1e-3 and fresh.param_groups[0]["betas"] == (0.5, 0.999)
    for index, per_param in opt.state_dict()["state"].items():
        for name, value in per_param.items():
            torch.testing.assert_close(fresh.state_dict()["state"][index][name], value)
    assert unflatten_optimizer(tensors, info, "optim.g")["param_groups"][0]["params"] == \
        opt.state_dict()["param_groups"][0]["params"]
