"""One GAN step updates both networks; the init step trains G alone; D's fakes are detached."""
import pytest
import torch

from stylize_gan.backbones import build_backbone
from stylize_gan.losses import ADVERSARIAL_LOSSES
from stylize_gan.networks import build_discriminator, build_generator
from stylize_gan.step import Batch, LossWeights, Nets, gan_step, init_step

from _gan_fixtures import single_thread  # noqa: F401 (autouse fixture)

UNPAIRED = LossWeights(adv_g=300, adv_d=300, content=1.5, gram=3.0, color=10, tv=1, l1=0)
PAIRED = LossWeights(adv_g=1, adv_d=1, content=0, gram=0, color=0, tv=0, l1=100)


@pytest.fixture(scope="module")
def backbone():
    return build_backbone("efficientnet_lite0")


def _nets(paired, backbone):
    torch.manual_seed(0)
    gen = build_generator("unet", width=4, depth=2, res_blocks=1)
    disc = build_discriminator("patch", in_channels=6 if paired else 3, width=8, n_layers=2)
    return Nets(gen, disc, None if paired else backbone)


def _batch(paired):
    g = torch.Generator().manual_seed(1)
    img = lambda: torch.rand(2, 3, 32, 32, generator=g) * 2 - 1  # noqa: E731
    if paired:
        return Batch(source=img(), target=img())
    return Batch(source=img(), style=img(), smooth=img())


def _snapshot(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _changed(before, net):
    return [k for k, v in net.state_dict().items() if v.dtype.is_floating_point and not torch.equal(before[k], v)]


@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize("adv_name", sorted(ADVERSARIAL_LOSSES))
def test_gan_step_changes_both_networks(paired, adv_name, backbone):
    nets = _nets(paired, backbone)
    opt_g = torch.optim.Adam(nets.generator.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(nets.discriminator.parameters(), lr=1e-3, betas=(0.5, 0.999))
    g0, d0 = _snapshot(nets.generator), _snapshot(nets.discriminator)
    logs = gan_step(_batch(paired), nets, opt_g, opt_d, PAIRED if paired else UNPAIRED, ADVERSARIAL_LOSSES[adv_name])
    assert _changed(g0, nets.generator) and _changed(d0, nets.discriminator)
    expected = {"d_real", "d_fake", "g_adv", "d_total", "g_total"}
    expected |= {"l1"} if paired else {"d_gray", "d_smooth", "content", "gram", "color", "tv"}
    assert set(logs) == expected
    assert all(isinstance(v, float) and v == v for v in logs.values())
    # D is trainable again after the step
    assert all(p.requires_grad for p in nets.discriminator.parameters())


def test_d_phase_gives_no_gradient_to_generator(backbone):
    """With a zero-LR G optimizer a G weight change could only come from the D phase: there is none; and G's
    gradients after the step come from the G phase only (D's weights never get G-phase gradients)."""
    nets = _nets(False, backbone)
    opt_g = torch.optim.SGD(nets.generator.parameters(), lr=0.0)
    opt_d = torch.optim.SGD(nets.discriminator.parameters(), lr=0.0)
    weights = LossWeights(adv_g=0, adv_d=1, content=0, gram=0, color=0, tv=0, l1=0)
    gan_step(_batch(False), nets, opt_g, opt_d, weights, ADVERSARIAL_LOSSES["lsgan"])
    # G's loss has zero weight everywhere, so its gradients are exactly zero: nothing leaked from D's loss
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in nets.generator.parameters())
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in nets.discriminator.parameters())


def test_init_step_trains_generator_only(backbone):
    nets = _nets(False, backbone)
    opt_g = torch.optim.Adam(nets.generator.parameters(), lr=1e-3)
    g0, d0 = _snapshot(nets.generator), _snapshot(nets.discriminator)
    logs = init_step(Batch(source=_batch(False).source), nets, opt_g, UNPAIRED)
    assert set(logs) == {"content", "g_total"} and logs["content"] > 0
    assert _changed(g0, nets.generator) and not _changed(d0, nets.discriminator)


def test_init_step_paired_uses_l1():
    nets = _nets(True, None)
    opt_g = torch.optim.Adam(nets.generator.parameters(), lr=1e-3)
    logs = init_step(_batch(True), nets, opt_g, PAIRED)
    assert set(logs) == {"l1", "g_total"}
