"""Options of the small-data recipe: the residual generator starts at the identity and survives a
checkpoint round trip; the luminance discriminator ignores colour and drops the gray-style term."""
import torch

from stylize_gan import losses as L
from stylize_gan.checkpoint import load_generator, save_generator
from stylize_gan.losses import ADVERSARIAL_LOSSES
from stylize_gan.networks import build_discriminator, build_generator
from stylize_gan.step import Batch, LossWeights, Nets, _d_logits_and_loss, gan_step

from _gan_fixtures import single_thread  # noqa: F401 (autouse fixture)

KWARGS = dict(in_channels=3, out_channels=3, width=4, depth=2, res_blocks=1, norm="layer", residual=True)


def test_residual_generator_is_identity_at_init_and_round_trips(tmp_path):
    torch.manual_seed(0)
    gen = build_generator("unet", **KWARGS)
    x = torch.rand(2, 3, 19, 23) * 1.8 - 0.9
    assert torch.allclose(gen(x), x, atol=1e-5)
    with torch.no_grad():
        gen.head.bias.fill_(0.3)  # a non-trivial network, then the file alone must rebuild it
    path = tmp_path / "g.safetensors"
    save_generator(gen, path, "unet", KWARGS)
    again = load_generator(path)
    assert again.residual and torch.allclose(again(x), gen(x))
    assert not torch.allclose(gen(x), x, atol=1e-3)


def test_luma_discriminator_ignores_hue_and_exposure_and_skips_gray_term():
    torch.manual_seed(0)
    disc = build_discriminator("patch", in_channels=3, width=8, n_layers=2).eval()  # eval: no power-iteration update
    adv = ADVERSARIAL_LOSSES["lsgan"]
    g = torch.Generator().manual_seed(1)
    style, smooth, fake = (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1 for _ in range(3))
    batch = Batch(source=fake.clone(), style=style, smooth=smooth)
    terms = _d_logits_and_loss(batch, disc, fake, adv, luma=True)
    assert "d_gray" not in terms and set(terms) >= {"d_real", "d_fake", "d_smooth", "d_adv"}
    # The same luminance without any colour: D's verdict must not change.
    recoloured = L.grayscale(fake)
    same = _d_logits_and_loss(batch, disc, recoloured, adv, luma=True)
    assert torch.allclose(same["d_fake"], terms["d_fake"], atol=1e-5)
    # A uniformly brighter image (no clipping) has the same structure: D's verdict must not change either.
    brighter = _d_logits_and_loss(batch, disc, (fake * 0.5 + 0.3), adv, luma=True)
    halved = _d_logits_and_loss(batch, disc, (fake * 0.5 - 0.2), adv, luma=True)
    assert torch.allclose(brighter["d_fake"], halved["d_fake"], atol=1e-5)
    assert not torch.allclose(halved["d_fake"], terms["d_fake"], atol=1e-3)  # contrast still counts
    plain = _d_logits_and_loss(batch, disc, fake, adv, luma=False)
    assert "d_gray" in plain


def test_gan_step_with_luma_discriminator_updates_both_networks():
    torch.manual_seed(0)
    gen = build_generator("unet", **KWARGS)
    disc = build_discriminator("patch", in_channels=3, width=8, n_layers=2)
    nets = Nets(gen, disc, None, luma_discriminator=True)
    g = torch.Generator().manual_seed(2)
    source, style, smooth = (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1 for _ in range(3))
    batch = Batch(source=source, style=style, smooth=smooth)
    before_g = {k: v.clone() for k, v in gen.state_dict().items()}
    before_d = {k: v.clone() for k, v in disc.state_dict().items()}
    weights = LossWeights(adv_g=20, adv_d=20, content=0, gram=0, color=40, tv=1, l1=0)
    out = gan_step(batch, nets, torch.optim.Adam(gen.parameters(), 1e-3), torch.optim.Adam(disc.parameters(), 1e-3),
                   weights, ADVERSARIAL_LOSSES["lsgan"])
    assert all(v == v for v in out.values())  # finite, no NaN
    assert any(not torch.equal(before_g[k], v) for k, v in gen.state_dict().items())
    assert any(not torch.equal(before_d[k], v) for k, v in disc.state_dict().items())


def test_structure_term_is_in_the_generator_loss_only_when_unpaired_and_weighted():
    from stylize_gan.step import _g_terms
    torch.manual_seed(0)
    gen = build_generator("unet", **KWARGS)
    nets = Nets(gen, build_discriminator("patch", in_channels=3, width=8, n_layers=2), None)
    g = torch.Generator().manual_seed(3)
    source, style, smooth = (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1 for _ in range(3))
    fake = gen(source)
    base = dict(adv_g=1, adv_d=1, content=0, gram=0, color=0, tv=0, l1=0)
    terms = _g_terms(Batch(source=source, style=style, smooth=smooth), nets, fake, LossWeights(**base, structure=7))
    torch.testing.assert_close(terms["structure"], 7 * L.structure_loss(fake))
    assert "structure" not in _g_terms(Batch(source=source, style=style, smooth=smooth), nets, fake, LossWeights(**base))
    paired = Batch(source=source, target=style)
    assert "structure" not in _g_terms(paired, nets, fake, LossWeights(**base, structure=7))
