"""The published AnimeGAN generators, written from their descriptions so their files load key for key.

- `AnimeGANv2Generator`: AnimeGANv2 (Chen et al. 2020) as ported to PyTorch by animegan2-pytorch
  (`face_paint_512_v2.pt`, `paprika.pt`, ...; 2.14 M parameters) and by pytorch-animeGAN (`GeneratorV2_*.pt`, the
  same network with a bias on the last conv, keys renamed by `foreign.py`). Registered in `GENERATORS` as
  "animegan_v2", so it trains and fine-tunes with our losses.
- `AnimeGANv1Generator`: pytorch-animeGAN's v1 generator (`generator_hayao.pth`, `generator_shinkai.pth`),
  loaded for inference only.

Both normalise over the whole image (GroupNorm(1) / InstanceNorm), so tiles would see other statistics than the
whole image: they declare `tileable = False` and inference.py runs them in one pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Smallest side the v2 network runs at: the 7x7 reflect padding needs >= 4 px, the quarter-size 3x3 reflect
# padding >= 2 px (8 / 4). Smaller inputs are padded up, then cropped back.
V2_MIN_SIDE = 8


def conv_norm_lrelu(cin: int, cout: int, kernel: int = 3, stride: int = 1, pad: int | tuple = 1,
                    groups: int = 1, bias: bool = False) -> nn.Sequential:
    """(0) reflect pad, (1) conv, (2) GroupNorm(1) = layer norm over C, H, W, (3) LeakyReLU(0.2): the published
    indices, so the weights are `<name>.1.weight`, `<name>.2.weight`, `<name>.2.bias`."""
    return nn.Sequential(
        nn.ReflectionPad2d(pad),
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=bias),
        nn.GroupNorm(1, cout, affine=True),
        nn.LeakyReLU(0.2, inplace=True),
    )


class InvertedResidual(nn.Module):
    """MobileNetV2 block of AnimeGANv2 (expansion 2): 1x1 expand, depthwise 3x3 (with bias), 1x1 project + norm;
    the skip only when in and out widths agree (the first block widens 128 -> 256 and has none)."""

    def __init__(self, cin: int, cout: int, expansion: int = 2):
        super().__init__()
        hidden = round(cin * expansion)
        self.skip = cin == cout
        self.layers = nn.Sequential(
            conv_norm_lrelu(cin, hidden, kernel=1, pad=0),
            conv_norm_lrelu(hidden, hidden, groups=hidden, bias=True),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.GroupNorm(1, cout, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(x)
        return x + y if self.skip else y


class AnimeGANv2Generator(nn.Module):
    """AnimeGANv2 generator: (B, 3, H, W) in [-1, 1] -> (B, 3, H, W) in [-1, 1] (tanh), any H, W.

    Two stride-2 convs (right/bottom reflect padding), four inverted residual blocks at 1/4 size, two bilinear
    upsamplings to the exact 1/2 and full sizes. `align_corners=True` is the published model's default;
    False is what animegan2-pytorch's test script passes (and pytorch-animeGAN's GeneratorV2 uses)."""

    tileable = False  # GroupNorm(1) statistics are whole-image

    def __init__(self, align_corners: bool = True, out_bias: bool = False):
        super().__init__()
        self.align_corners = align_corners
        half_pad = (0, 1, 0, 1)  # (left, right, top, bottom): stride 2 on a 3x3 kernel, TF "same" style
        self.block_a = nn.Sequential(conv_norm_lrelu(3, 32, kernel=7, pad=3),
                                     conv_norm_lrelu(32, 64, stride=2, pad=half_pad),
                                     conv_norm_lrelu(64, 64))
        self.block_b = nn.Sequential(conv_norm_lrelu(64, 128, stride=2, pad=half_pad),
                                     conv_norm_lrelu(128, 128))
        self.block_c = nn.Sequential(conv_norm_lrelu(128, 128),
                                     InvertedResidual(128, 256), InvertedResidual(256, 256),
                                     InvertedResidual(256, 256), InvertedResidual(256, 256),
                                     conv_norm_lrelu(256, 128))
        self.block_d = nn.Sequential(conv_norm_lrelu(128, 128), conv_norm_lrelu(128, 128))
        self.block_e = nn.Sequential(conv_norm_lrelu(128, 64), conv_norm_lrelu(64, 64),
                                     conv_norm_lrelu(64, 32, kernel=7, pad=3))
        # pytorch-animeGAN's GeneratorV2 has a bias here; animegan2-pytorch's files do not
        self.out_layer = nn.Sequential(nn.Conv2d(32, 3, 1, bias=out_bias), nn.Tanh())

    def _up(self, x: torch.Tensor, size) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # replicate: reflect needs pad < size, which fails below 4 px. sym_max and an unconditional pad keep
        # this symbolic in an ONNX export (export_onnx.py)
        pad_h, pad_w = torch.sym_max(0, V2_MIN_SIDE - h), torch.sym_max(0, V2_MIN_SIDE - w)
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        full = x.shape[-2:]
        y = self.block_a(x)                              # (B, 64, H/2, W/2)
        half = y.shape[-2:]
        y = self.block_c(self.block_b(y))                # (B, 128, H/4, W/4)
        y = self.block_d(self._up(y, half))              # (B, 128, H/2, W/2)
        y = self.block_e(self._up(y, full))              # (B, 32, H, W)
        return self.out_layer(y)[..., :h, :w]


# --- pytorch-animeGAN v1 (its 2021 release layout: zero-padded convs, InstanceNorm without affine weights)

def _in_lrelu(channels: int) -> list[nn.Module]:
    return [nn.InstanceNorm2d(channels), nn.LeakyReLU(0.2, inplace=True)]


class _ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=padding, bias=False)
        self.act = nn.Sequential(*_in_lrelu(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class _Separable(nn.Module):
    """Depthwise 3x3 + norm + act, pointwise 1x1 + norm + act."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.act1, self.act2 = nn.Sequential(*_in_lrelu(cin)), nn.Sequential(*_in_lrelu(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.pointwise(self.act1(self.depthwise(x))))


