"""The published AnimeGAN generators: key-for-key layouts (checked against lists taken from the reference sources
in tests/data), forward parity with an independent functional re-statement of the reference forward, loading
through every entry point's loader, one-line errors for wrong files, the AnimeGANv3 ONNX conventions, and the
untiled shrink. Random weights throughout (the real files are not downloadable here)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stylize_gan.animegan import AnimeGANv1Generator, AnimeGANv2Generator
from stylize_gan.checkpoint import load_generator
from stylize_gan.foreign import OnnxGenerator, pytorch_animegan_v2_name

from _gan_fixtures import single_thread  # noqa: F401

DATA = Path(__file__).parent / "data"


def reference_keys(name: str) -> list[tuple[str, tuple[int, ...]]]:
    rows = [line.split() for line in (DATA / f"{name}_keys.txt").read_text().splitlines() if not line.startswith("#")]
    return [(key, tuple(int(d) for d in shape.split("x"))) for key, shape in rows]


def layout(state: dict) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in state.items()]


def random_state(net: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights, GroupNorm scales included (so a wrong mapping shows); conv weights scaled like He init."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in net.state_dict().items():
        fan_in = v[0].numel() if v.dim() > 1 else 1
        norm_scale = v.dim() == 1 and k.endswith("weight")  # GroupNorm weights: random around 1
        state[k] = torch.randn(v.shape, generator=g) * (2.0 / fan_in) ** 0.5 + (1.0 if norm_scale else 0.0)
    return state


def test_key_layouts_match_the_reference_sources():
    v2 = AnimeGANv2Generator()
    assert layout(v2.state_dict()) == reference_keys("animegan2_pytorch")
    assert sum(p.numel() for p in v2.parameters()) == 2_143_552  # the published 2.14 M
    with_bias = AnimeGANv2Generator(out_bias=True).state_dict()
    assert [(pytorch_animegan_v2_name(k), tuple(v.shape)) for k, v in with_bias.items()] == \
        reference_keys("pytorch_animegan_v2")
    assert layout(AnimeGANv1Generator().state_dict()) == reference_keys("pytorch_animegan_v1")


# --- an independent, functional statement of animegan2-pytorch's Generator.forward on a state dict

def _conv_norm_lrelu(state, name, x, stride=1):
    weight = state[f"{name}.1.weight"]
    k = weight.shape[-1]
    pad = (0, 1, 0, 1) if stride == 2 else (k // 2,) * 4
    x = F.conv2d(F.pad(x, pad, mode="reflect"), weight, state.get(f"{name}.1.bias"), stride=stride,
                 groups=x.shape[1] // weight.shape[1])
    return F.leaky_relu(F.group_norm(x, 1, state[f"{name}.2.weight"], state[f"{name}.2.bias"]), 0.2)


def _inverted_residual(state, name, x):
    y = _conv_norm_lrelu(state, f"{name}.layers.0", x)
    y = _conv_norm_lrelu(state, f"{name}.layers.1", y)
    y = F.group_norm(F.conv2d(y, state[f"{name}.layers.2.weight"]), 1, state[f"{name}.layers.3.weight"],
                     state[f"{name}.layers.3.bias"])
    return x + y if y.shape == x.shape else y


def reference_forward(state, x, align_corners=True):
    y = _conv_norm_lrelu(state, "block_a.0", x)
    y = _conv_norm_lrelu(state, "block_a.2", _conv_norm_lrelu(state, "block_a.1", y, stride=2))
    half = y.shape[-2:]
    y = _conv_norm_lrelu(state, "block_b.1", _conv_norm_lrelu(state, "block_b.0", y, stride=2))
    y = _conv_norm_lrelu(state, "block_c.0", y)
    for i in range(1, 5):
        y = _inverted_residual(state, f"block_c.{i}", y)
    y = _conv_norm_lrelu(state, "block_c.5", y)
    for block, size in (("block_d", half), ("block_e", x.shape[-2:])):
        y = (F.interpolate(y, size=size, mode="bilinear", align_corners=True) if align_corners
             else F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False))
        for i in range(3 if block == "block_e" else 2):
            y = _conv_norm_lrelu(state, f"{block}.{i}", y)
    return torch.tanh(F.conv2d(y, state["out_layer.0.weight"], state.get("out_layer.0.bias")))


@torch.no_grad()
def test_forward_matches_the_reference_at_odd_sizes_and_both_corner_modes():
    net = AnimeGANv2Generator().eval()
    state = random_state(net)
    net.load_state_dict(state, strict=True)
    x = torch.rand(1, 3, 37, 53, generator=torch.Generator().manual_seed(1)) * 2 - 1
    out = net(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, reference_forward(state, x), atol=1e-5, rtol=0)
    net.align_corners = False  # animegan2-pytorch's test script: x2 upsampling (sizes a multiple of 4)
    x = x[..., :36, :52]
    torch.testing.assert_close(net(x), reference_forward(state, x, align_corners=False), atol=1e-5, rtol=0)
    assert net(x[..., :5, :3]).shape == (1, 3, 5, 3)  # below the reference's 8 px minimum: padded, cropped back


@torch.no_grad()
def test_published_files_load_through_the_generator_loader(tmp_path):
    x = torch.rand(1, 3, 32, 44, generator=torch.Generator().manual_seed(2)) * 2 - 1
    # animegan2-pytorch: a plain torch.save'd state dict
    state = random_state(AnimeGANv2Generator())
    torch.save(state, tmp_path / "face_paint_512_v2.pt")
    loaded = load_generator(tmp_path / "face_paint_512_v2.pt")
    assert isinstance(loaded, AnimeGANv2Generator) and loaded.align_corners and not loaded.training
    torch.testing.assert_close(loaded(x), reference_forward(state, x), atol=1e-5, rtol=0)
    # pytorch-animeGAN v2: {"model_state_dict", "epoch", "optimizer_state_dict"}, its own names, a last-conv bias
    state = random_state(AnimeGANv2Generator(out_bias=True), seed=3)
    theirs = {pytorch_animegan_v2_name(k): v for k, v in state.items()}
    torch.save({"model_state_dict": theirs, "epoch": 7,
                "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 2e-5, "params": [0]}]}},
               tmp_path / "GeneratorV2_gldv2_Hayao.pt")
    loaded = load_generator(tmp_path / "GeneratorV2_gldv2_Hayao.pt")
    torch.testing.assert_close(loaded(x), reference_forward(state, x, align_corners=False), atol=1e-5, rtol=0)
    # pytorch-animeGAN v1
    v1 = AnimeGANv1Generator().eval()
    state = random_state(v1, seed=4)
    v1.load_state_dict(state)
    torch.save({"model_state_dict": state}, tmp_path / "generator_hayao.pth")
    torch.testing.assert_close(load_generator(tmp_path / "generator_hayao.pth")(x), v1(x))
    assert v1(x[..., :31, :7]).shape == (1, 3, 31, 7)  # the reference needs sides that are multiples of 4


def run_stylize_cli(argv, capsys) -> str:
    from stylize_gan.__main__ import cli
    with pytest.raises(SystemExit) as exit_info:
        cli(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err and "Traceback" not in err
    return err


def test_wrong_files_get_one_line_errors(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper
    photo = tmp_path / "photo.png"
    from PIL import Image
    Image.new("RGB", (12, 10), (200, 30, 30)).save(photo)
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "classifier.pt")
    vector = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "mlp",
                               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])])
    onnx.save(helper.make_model(vector), tmp_path / "mlp.onnx")
    # image in, but a number out, declared without a shape: found out when it runs
    mean = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["y"], keepdims=0)], "mean",
                             [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "H", "W", 3])],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(mean, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "mean.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    for name, expected in (("classifier.pt", "not a generator"), ("mlp.onnx", "not an image-to-image generator"),
                           ("junk.onnx", "not a readable ONNX model"), ("missing.pth", "not found"),
                           ("mean.onnx", "not an image-to-image generator (returned ()")):
        err = run_stylize_cli(["--checkpoint", str(tmp_path / name), "--input", str(photo),
                               "--output", str(tmp_path / "out.png")], capsys)
        assert expected in err and name in err
    assert not (tmp_path / "out.png").exists()


def _nhwc_negation_model(path: Path) -> None:
    """Stands in for an AnimeGANv3 release: NHWC float RGB in, NHWC out (here: -x), symbolic batch/H/W."""
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Neg", ["AnimeGANv3_input:0"], ["generator_out:0"])], "v3",
                              [helper.make_tensor_value_info("AnimeGANv3_input:0", TensorProto.FLOAT,
                                                             ["N", "H", "W", 3])],
                              [helper.make_tensor_value_info("generator_out:0", TensorProto.FLOAT,
                                                             ["N", "H", "W", 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


def test_animegan_v3_onnx_conventions(tmp_path, real_photo):
    from stylize_gan.inference import stylize_pil
    _nhwc_negation_model(tmp_path / "AnimeGANv3_Hayao_36.onnx")
    gen = load_generator(tmp_path / "AnimeGANv3_Hayao_36.onnx")
    assert isinstance(gen, OnnxGenerator) and not gen.nchw
    # its test_by_onnx.py: sides at least 256, else rounded down to a multiple of 8 (16 for the tiny models)
    assert (gen._fit(30), gen._fit(300), gen._fit(256)) == (256, 296, 256)
    _nhwc_negation_model(tmp_path / "AnimeGANv3_tiny_Cute.onnx")
    assert load_generator(tmp_path / "AnimeGANv3_tiny_Cute.onnx")._fit(300) == 288
    photo = real_photo.resize((8, 6)).resize((41, 29))  # smooth: resampling to 256 px and back barely shows
    out = stylize_pil(gen, photo)
    assert out.size == photo.size
    inverted = 255 - np.asarray(photo, dtype=np.float32)  # -x in [-1, 1] is 255 - x in bytes
    assert np.abs(np.asarray(out, dtype=np.float32) - inverted).mean() < 3


def test_untiled_generators_shrink_with_a_notice(monkeypatch):
    from stylize_gan import inference
    net = AnimeGANv2Generator().eval()
    seen = []
    net.register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape[-2:])))
    monkeypatch.setattr(inference, "UNTILED_MAX_SIDE", 24)
    x = torch.rand(1, 3, 40, 20) * 2 - 1
    with pytest.warns(UserWarning, match="cannot be tiled"):
        out = inference.stylize_tensor(net, x, tile=32, overlap=8)
    assert out.shape == x.shape and seen == [(24, 12)]
    seen.clear()
    out = inference.stylize_tensor(net, x[..., :24, :9], tile=32, overlap=8)  # small enough: one plain pass
    assert out.shape == (1, 3, 24, 9) and seen == [(24, 9)]
