"""Loss identities and hand-checked values."""
import pytest
import torch
import torch.nn.functional as F

from stylize_gan import losses as L

from _gan_fixtures import single_thread  # noqa: F401 (autouse fixture)


def _img(seed, shape=(2, 3, 16, 16)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_content_loss_zero_for_same_features_and_positive_otherwise():
    a, b = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    assert L.content_loss(a, a) == 0
    assert L.content_loss(a, b) > 0
    assert torch.isclose(L.content_loss(a, b), (a - b).abs().mean())


def test_gram_is_symmetric_per_image_and_size_normalized():
    feat = torch.randn(3, 5, 6, 7)
    gram = L.gram_matrix(feat)
    assert gram.shape == (3, 5, 5)
    torch.testing.assert_close(gram, gram.transpose(1, 2))
    # per image: image 1's Gram does not depend on image 0
    other = feat.clone()
    other[0] = torch.randn(5, 6, 7)
    torch.testing.assert_close(L.gram_matrix(other)[1:], gram[1:])
    # normalized by C*H*W: tiling the feature map 2x2 leaves it unchanged
    torch.testing.assert_close(L.gram_matrix(feat.repeat(1, 1, 2, 2)), gram)
    assert L.gram_loss(feat, feat) == 0
    assert L.gram_loss(feat, feat * 2) > 0


def test_color_loss_zero_for_equal_images_and_huber_on_chroma():
    x = _img(0)
    assert L.color_loss(x, x) == 0
    y = _img(1)
    assert L.color_loss(x, y) > 0
    # a pure luma shift is charged by the L1 term only (U and V unchanged)
    gray = torch.zeros(1, 3, 8, 8)
    brighter = gray + 0.2  # +0.1 in [0, 1] RGB on every channel -> Y +0.1, U = V = 0
    assert torch.isclose(L.color_loss(gray, brighter), torch.tensor(0.1), atol=1e-5)


def test_blurred_color_loss_keeps_regional_colour_and_frees_texture():
    photo = torch.zeros(1, 3, 32, 32)
    textured = photo.clone()
    textured[:, :, ::2, ::2] += 0.3  # fine texture around the same regional colour...
    textured[:, :, 1::2, 1::2] -= 0.3
    flattened = textured.mean(dim=(2, 3), keepdim=True).expand_as(textured)  # ...painted flat
    shifted = photo + 0.2  # the whole image brighter
    assert L.color_loss(textured, flattened, blur_sigma=2) < 0.1 * L.color_loss(textured, flattened)
    torch.testing.assert_close(L.color_loss(photo, shifted, blur_sigma=2), L.color_loss(photo, shifted))
    assert L.color_loss(photo, photo, blur_sigma=2) == 0


def test_color_loss_blur_flag_is_validated():
    from stylize_gan.config import GanTrainConfig
    with pytest.raises(ValueError, match="--color_loss_blur"):
        GanTrainConfig(data_dir="x", dataset="Hayao", color_loss_blur=-1)


def test_structure_loss_flattens_texture_and_keeps_edges():
    # left half dark, right half light (one strong edge), plus fine texture on both halves
    x = torch.full((1, 3, 32, 32), -0.6)
    x[..., 16:] = 0.6
    flat_halves = x.clone()
    texture = 0.08 * torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    textured = (x + texture).requires_grad_(True)
    assert L.structure_loss(flat_halves) < 1e-6  # flat paint with a clean edge is already a fixed point
    loss = L.structure_loss(textured)
    assert loss > 0.02
    loss.backward()
    # the flattened copy is a target without gradient: d/dx mean|x - t| = sign(x - t) / N exactly
    assert torch.allclose(textured.grad.abs(), torch.full_like(textured, 1 / textured.numel()))
    # descending the term removes texture but not the edge between the halves
    stepped = (textured - 0.5 * textured.numel() * 0.01 * textured.grad).detach()
    assert L.structure_loss(stepped) < loss
    assert (stepped[..., 14] - stepped[..., 17]).abs().mean() > 1.0


def test_structure_loss_flag_is_validated_and_reaches_the_generator_terms():
    from stylize_gan.config import GanTrainConfig
    with pytest.raises(ValueError, match="--structure_loss_weight"):
        GanTrainConfig(data_dir="x", dataset="Hayao", structure_loss_weight=-1)
    from train_gan import parse_args
    assert parse_args(["--data-dir", "x", "--dataset", "Hayao", "--structure_loss_weight", "5"]).structure_loss_weight == 5


def test_grayscale_is_three_equal_channels_and_keeps_gray():
    g = L.grayscale(_img(2))
    assert g.shape == (2, 3, 16, 16)
    torch.testing.assert_close(g[:, 0], g[:, 1])
    flat = torch.full((1, 3, 4, 4), 0.3)
    torch.testing.assert_close(L.grayscale(flat), flat, atol=1e-5, rtol=0)


def test_tv_loss_zero_for_constant_and_matches_formula():
    assert L.tv_loss(torch.full((1, 3, 8, 8), 0.5)) == 0
    x = _img(3)
    dh, dw = x[:, :, 1:] - x[:, :, :-1], x[..., 1:] - x[..., :-1]
    assert torch.isclose(L.tv_loss(x), 0.5 * dh.pow(2).mean() + 0.5 * dw.pow(2).mean())
    assert L.tv_loss(torch.zeros(1, 3, 1, 1)) == 0  # 1x1 has no neighbours


def test_l1_loss():
    x = _img(4)
    assert L.l1_loss(x, x) == 0
    assert torch.isclose(L.l1_loss(x, x + 0.25), torch.tensor(0.25))


# logits each formulation considers a confident "real" and "fake" (LSGAN regresses to 1 and 0)
@pytest.mark.parametrize("name,real,fake", [("lsgan", 1.0, 0.0), ("hinge", 3.0, -3.0), ("vanilla", 3.0, -3.0)])
def test_adversarial_losses_prefer_the_right_answer(name, real, fake):
    assert set(L.ADVERSARIAL_LOSSES) == {"lsgan", "hinge", "vanilla"}
    adv = L.ADVERSARIAL_LOSSES[name]
    confident_real, confident_fake = torch.full((2, 1, 4, 4), real), torch.full((2, 1, 4, 4), fake)
    assert adv.d_real(confident_real) < adv.d_real(confident_fake)
    assert adv.d_fake(confident_fake) < adv.d_fake(confident_real)
    assert adv.g(confident_real) < adv.g(confident_fake)


def test_lsgan_and_hinge_values():
    ones, zeros = torch.ones(4), torch.zeros(4)
    ls = L.ADVERSARIAL_LOSSES["lsgan"]
    assert ls.d_real(ones) == 0 and ls.d_fake(zeros) == 0 and ls.g(ones) == 0 and ls.d_real(zeros) == 1
    hinge = L.ADVERSARIAL_LOSSES["hinge"]
    assert hinge.d_real(ones) == 0 and hinge.d_fake(-ones) == 0 and hinge.g(ones) == -1
    vanilla = L.ADVERSARIAL_LOSSES["vanilla"]
    assert torch.isclose(vanilla.d_real(zeros), F.binary_cross_entropy_with_logits(zeros, ones))


def test_animegan_d_loss_weights_smoothed_term():
    adv = L.ADVERSARIAL_LOSSES["lsgan"]
    ones, zeros = torch.ones(4), torch.zeros(4)
    # only the smoothed style is misclassified (scored real): its term is 1, weighted 0.1
    terms = L.animegan_d_loss(adv, real_style=ones, fake=zeros, gray_style=zeros, smooth_style=ones)
    assert terms["d_real"] == 0 and terms["d_fake"] == 0 and terms["d_gray"] == 0
    assert torch.isclose(terms["d_smooth"], torch.tensor(L.SMOOTH_FAKE_WEIGHT))
    assert torch.isclose(terms["d_adv"], torch.tensor(0.1))
    # gray style counts as fake with full weight
    terms = L.animegan_d_loss(adv, ones, zeros, ones, zeros)
    assert torch.isclose(terms["d_adv"], torch.tensor(1.0))