class _Down(nn.Module):
    """Strided separable conv plus a separable conv of the bilinearly halved input."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1, self.conv2 = _Separable(channels, channels, stride=2), _Separable(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(x) + self.conv2(F.interpolate(x, scale_factor=0.5, mode="bilinear"))


class _Up(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = _Separable(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="bilinear"))


class _V1Residual(nn.Module):
    def __init__(self, channels: int = 256, expansion: int = 2):
        super().__init__()
        hidden = channels * expansion
        self.conv_block = _ConvBlock(channels, hidden, kernel=1, padding=0)
        self.depthwise_conv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False)
        self.conv = nn.Conv2d(hidden, channels, 1, bias=False)
        self.act = nn.Sequential(*_in_lrelu(hidden))
        self.norm = nn.InstanceNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(self.conv(self.act(self.depthwise_conv(self.conv_block(x)))))


class AnimeGANv1Generator(nn.Module):
    """pytorch-animeGAN v1 generator, 2 stride-2 levels; inputs padded to a multiple of 4 and cropped back."""

    tileable = False  # InstanceNorm statistics are whole-image

    def __init__(self):
        super().__init__()
        self.encode_blocks = nn.Sequential(_ConvBlock(3, 64), _ConvBlock(64, 128), _Down(128), _ConvBlock(128, 128),
                                           _Separable(128, 256), _Down(256), _ConvBlock(256, 256))
        self.res_blocks = nn.Sequential(*(_V1Residual(256) for _ in range(8)))
        self.decode_blocks = nn.Sequential(_ConvBlock(256, 128), _Up(128), _Separable(128, 128),
                                           _ConvBlock(128, 128), _Up(128), _ConvBlock(128, 64), _ConvBlock(64, 64),
                                           nn.Conv2d(64, 3, 1, bias=False), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # the strided branch rounds up and the halved branch down at odd sizes: keep sides multiples of 4 (>= 8)
        pad_h, pad_w = torch.sym_max(-h % 4, 8 - h), torch.sym_max(-w % 4, 8 - w)
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        return self.decode_blocks(self.res_blocks(self.encode_blocks(x)))[..., :h, :w]
