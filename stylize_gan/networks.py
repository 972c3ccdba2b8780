"""Generator (U-Net) and discriminator (PatchGAN) networks, and their plain-dict registries.

All three normalizations are GroupNorm with a different group count (instance = one group per channel, layer =
one group, group = up to 32 groups). Our `StatNorm` can also record its statistics on one input and reuse them
on others, which is what lets tiled inference give the same result as one pass (see inference.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from .animegan import AnimeGANv2Generator
from .ink import InkLayer

CHANNEL_CAP = 8  # channels grow x2 per level up to CHANNEL_CAP * width


class StatNorm(nn.GroupNorm):
    """GroupNorm that can record (`mode="record"`) or reuse (`mode="frozen"`) its per-group statistics."""

    def __init__(self, num_groups: int, num_channels: int):
        super().__init__(num_groups, num_channels, eps=1e-5, affine=True)
        self.mode = "normal"
        self.stats: tuple[torch.Tensor, torch.Tensor] | None = None  # (B, G) mean, (B, G) var

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "normal":
            return super().forward(x)
        b, c, h, w = x.shape
        grouped = x.reshape(b, self.num_groups, -1)  # (B, G, C/G*H*W)
        if self.mode == "record":
            var, mean = torch.var_mean(grouped.float(), dim=-1, unbiased=False)
            self.stats = (mean, var)
        mean, var = self.stats
        out = (grouped - mean[..., None].to(x.dtype)) * torch.rsqrt(var[..., None] + self.eps).to(x.dtype)
        return out.reshape(b, c, h, w) * self.weight[:, None, None] + self.bias[:, None, None]


def _group_count(channels: int) -> int:
    groups = min(32, channels)
    while channels % groups:
        groups -= 1
    return groups


# name -> factory(channels) -> module
NORMS = {
    "instance": lambda c: StatNorm(c, c),
    "layer": lambda c: StatNorm(1, c),
    "group": lambda c: StatNorm(_group_count(c), c),
}


def _conv_block(cin: int, cout: int, norm: str, stride: int = 1) -> nn.Sequential:
    """3x3 conv (reflect padding, no edge artifacts) + norm + LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, padding_mode="reflect", bias=False),
        NORMS[norm](cout),
        nn.LeakyReLU(0.2, inplace=True),
    )


