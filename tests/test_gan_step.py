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


def _variant(*edits: tuple[str, str]):
    """gan_step with its source edited (a deliberately broken copy, for the mutation checks below)."""
    import inspect
    import textwrap

    import stylize_gan.step as step
    source = textwrap.dedent(inspect.getsource(step.gan_step))
    for old, new in edits:
        assert old in source, old
        source = source.replace(old, new)
    namespace = dict(vars(step))
    exec(compile(source, step.__file__, "exec"), namespace)  # noqa: S102 - our own source, edited
    return namespace["gan_step"]


def g_grads_during_d_phase(step_fn, backbone, paired=False) -> float:
    """Largest |gradient| on G's weights right after the D-phase backward (the first backward of the step)."""
    nets = _nets(paired, backbone)
    seen = []

    def backward(loss):
        loss.backward(retain_graph=True)  # keeps a variant without detach running up to the G phase
        seen.append(max((float(p.grad.abs().max()) for p in nets.generator.parameters() if p.grad is not None),
                        default=0.0))
    opt_g = torch.optim.SGD(nets.generator.parameters(), lr=0.0)
    opt_d = torch.optim.SGD(nets.discriminator.parameters(), lr=0.0)
    step_fn(_batch(paired), nets, opt_g, opt_d, PAIRED if paired else UNPAIRED, ADVERSARIAL_LOSSES["lsgan"],
            backward=backward)
    assert len(seen) == 2 and seen[1] > 0  # D phase, then G phase (which does reach G)
    return seen[0]


@pytest.mark.parametrize("paired", [False, True])
def test_d_phase_gives_no_gradient_to_generator(paired, backbone):
    """Measured right after the D-phase backward, before the G phase zeroes G's gradients (which hid a missing
    `.detach()` from the previous version of this test)."""
    assert g_grads_during_d_phase(gan_step, backbone, paired) == 0


@pytest.mark.parametrize("paired", [False, True])
def test_detach_check_fails_without_detach(paired, backbone):
    """Mutation check: the same measurement on a gan_step whose D phase uses `fake` instead of `fake.detach()`."""
    no_detach = _variant(("fake.detach()", "fake"))
    assert g_grads_during_d_phase(no_detach, backbone, paired) > 0


def adversarial_losses_fall(step_fn, paired: bool, adv_name: str) -> tuple[bool, bool]:
    """(D loss fell after the D step, G's adversarial loss fell after the G step), on the same batch and, for D,
    the same fakes. Plain SGD with a small LR: a step along -gradient must lower the loss it was taken on."""
    nets = _nets(paired, None)
    nets.discriminator = build_discriminator("patch", in_channels=6 if paired else 3, width=8, n_layers=2,
                                             spectral_norm=False)  # no power iteration between the measurements
    adv, batch = ADVERSARIAL_LOSSES[adv_name], _batch(paired)
    weights = LossWeights(adv_g=1, adv_d=1, content=0, gram=0, color=0, tv=0, l1=0)
    opt_g = torch.optim.SGD(nets.generator.parameters(), lr=1e-3)
    opt_d = torch.optim.SGD(nets.discriminator.parameters(), lr=1e-3)
    with torch.no_grad():
        fake = nets.generator(batch.source)
        d_before = float(step_module()._d_logits_and_loss(batch, nets.discriminator, fake, adv)["d_adv"])
    logs = step_fn(batch, nets, opt_g, opt_d, weights, adv)
    with torch.no_grad():
        d_after = float(step_module()._d_logits_and_loss(batch, nets.discriminator, fake, adv)["d_adv"])
        new_fake = nets.generator(batch.source)
        fake_in = torch.cat([batch.source, new_fake], dim=1) if paired else new_fake
        g_after = float(adv.g(nets.discriminator(fake_in)))
    return d_after < d_before, g_after < logs["g_adv"]  # logs["g_adv"]: old G against the updated D


def step_module():
    import stylize_gan.step as step
    return step


@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize("adv_name", sorted(ADVERSARIAL_LOSSES))
def test_each_phase_lowers_its_own_loss(paired, adv_name):
    assert adversarial_losses_fall(gan_step, paired, adv_name) == (True, True)


def test_sign_check_fails_on_a_step_that_climbs():
    """Mutation check: D trained to maximise its loss, or G its adversarial loss, is caught."""
    d_climbs = _variant(('d_total = w.adv_d * d_terms["d_adv"]', 'd_total = -w.adv_d * d_terms["d_adv"]'))
    g_climbs = _variant(('g_terms = {"g_adv": w.adv_g * adv.g(disc(fake_in))}',
                         'g_terms = {"g_adv": -w.adv_g * adv.g(disc(fake_in))}'))
    assert adversarial_losses_fall(d_climbs, False, "lsgan")[0] is False
    assert adversarial_losses_fall(g_climbs, True, "lsgan")[1] is False


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
