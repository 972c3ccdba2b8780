"""The generator's learned ink layer: ink on the dark side of edges, never on flat regions; its
parameters learn from the GAN step; a generator with it survives a checkpoint round trip."""
import math

import pytest
import torch

from stylize_gan.checkpoint import load_generator, save_generator
from stylize_gan.ink import InkLayer
from stylize_gan.losses import ADVERSARIAL_LOSSES
from stylize_gan.networks import build_discriminator, build_generator
from stylize_gan.step import Batch, LossWeights, Nets, _g_terms, gan_step
from train_gan import parse_args

from _gan_fixtures import single_thread  # noqa: F401 (autouse fixture)

KWARGS = dict(in_channels=3, out_channels=3, width=4, depth=2, res_blocks=1, norm="layer", residual=True, ink=True)


def _line_image(line_value: float, background: float, size: int = 32) -> torch.Tensor:
    """(1, 3, size, size): a 4-pixel vertical line (columns 16-19) on a uniform background. Thinner lines
    are removed by the median pre-filter, as in the OpenCV cartoon recipe."""
    img = torch.full((1, 3, size, size), background)
    img[..., :, size // 2: size // 2 + 4] = line_value
    return img


def test_ink_lies_on_dark_lines_only():
    layer = InkLayer()
    with torch.no_grad():
        flat = layer.mask(torch.full((1, 3, 24, 24), 0.3))
        dark_line = layer.mask(_line_image(-0.6, 0.6))
        bright_line = layer.mask(_line_image(0.6, -0.6))
    assert flat.max() < 0.01                      # no ink without an edge (borders included)
    assert dark_line[..., 16].min() > 0.9         # the dark line is inked along its whole length
    assert dark_line[..., 4].max() < 0.01         # far from it, nothing
    # a bright line on dark: the line stays clean, the ink goes on the dark side of its edges
    assert bright_line[..., 16:20].max() < 0.01 and bright_line[..., 15].min() > 0.9


def test_ink_is_composited_in_the_learned_colour():
    layer = InkLayer()
    photo = _line_image(-0.6, 0.6)
    paint = torch.full_like(photo, 0.25)
    with torch.no_grad():
        out = layer(photo, paint)
        m = layer.mask(photo)
    expected = paint * (1 - m) + layer.ink_color() * m
    assert torch.allclose(out, expected)
    assert out[..., 16].mean() < -0.5 and torch.allclose(out[..., 4], paint[..., 4], atol=5e-3)


@pytest.mark.parametrize("windows, median", [((4,), 5), ((), 5), ((5,), 4), ((1, 5), 3)])
def test_bad_ink_settings_are_refused(windows, median):
    with pytest.raises(ValueError, match="ink"):
        InkLayer(windows, median)


def test_ink_parameters_learn_in_a_gan_step_and_round_trip(tmp_path):
    torch.manual_seed(0)
    gen = build_generator("unet", **KWARGS)
    disc = build_discriminator("patch", in_channels=3, width=8, n_layers=2)
    g = torch.Generator().manual_seed(3)
    source, style, smooth = (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1 for _ in range(3))
    before = {k: v.clone() for k, v in gen.ink.state_dict().items()}
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-2)
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3)
    w = LossWeights(adv_g=1, adv_d=1, content=0, gram=0, color=1, tv=0, l1=0)
    out = gan_step(Batch(source=source, style=style, smooth=smooth), Nets(gen, disc, None), opt_g, opt_d, w,
                   ADVERSARIAL_LOSSES["lsgan"])
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values())
    for name, value in gen.ink.state_dict().items():
        assert not torch.equal(value, before[name]), f"ink parameter {name} did not move"
    summary = gen.ink.summary()
    assert summary["ink/offset"] == pytest.approx(gen.ink.offset.item()) and "ink/weight_box15" in summary
    path = tmp_path / "g.safetensors"
    save_generator(gen, path, "unet", KWARGS)
    again = load_generator(path)
    with torch.no_grad():
        assert again.ink is not None and torch.allclose(again(source), gen(source))


def test_ink_flag_reaches_the_generator_and_needs_rgb():
    config = parse_args(["--data-dir", "d", "--dataset", "s", "--gen-ink"])
    assert config.gen_ink and config.generator_kwargs()["ink"] is True
    assert parse_args(["--data-dir", "d", "--dataset", "s"]).generator_kwargs()["ink"] is False
    with pytest.raises(ValueError, match="ink"):
        build_generator("unet", **{**KWARGS, "residual": False, "in_channels": 1})


def test_content_and_colour_terms_treat_ink_as_style():
    """Against the photo, every outline is lost content; against the photo with the same ink, it is not."""
    torch.manual_seed(0)
    gen = build_generator("unet", **KWARGS)  # residual: the paint is the photo at init
    with torch.no_grad():
        gen.ink.offset.fill_(0.02)  # plenty of crisp ink
        gen.ink.log_sharpness.fill_(math.log(300.0))
    backbone = torch.nn.Conv2d(3, 8, 3, padding=1).requires_grad_(False)
    disc = build_discriminator("patch", in_channels=3, width=8, n_layers=2)
    source = _line_image(-0.6, 0.6).expand(2, -1, -1, -1).clone()
    batch = Batch(source=source, style=source.flip(-1), smooth=source)
    fake = gen(source)
    assert (fake - source).abs().amax(dim=(0, 1, 2))[16:20].min() > 0.1  # the line is inked
    w = LossWeights(adv_g=1, adv_d=1, content=1, gram=0, color=1, tv=0, l1=0)
    with_ink = _g_terms(batch, Nets(gen, disc, backbone, ink=gen.ink), fake, w)
    without = _g_terms(batch, Nets(gen, disc, backbone), fake, w)
    assert with_ink["content"] < 1e-4 and with_ink["color"] < 1e-4
    assert without["content"] > 0.01 and without["color"] > 0.01