class InvertedResBlock(nn.Module):
    """MobileNetV2 inverted residual (AnimeGANv2's generator middle): 1x1 expand, 3x3 depthwise, 1x1 project.
    About 4x cheaper than a plain two-conv residual block at the same width."""

    def __init__(self, channels: int, norm: str, expansion: int = 2):
        super().__init__()
        hidden = channels * expansion
        self.body = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), NORMS[norm](hidden), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1, padding_mode="reflect", groups=hidden, bias=False),
            NORMS[norm](hidden), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False), NORMS[norm](channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UpBlock(nn.Module):
    """Resize-convolution upsampling (no checkerboard artifacts): a 1x1 conv narrows the channels at the low
    resolution (cheap), bilinear x2, add the encoder skip, then a 3x3 conv at the high resolution."""

    def __init__(self, cin: int, cskip: int, norm: str):
        super().__init__()
        self.narrow = nn.Conv2d(cin, cskip, 1)
        self.fuse = _conv_block(cskip, cskip, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.narrow(x), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(x + skip)


class UNetGenerator(nn.Module):
    """Encoder-decoder with skips; any input size (padded to 2**depth, cropped back). Output in [-1, 1]."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, width: int = 32, depth: int = 3,
                 res_blocks: int = 4, norm: str = "layer", residual: bool = False, ink: bool = False):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r} (valid: {', '.join(NORMS)})")
        if residual and in_channels != out_channels:
            raise ValueError("a residual generator needs in_channels == out_channels")
        # Global residual learning: the network predicts a change of the input (in tanh's pre-activation
        # space), starting from the identity (zero head). Small data / short runs then edit the photo instead
        # of having to re-learn it first.
        self.residual = residual
        self.multiple = 2 ** depth
        chans = [width * min(2 ** i, CHANNEL_CAP) for i in range(depth + 1)]  # level i has chans[i] channels
        self.stem = _conv_block(in_channels, chans[0], norm)
        self.down = nn.ModuleList(_conv_block(chans[i], chans[i + 1], norm, stride=2) for i in range(depth))
        self.middle = nn.Sequential(*(InvertedResBlock(chans[-1], norm) for _ in range(res_blocks)))
        self.up = nn.ModuleList(UpBlock(chans[i + 1], chans[i], norm) for i in reversed(range(depth)))
        self.head = nn.Conv2d(chans[0], out_channels, 3, padding=1, padding_mode="reflect")
        if residual:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        # Learned outlines over the paint (ink.py says why); needs an RGB input to find the edges in.
        if ink and (in_channels != 3 or out_channels != 3):
            raise ValueError("the ink layer needs in_channels == out_channels == 3")
        self.ink = InkLayer() if ink else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        photo = x
        h, w = x.shape[-2:]
        # pad to a multiple of 2**depth, and to at least 2 pixels at the lowest level (reflect padding needs it);
        # replicate (not reflect) here: reflect needs pad < size, which fails for tiny inputs such as 1x1
        pad_h = max(-h % self.multiple, 2 * self.multiple - h)
        pad_w = max(-w % self.multiple, 2 * self.multiple - w)
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x
        skips = [self.stem(x)]  # (B, chans[0], H, W), then (B, chans[i], H/2**i, W/2**i)
        for block in self.down:
            skips.append(block(skips[-1]))
        y = self.middle(skips.pop())
        for block in self.up:
            y = block(y, skips.pop())
        out = self.head(y)
        if self.residual:  # tanh(atanh(x) + delta): identity at delta = 0, output stays in (-1, 1)
            out = out + torch.atanh(x[:, : out.shape[1]].clamp(-0.999, 0.999))
        paint = torch.tanh(out)[..., :h, :w]
        return self.ink(photo, paint) if self.ink is not None else paint


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix): a map of real/fake logits, one per overlapping patch. `in_channels=6` for the
    conditional variant that sees cat(source, target). Spectral norm wraps every conv when enabled, in which
    case no other normalization is used; without it, instance norm as in pix2pix."""

    def __init__(self, in_channels: int = 3, width: int = 64, n_layers: int = 3, spectral_norm: bool = True):
        super().__init__()
        wrap = _spectral_norm if spectral_norm else (lambda m: m)

        def norm(c):
            return nn.Identity() if spectral_norm else nn.InstanceNorm2d(c, affine=True)

        layers = [wrap(nn.Conv2d(in_channels, width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
        cin = width
        for i in range(1, n_layers + 1):
            cout = width * min(2 ** i, CHANNEL_CAP)
            stride = 2 if i < n_layers else 1  # the last feature conv keeps resolution (pix2pix)
            layers += [wrap(nn.Conv2d(cin, cout, 4, stride=stride, padding=1)), norm(cout),
                       nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        layers.append(wrap(nn.Conv2d(cin, 1, 4, stride=1, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 1, H', W') logits


GENERATORS = {"unet": UNetGenerator, "animegan_v2": AnimeGANv2Generator}
DISCRIMINATORS = {"patch": PatchDiscriminator}


def _build(registry: dict, kind: str, name: str, kwargs: dict) -> nn.Module:
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r} (valid: {', '.join(sorted(registry))})")
    return registry[name](**kwargs)


def build_generator(name: str, **kwargs) -> nn.Module:
    """Construct a generator from `GENERATORS` by name."""
    return _build(GENERATORS, "generator", name, kwargs)


def build_discriminator(name: str, **kwargs) -> nn.Module:
    """Construct a discriminator from `DISCRIMINATORS` by name."""
    return _build(DISCRIMINATORS, "discriminator", name, kwargs)


def set_norm_mode(module: nn.Module, mode: str) -> None:
    """Switch every StatNorm to normal / record / frozen (used by tiled inference)."""
    for m in module.modules():
        if isinstance(m, StatNorm):
            m.mode = mode
            if mode == "normal":
                m.stats = None


def requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)
