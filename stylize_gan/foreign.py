"""Generators published by other projects, recognised from their keys (weights files) or their graph (ONNX).

- animegan2-pytorch (`face_paint_512_v2.pt`, `paprika.pt`, `celeba_distill.pt`, ...): a plain state dict of its
  `Generator`, whose key names `AnimeGANv2Generator` shares.
- pytorch-animeGAN `GeneratorV2_*.pt`: {"model_state_dict": ..., "epoch": ...}, the same network under other
  names and with a bias on the last conv; upsampled by bilinear x2 without corner alignment.
- pytorch-animeGAN `generator_*.pth` (v1): {"model_state_dict": ...} of its v1 generator.
- AnimeGANv3 `.onnx` (the only form it ships in): NHWC float RGB in [-1, 1], sides resized to a multiple of 8
  (16 for the "tiny" models) and at least 256 (its `test_by_onnx.py`), output NHWC in [-1, 1].
- our own exports (`export_onnx.py`): NCHW in [-1, 1] at any size, tagged in the ONNX metadata.

All weights files are read with `torch.load(weights_only=True)`: a pickle that would run code is refused.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.checkpoints import load_weights_any
from common.errors import UserInputError

from .animegan import AnimeGANv1Generator, AnimeGANv2Generator

ONNX_LAYOUT_KEY = "stylize_gan.layout"  # metadata_props entry written by export_onnx.py
V3_MULTIPLE, V3_TINY_MULTIPLE, V3_MIN_SIDE = 8, 16, 256

# our AnimeGANv2 key -> pytorch-animeGAN GeneratorV2 key, by ordered substitutions
_V2_INNER = [(r"\.layers\.0\.1\.", ".conv_block.conv."), (r"\.layers\.0\.2\.", ".conv_block.ins_norm."),
             (r"\.layers\.1\.1\.", ".conv_block2.conv."), (r"\.layers\.1\.2\.", ".conv_block2.ins_norm."),
             (r"\.layers\.2\.", ".conv."), (r"\.layers\.3\.", ".norm."),
             (r"^(block_\w\.\d+)\.1\.", r"\1.conv."), (r"^(block_\w\.\d+)\.2\.", r"\1.ins_norm.")]
_V2_BLOCKS = {"block_a": "conv_block1", "block_b": "conv_block2", "block_c": "res_blocks", "block_d": "conv_block3",
              "block_e": "conv_block4", "out_layer": "decode_blocks"}


def pytorch_animegan_v2_name(key: str) -> str:
    """Name of one of our AnimeGANv2 parameters in a pytorch-animeGAN GeneratorV2 file."""
    for pattern, repl in _V2_INNER:
        key = re.sub(pattern, repl, key)
    block, rest = key.split(".", 1)
    return f"{_V2_BLOCKS[block]}.{rest}"


def _animegan2_pytorch(state: dict) -> nn.Module:
    return AnimeGANv2Generator(align_corners=True)


def _pytorch_animegan_v2(state: dict) -> tuple[nn.Module, dict]:
    net = AnimeGANv2Generator(align_corners=False, out_bias=True)
    return net, {ours: state.get(pytorch_animegan_v2_name(ours)) for ours in net.state_dict()}


# format name -> (a key only that layout has, builder(state) -> module or (module, renamed state))
PUBLISHED_FORMATS = {
    "animegan2-pytorch": ("block_c.1.layers.0.1.weight", _animegan2_pytorch),
    "pytorch-animeGAN v2": ("res_blocks.1.conv_block2.conv.weight", _pytorch_animegan_v2),
    "pytorch-animeGAN v1": ("res_blocks.0.depthwise_conv.weight", lambda state: AnimeGANv1Generator()),
}


def recognise(state: dict[str, torch.Tensor]) -> str | None:
    """Name of the published layout these keys follow, or None."""
    for name, (marker, _) in PUBLISHED_FORMATS.items():
        if marker in state:
            return name
    return None


def build_published(state: dict[str, torch.Tensor], path: str | Path) -> nn.Module:
    """The published generator these weights belong to, loaded strictly (eval mode); one-line errors."""
    from .checkpoint import load_state_strict
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}  # DDP saves
    name = recognise(state)
    if name is None:
        sample = ", ".join(list(state)[:3]) or "no tensors"
        raise UserInputError(f"{path}: not a generator this version can read (keys {sample}; known: our "
                             f".safetensors, {', '.join(PUBLISHED_FORMATS)}, ONNX)")
    built = PUBLISHED_FORMATS[name][1](state)
    net, renamed = built if isinstance(built, tuple) else (built, state)
    if any(v is None for v in renamed.values()):
        missing = [k for k, v in renamed.items() if v is None]
        raise UserInputError(f"{path}: {name} file without {len(missing)} of its weights (e.g. {missing[0]})")
    load_state_strict(net, renamed, path)
    return net.eval()


def load_published(path: str | Path) -> nn.Module:
    """A .pt / .pth / .ckpt / .bin generator from another project (pickle-free loading)."""
    return build_published(load_weights_any(path), path)


class OnnxGenerator(nn.Module):
    """An ONNX image-to-image generator run by onnxruntime behind our generator interface:
    (B, 3, H, W) in [-1, 1] -> (B, 3, H, W) in [-1, 1]. Untiled (its normalisations are unknown)."""

    tileable = False

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        super().__init__()
        import onnxruntime as ort
        self.path = Path(path)
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(self.path), providers=providers)
        except Exception as err:  # onnxruntime raises its own exception types for unreadable models
            raise UserInputError(f"{self.path}: not a readable ONNX model ({' '.join(str(err).split())[:200]})") \
                from None
        layout = self.session.get_modelmeta().custom_metadata_map.get(ONNX_LAYOUT_KEY)
        self.nchw, self.input_name = self._check_io(layout)
        # AnimeGANv3 conventions (ours take any size: resize nothing)
        self.size_multiple = 1 if self.nchw else (V3_TINY_MULTIPLE if "tiny" in self.path.name.lower() else V3_MULTIPLE)
        self.min_side = 1 if self.nchw else V3_MIN_SIDE

    def _check_io(self, layout: str | None) -> tuple[bool, str]:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()

        def refuse(why: str):
            raise UserInputError(f"{self.path}: not an image-to-image generator ({why})")

        if len(inputs) != 1 or not outputs:
            refuse(f"{len(inputs)} inputs, {len(outputs)} outputs; expected one image in, one out")
        shape, out_shape = inputs[0].shape, outputs[0].shape
        # an output without shape information (rank 0 here) is checked when it runs
        if len(shape) != 4 or len(out_shape) not in (0, 4) or inputs[0].type != "tensor(float)":
            refuse(f"input {inputs[0].type} {shape}, output {out_shape}; expected float 4-D images")
        nchw = layout == "NCHW" or (layout is None and shape[1] == 3 and shape[3] != 3)
        out_channels = (out_shape[1] if nchw else out_shape[3]) if out_shape else None
        channels = (shape[1] if nchw else shape[3], out_channels)
        if any(isinstance(c, int) and c != 3 for c in channels) or not any(c == 3 for c in channels):
            refuse(f"input {shape}, output {out_shape}; expected RGB in and out")
        return nchw, inputs[0].name

    def _fit(self, side: int) -> int:
        return max(self.min_side, side - side % self.size_multiple)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        size = (self._fit(h), self._fit(w))
        y = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True) if size != (h, w) else x
        feed = y.float().cpu().numpy() if self.nchw else y.permute(0, 2, 3, 1).float().cpu().numpy()
        try:
            out = torch.from_numpy(self.session.run(None, {self.input_name: feed})[0])
        except Exception as err:  # onnxruntime's own types (InvalidArgument, Fail, ...): a model it cannot run here
            raise UserInputError(f"{self.path}: onnxruntime cannot run it on a {size[1]}x{size[0]} image "
                                 f"({' '.join(str(err).split())[:200]})") from None
        if out.dim() == 4 and not self.nchw:
            out = out.permute(0, 3, 1, 2)
        if out.dim() != 4 or out.shape[:2] != (x.shape[0], 3):
            raise UserInputError(f"{self.path}: not an image-to-image generator (returned {tuple(out.shape)})")
        if out.shape[-2:] != (h, w):
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        return out.to(x.device)


def load_onnx_generator(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: checkpoint not found")
    return OnnxGenerator(path, device).eval()
