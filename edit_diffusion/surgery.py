"""InstructPix2Pix input surgery: a text-to-image UNet reads 4 latent channels; the editor reads 8
(noisy latents + latents of the input image, §3.2). The new input weights start at zero so the
surgically widened UNet computes exactly what the pretrained one did until training moves them."""
from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

EDIT_IN_CHANNELS = 8


def expand_conv_in(unet: UNet2DConditionModel, in_channels: int = EDIT_IN_CHANNELS) -> UNet2DConditionModel:
    """Widen `unet.conv_in` to `in_channels` in place (extra weights zero, old weights and bias kept) and
    record it in the config; a UNet that already has `in_channels` inputs is returned untouched."""
    old = unet.conv_in
    current = unet.config.in_channels
    if current == in_channels:
        return unet
    if current > in_channels:
        raise ValueError(f"UNet has {current} input channels, cannot reduce to {in_channels}")
    new = torch.nn.Conv2d(in_channels, old.out_channels, kernel_size=old.kernel_size, stride=old.stride,
                          padding=old.padding, dilation=old.dilation, bias=old.bias is not None,
                          device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :current] = old.weight  # (out, in, k, k): pretrained channels first
        if old.bias is not None:
            new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)
    return unet
