"""A learned ink layer for the generator: dark outlines drawn where the photo is darker than its
surroundings, composited over the generator's paint.

Cartoons and anime outline shapes on the dark side of edges. A convolutional generator trained only by an
adversarial signal must discover both the rule and the positions, and on little data it learns "draw
dark strokes" long before it learns where (measured on the bundled demo: ink blobs in the wrong places,
further from the style than the photo itself). This layer gives the generator the classic "darker than the
local mean" edge response (adaptive thresholding; a box-filter relative of XDoG, Winnemoeller et al. 2012)
as a structural prior and leaves the amounts to training: the mix of scales, the threshold, the
sharpness and the ink colour are parameters learned by the usual GAN losses. The mask depends on the input
photo and those few parameters only, so it cannot drift to places where the photo has no edge.

Shapes: photo and paint (B, 3, H, W) in [-1, 1]; mask (B, 1, H, W) in [0, 1].
"""
from __future__ import annotations

import math

import kornia.color
import kornia.filters
import torch
import torch.nn.functional as F
from torch import nn

# Box windows (pixels) of the multi-scale "darker than the surroundings" response: thin lines, outlines,
# and region-level shading. Learned weights mix them, so no single one has to match a style.
INK_WINDOWS = (5, 9, 15)
# Median pre-filter: speckle and JPEG noise must not become ink (dark lines thinner than 3 px go with it).
INK_MEDIAN = 5
# Initial threshold and sharpness, in [-1, 1] luminance units. Deliberately conservative: at init only
# strong edges (~0.2 darker than their surroundings) get ink, about 5% of a typical photo's pixels, and
# the training losses decide how much more. The soft sigmoid (width ~1/30) keeps gradients reaching the
# threshold from pixels that are not inked yet.
INIT_OFFSET = 0.2
INIT_SHARPNESS = 30.0
INIT_INK = -0.8


class InkLayer(nn.Module):
    """out = paint * (1 - m) + ink * m, m = sigmoid(s * (sum_k w_k (box_k(g) - g) - t)), g the
    median-filtered luminance of the photo; w_k, t, s and the ink colour are learned."""

    def __init__(self, windows: tuple[int, ...] = INK_WINDOWS, median: int = INK_MEDIAN):
        super().__init__()
        if not windows or any(k < 3 or k % 2 == 0 for k in windows) or median < 1 or median % 2 == 0:
            raise ValueError(f"ink windows must be odd numbers >= 3 and the median odd, got {windows}, {median}")
        self.windows = tuple(windows)
        self.median = median
        self.scale_weights = nn.Parameter(torch.full((len(windows),), 1.0 / len(windows)))
        self.offset = nn.Parameter(torch.tensor(INIT_OFFSET))
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(INIT_SHARPNESS)))
        # tanh keeps the learned ink colour inside the image range
        self.ink_logit = nn.Parameter(torch.full((3,), math.atanh(INIT_INK)))

    def edge_response(self, photo: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, K, H, W): how much darker each pixel is than its k x k mean, per window."""
        gray = kornia.color.rgb_to_grayscale(photo.float())  # (B, 1, H, W), still in [-1, 1]
        if self.median > 1:
            pad = self.median // 2
            # reflect padding (kornia's median pads with zeros, which would outline every border)
            mode = "reflect" if min(gray.shape[-2:]) > pad else "replicate"
            gray = kornia.filters.median_blur(F.pad(gray, (pad, pad, pad, pad), mode=mode),
                                              (self.median, self.median))[..., pad:-pad, pad:-pad]
        return torch.cat([kornia.filters.box_blur(gray, (k, k), border_type="replicate") - gray
                          for k in self.windows], dim=1)

    def mask(self, photo: torch.Tensor) -> torch.Tensor:
        response = (self.edge_response(photo) * self.scale_weights.view(1, -1, 1, 1)).sum(1, keepdim=True)
        return torch.sigmoid(self.log_sharpness.exp() * (response - self.offset))

    def ink_color(self) -> torch.Tensor:
        return torch.tanh(self.ink_logit).view(1, 3, 1, 1)

    def summary(self) -> dict[str, float]:
        """The learned amounts, for TensorBoard: threshold, sharpness, ink luminance and scale weights."""
        with torch.no_grad():
            out = {"ink/offset": self.offset.item(), "ink/sharpness": self.log_sharpness.exp().item(),
                   "ink/luminance": self.ink_color().mean().item()}
            out.update({f"ink/weight_box{k}": w.item() for k, w in zip(self.windows, self.scale_weights)})
        return out

    def forward(self, photo: torch.Tensor, paint: torch.Tensor) -> torch.Tensor:
        m = self.mask(photo).to(paint.dtype)
        return paint * (1 - m) + self.ink_color().to(paint.dtype) * m
