"""One optimisation step, written out: the D phase on detached fakes, then the G phase with D frozen
(pix2pix `optimize_parameters`), and the content-only init step of AnimeGAN. Each returns a dict of floats."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from common.training import all_finite

from . import losses as L
from .networks import requires_grad


@dataclass
class Batch:
    """Images in [-1, 1], (B, 3, H, W). Paired batches have `target`; unpaired ones `style` and `smooth`."""
    source: torch.Tensor                   # photo (unpaired) or sketch / input (paired)
    target: torch.Tensor | None = None     # paired: the image G should produce
    style: torch.Tensor | None = None      # unpaired: real style image
    smooth: torch.Tensor | None = None     # unpaired: its edge-smoothed version

    @property
    def paired(self) -> bool:
        return self.target is not None


@dataclass
class Nets:
    generator: nn.Module
    discriminator: nn.Module
    backbone: nn.Module | None             # frozen feature CNN, None when no content / gram loss is used
    # Unpaired only: D judges luminance alone, less its per-image mean, so neither the style's palette nor
    # its exposure can pull G's colours (those come from the photo through the colour loss) and only
    # cartoon structure (flat regions, ink) is learned.
    # The "grayscale style = fake" term is dropped then: in luminance it equals the real style.
    luma_discriminator: bool = False
    # The generator's ink layer (ink.py), when it has one: the content and colour terms then compare against
    # the photo with the same ink drawn on it. Outlines are style, not lost content; measured without this,
    # the content term's gradient on the ink threshold was 4x the adversarial one and of opposite sign, and
    # it erased the ink the style has.
    ink: nn.Module | None = None


@dataclass
class LossWeights:
    adv_g: float
    adv_d: float
    content: float
    gram: float
    color: float
    tv: float
    l1: float
    color_blur: float = 0.0  # sigma of the blur before the colour loss (0: per pixel, AnimeGANv2)
    structure: float = 0.0   # unpaired: pull towards a flattened copy of the output (White-box §3.3)


def _backward(loss: torch.Tensor) -> None:
    loss.backward()


# check(loss, params) -> bool: whether to apply this optimizer step (the trainer makes it agree across ranks)
FiniteCheck = Callable[[torch.Tensor, object], bool]


def _d_logits_and_loss(batch: Batch, disc: nn.Module, fake: torch.Tensor,
                       adv: L.AdversarialLoss, luma: bool = False) -> dict[str, torch.Tensor]:
    """Discriminator terms on a detached (or frozen-D) fake. One D forward over the stacked inputs."""
    if batch.paired:
        # conditional D (pix2pix): sees cat(source, image); real = target, fake = G(source)
        real_in = torch.cat([batch.source, batch.target], dim=1)
        fake_in = torch.cat([batch.source, fake], dim=1)
        real, fake_logits = disc(torch.cat([real_in, fake_in])).chunk(2)
        terms = {"d_real": adv.d_real(real), "d_fake": adv.d_fake(fake_logits)}
        terms["d_adv"] = 0.5 * (terms["d_real"] + terms["d_fake"])  # pix2pix halves D's objective
        return terms
    if luma:
        real, fake_logits, smooth_logits = disc(
            torch.cat([L.luma_structure(batch.style), L.luma_structure(fake), L.luma_structure(batch.smooth)])
        ).chunk(3)
        terms = {"d_real": adv.d_real(real), "d_fake": adv.d_fake(fake_logits),
                 "d_smooth": L.SMOOTH_FAKE_WEIGHT * adv.d_fake(smooth_logits)}
        terms["d_adv"] = sum(terms.values())
        return terms
    real, fake_logits, gray_logits, smooth_logits = disc(
        torch.cat([batch.style, fake, L.grayscale(batch.style), batch.smooth])).chunk(4)
    return L.animegan_d_loss(adv, real, fake_logits, gray_logits, smooth_logits)


def _g_terms(batch: Batch, nets: Nets, fake: torch.Tensor, w: LossWeights) -> dict[str, torch.Tensor]:
    """Non-adversarial generator terms, each already multiplied by its weight."""
    terms: dict[str, torch.Tensor] = {}
    reference = batch.target if batch.paired else batch.source  # content is kept from the photo (AnimeGAN)
    if nets.ink is not None and not batch.paired:
        with torch.no_grad():  # a target, not a path: no gradient reaches the ink layer through it
            reference = nets.ink(batch.source, batch.source)
    if nets.backbone is not None and (w.content > 0 or (w.gram > 0 and not batch.paired)):
        with torch.no_grad():
            refs = [reference] + ([L.grayscale(batch.style)] if w.gram > 0 and not batch.paired else [])
            ref_feats = nets.backbone(torch.cat(refs)).chunk(len(refs))
        fake_feat = nets.backbone(fake)
        if w.content > 0:
            terms["content"] = w.content * L.content_loss(fake_feat, ref_feats[0])
        if len(ref_feats) > 1:
            # AnimeGANv2: Gram of the generated image's features against the grayscale style's
            terms["gram"] = w.gram * L.gram_loss(fake_feat, ref_feats[1])
    if w.color > 0 and not batch.paired:
        terms["color"] = w.color * L.color_loss(reference, fake, w.color_blur)
    if w.structure > 0 and not batch.paired:
        terms["structure"] = w.structure * L.structure_loss(fake)
    if w.tv > 0:
        terms["tv"] = w.tv * L.tv_loss(fake)
    if w.l1 > 0 and batch.paired:
        terms["l1"] = w.l1 * L.l1_loss(fake, batch.target)
    return terms


def gan_step(batch: Batch, nets: Nets, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
             w: LossWeights, adv: L.AdversarialLoss,
             backward: Callable[[torch.Tensor], None] = _backward,
             check: FiniteCheck = all_finite) -> dict[str, float]:
    """One adversarial step: update D on detached fakes, then G against the updated, frozen D. A phase whose
    loss or gradients are not finite is skipped (`check` decides, and can count the skips)."""
    gen, disc = nets.generator, nets.discriminator
    fake = gen(batch.source)  # (B, 3, H, W), kept for the G phase

    # --- D phase: fakes detached, so no gradient reaches G
    requires_grad(disc, True)
    opt_d.zero_grad(set_to_none=True)
    d_terms = _d_logits_and_loss(batch, disc, fake.detach(), adv, nets.luma_discriminator and not batch.paired)
    d_total = w.adv_d * d_terms["d_adv"]
    backward(d_total)
    if check(d_total, disc.parameters()):
        opt_d.step()

    # --- G phase: D frozen (its weights get no gradient), G gets adversarial + content terms
    requires_grad(disc, False)
    opt_g.zero_grad(set_to_none=True)
    if batch.paired:
        fake_in = torch.cat([batch.source, fake], dim=1)
    else:
        fake_in = L.luma_structure(fake) if nets.luma_discriminator else fake
    g_terms = {"g_adv": w.adv_g * adv.g(disc(fake_in))}
    g_terms.update(_g_terms(batch, nets, fake, w))
    g_total = sum(g_terms.values())
    backward(g_total)
    if check(g_total, gen.parameters()):
        opt_g.step()
    requires_grad(disc, True)

    out = {k: float(v.detach()) for k, v in d_terms.items() if k != "d_adv"}
    out.update({k: float(v.detach()) for k, v in g_terms.items()})
    out.update(d_total=float(d_total.detach()), g_total=float(g_total.detach()))
    return out


def init_step(batch: Batch, nets: Nets, opt_g: torch.optim.Optimizer, w: LossWeights,
              backward: Callable[[torch.Tensor], None] = _backward,
              check: FiniteCheck = all_finite) -> dict[str, float]:
    """AnimeGAN init phase: train G alone to reconstruct content (content loss; L1 to target when paired)."""
    opt_g.zero_grad(set_to_none=True)
    fake = nets.generator(batch.source)
    init_weights = LossWeights(adv_g=0, adv_d=0, content=w.content, gram=0, color=0, tv=0, l1=w.l1)
    terms = _g_terms(batch, nets, fake, init_weights)
    if not terms:
        raise ValueError("the init phase needs --content_loss_weight > 0 (or --l1_loss_weight > 0 when paired)")
    total = sum(terms.values())
    backward(total)
    if check(total, nets.generator.parameters()):
        opt_g.step()
    out = {k: float(v.detach()) for k, v in terms.items()}
    out["g_total"] = float(total.detach())
    return out
