"""Conditioning dropout, InstructPix2Pix §3.2.1: for classifier-free guidance on both conditionings the
model must also learn p(z|c_I) and p(z): drop the text only (5%), the image only (5%), both (5%)."""
from __future__ import annotations

import torch


def dropout_masks(batch_size: int, prob: float, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(keep_text, keep_image) boolean masks of shape (B,). One uniform draw u per sample:
    u < p drops text only, p <= u < 2p drops both, 2p <= u < 3p drops the image only."""
    u = torch.rand(batch_size, generator=generator, device=device)
    keep_text = u >= 2 * prob
    keep_image = (u < prob) | (u >= 3 * prob)
    return keep_text, keep_image


def apply_conditioning_dropout(text: torch.Tensor, null_text: torch.Tensor, image_latents: torch.Tensor,
                               prob: float, generator: torch.Generator | None = None
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace dropped text by the empty prompt and dropped images by zero latents (the null image the
    pipeline also uses for unconditional guidance). `text` is token ids (B, L) or embeddings (B, L, D);
    `null_text` is the empty prompt in the same form without the batch dim (or with B = 1)."""
    keep_text, keep_image = dropout_masks(text.shape[0], prob, generator, text.device)
    keep_text = keep_text.view(-1, *([1] * (text.dim() - 1)))
    text = torch.where(keep_text, text, null_text.to(device=text.device, dtype=text.dtype))
    image = image_latents * keep_image.view(-1, 1, 1, 1).to(image_latents.dtype)
    return text, image
