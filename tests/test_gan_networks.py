"""Generator / discriminator shapes, normalization choices, spectral norm, registries."""
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from stylize_gan.networks import (DISCRIMINATORS, GENERATORS, NORMS, StatNorm, UNetGenerator, build_discriminator,
                                  build_generator, set_norm_mode)

from _gan_fixtures import single_thread  # noqa: F401 (autouse fixture)


@pytest.mark.parametrize("norm", sorted(NORMS))
@pytest.mark.parametrize("size", [(1, 1), (7, 13), (32, 32), (33, 47), (64, 40)])
def test_generator_keeps_any_size(norm, size):
    torch.manual_seed(0)
    gen = build_generator("unet", width=4, depth=3, res_blocks=1, norm=norm).eval()
    with torch.no_grad():
        out = gen(torch.rand(2, 3, *size) * 2 - 1)
    assert out.shape == (2, 3, *size)
    assert out.abs().max() <= 1.0 and torch.isfinite(out).all()


def test_generator_width_depth_and_norm_types():
    gen = UNetGenerator(width=8, depth=4, res_blocks=2, norm="group")
    assert gen.multiple == 16
    assert len(gen.down) == 4 and len(gen.up) == 4 and len(gen.middle) == 2
    norms = [m for m in gen.modules() if isinstance(m, StatNorm)]
    assert norms and all(m.num_groups == min(32, m.num_channels) or m.num_channels % m.num_groups == 0 for m in norms)
    inst = UNetGenerator(width=8, depth=2, norm="instance")
    assert all(m.num_groups == m.num_channels for m in inst.modules() if isinstance(m, StatNorm))
    layer = UNetGenerator(width=8, depth=2, norm="layer")
    assert all(m.num_groups == 1 for m in layer.modules() if isinstance(m, StatNorm))
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in gen.modules())  # resize-conv, no deconvolution


def test_statnorm_record_and_frozen_match_normal():
    torch.manual_seed(0)
    gen = build_generator("unet", width=4, depth=2, res_blocks=1, norm="instance").eval()
    x = torch.randn(1, 3, 24, 20)
    with torch.no_grad():
        ref = gen(x)
        set_norm_mode(gen, "record")
        rec = gen(x)
        set_norm_mode(gen, "frozen")
        frozen = gen(x)
        set_norm_mode(gen, "normal")
    torch.testing.assert_close(rec, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(frozen, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_spectral_norm_on_every_discriminator_conv(n_layers):
    disc = build_discriminator("patch", in_channels=3, width=8, n_layers=n_layers, spectral_norm=True)
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == n_layers + 2
    assert all(parametrize.is_parametrized(c, "weight") for c in convs)
    off = build_discriminator("patch", in_channels=3, width=8, n_layers=n_layers, spectral_norm=False)
    assert not any(parametrize.is_parametrized(c) for c in off.modules() if isinstance(c, nn.Conv2d))


def test_conditional_discriminator_takes_source_and_target():
    disc = build_discriminator("patch", in_channels=6, width=8, n_layers=3)
    logits = disc(torch.randn(2, 6, 64, 64))
    assert logits.shape[:2] == (2, 1) and logits.shape[-1] > 1  # a patch map, not one score
    with pytest.raises(RuntimeError):
        disc(torch.randn(2, 3, 64, 64))


def test_registries_reject_unknown_names():
    assert set(GENERATORS) == {"unet", "animegan_v2"} and set(DISCRIMINATORS) == {"patch"}
    with pytest.raises(ValueError, match="unet"):
        build_generator("resnet9")
    with pytest.raises(ValueError, match="patch"):
        build_discriminator("stylegan")
    with pytest.raises(ValueError, match="instance"):
        build_generator("unet", norm="batch")
