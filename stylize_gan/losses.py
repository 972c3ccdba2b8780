"""Loss terms as small pure functions. Images are (B, 3, H, W) in [-1, 1]; features are (B, C, h, w).
Weights are applied by the caller (step.py), except where the weight is part of the term's definition."""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import kornia.color
import kornia.filters
import torch
import torch.nn.functional as F

# AnimeGAN §3.2: edge-smoothed style images are "fake" for D, with a small weight so D learns that blurred
# edges are not the target style without dominating the real/fake signal.
SMOOTH_FAKE_WEIGHT = 0.1


class AdversarialLoss(NamedTuple):
    """The three pieces of one GAN formulation, each mapping D logits to a scalar."""
    d_real: Callable[[torch.Tensor], torch.Tensor]   # D loss on samples that should score "real"
    d_fake: Callable[[torch.Tensor], torch.Tensor]   # D loss on samples that should score "fake"
    g: Callable[[torch.Tensor], torch.Tensor]        # G loss: make D call the fakes real


ADVERSARIAL_LOSSES = {
    # LSGAN (Mao et al. 2017), AnimeGAN's choice: least squares towards 1 (real) and 0 (fake).
    "lsgan": AdversarialLoss(
        d_real=lambda logits: torch.mean((logits.float() - 1.0) ** 2),
        d_fake=lambda logits: torch.mean(logits.float() ** 2),
        g=lambda logits: torch.mean((logits.float() - 1.0) ** 2),
    ),
    # Hinge (Lim & Ye 2017 / SAGAN).
    "hinge": AdversarialLoss(
        d_real=lambda logits: torch.mean(F.relu(1.0 - logits.float())),
        d_fake=lambda logits: torch.mean(F.relu(1.0 + logits.float())),
        g=lambda logits: -torch.mean(logits.float()),
    ),
    # Original non-saturating GAN with logits (pix2pix "vanilla").
    "vanilla": AdversarialLoss(
        d_real=lambda logits: F.binary_cross_entropy_with_logits(logits.float(), torch.ones_like(logits.float())),
        d_fake=lambda logits: F.binary_cross_entropy_with_logits(logits.float(), torch.zeros_like(logits.float())),
        g=lambda logits: F.binary_cross_entropy_with_logits(logits.float(), torch.ones_like(logits.float())),
    ),
}


def animegan_d_loss(adv: AdversarialLoss, real_style: torch.Tensor, fake: torch.Tensor, gray_style: torch.Tensor,
                    smooth_style: torch.Tensor) -> dict[str, torch.Tensor]:
    """AnimeGAN discriminator terms from D logits: real style = real; generated, grayscale style and
    edge-smoothed style = fake (the last weighted SMOOTH_FAKE_WEIGHT). Unweighted by the global D weight."""
    terms = {
        "d_real": adv.d_real(real_style),
        "d_fake": adv.d_fake(fake),
        "d_gray": adv.d_fake(gray_style),
        "d_smooth": SMOOTH_FAKE_WEIGHT * adv.d_fake(smooth_style),
    }
    terms["d_adv"] = sum(terms.values())
    return terms


def content_loss(feat_fake: torch.Tensor, feat_real: torch.Tensor) -> torch.Tensor:
    """L1 between backbone feature maps (AnimeGAN: VGG19 conv4_4)."""
    return F.l1_loss(feat_fake.float(), feat_real.float())


def gram_matrix(feat: torch.Tensor) -> torch.Tensor:
    """Per-image Gram matrix (B, C, C), normalized by C*H*W so it does not depend on the image size."""
    b, c, h, w = feat.shape
    flat = feat.float().reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def gram_loss(feat_fake: torch.Tensor, feat_style: torch.Tensor) -> torch.Tensor:
    """L1 between per-image Gram matrices (image i of one batch against image i of the other)."""
    return F.l1_loss(gram_matrix(feat_fake), gram_matrix(feat_style))


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [-1, 1] -> the same luminance replicated on 3 channels (AnimeGAN's gray style)."""
    gray = kornia.color.rgb_to_grayscale((x + 1.0) / 2.0) * 2.0 - 1.0
    return gray.expand(-1, 3, -1, -1)


def luma_structure(x: torch.Tensor) -> torch.Tensor:
    """What a luminance discriminator sees: (B, 3, H, W) RGB -> luminance minus its per-image mean, on 3
    channels. Without the mean, exposure cannot tell the domains apart (a style set brighter than the
    photos would otherwise teach D "bright = cartoon" and G to wash photos out); flat paint and ink remain."""
    gray = grayscale(x)
    return gray - gray.mean(dim=(1, 2, 3), keepdim=True)


def color_loss(real: torch.Tensor, fake: torch.Tensor, blur_sigma: float = 0.0) -> torch.Tensor:
    """AnimeGANv2 colour loss in YUV: L1 on Y (luma), Huber on U and V (chroma); with `blur_sigma` > 0 on
    Gaussian-blurred images (regional colour only)."""
    if blur_sigma > 0:
        size = 2 * math.ceil(3 * blur_sigma) + 1  # +-3 sigma
        real, fake = (kornia.filters.gaussian_blur2d(x.float(), (size, size), (blur_sigma, blur_sigma),
                                                      border_type="reflect") for x in (real, fake))
    yuv_real = kornia.color.rgb_to_yuv((real.float() + 1.0) / 2.0)  # (B, 3, H, W): Y, U, V
    yuv_fake = kornia.color.rgb_to_yuv((fake.float() + 1.0) / 2.0)
    return (F.l1_loss(yuv_fake[:, 0], yuv_real[:, 0])
            + F.huber_loss(yuv_fake[:, 1], yuv_real[:, 1]) + F.huber_loss(yuv_fake[:, 2], yuv_real[:, 2]))


# Flattening filter of `structure_loss`: the bilateral filter of the classic cartoon recipe, in [-1, 1]
# units (a colour sigma of 0.3 is about 40 of 255). Edges stronger than the colour sigma are kept.
STRUCTURE_KERNEL = 7
STRUCTURE_SIGMA_COLOR = 0.3
STRUCTURE_SIGMA_SPACE = 3.0


def structure_loss(fake: torch.Tensor) -> torch.Tensor:
    """L1 from the generated image to an edge-preserving flattened copy of itself, the copy taken
    without gradient (after White-box Cartoonization, Wang & Yu 2020, §3.3: G is pulled towards a
    flattened version of its own output). The copy is a target, not a path: the term moves texture
    towards flat paint while the content and colour terms keep what the regions show."""
    with torch.no_grad():
        flat = kornia.filters.bilateral_blur(
            fake.float(), STRUCTURE_KERNEL, STRUCTURE_SIGMA_COLOR,
            (STRUCTURE_SIGMA_SPACE, STRUCTURE_SIGMA_SPACE), border_type="reflect")
    return F.l1_loss(fake.float(), flat)


def tv_loss(x: torch.Tensor) -> torch.Tensor:
    """Total variation as in AnimeGANv2: l2_loss(dh)/size(dh) + l2_loss(dw)/size(dw), l2_loss = sum(x^2)/2."""
    dh = x[:, :, 1:, :].float() - x[:, :, :-1, :].float()
    dw = x[:, :, :, 1:].float() - x[:, :, :, :-1].float()
    zero = x.new_zeros((), dtype=torch.float32)
    return (0.5 * dh.pow(2).mean() if dh.numel() else zero) + (0.5 * dw.pow(2).mean() if dw.numel() else zero)


def l1_loss(fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pix2pix reconstruction term: mean absolute error to the paired target."""
    return F.l1_loss(fake.float(), target.float())
