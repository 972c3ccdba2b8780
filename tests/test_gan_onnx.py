"""ONNX export (python -m stylize_gan.export_onnx): onnxruntime equals PyTorch at odd sizes for our U-Net (ink and
residual on) and the AnimeGANv2 generator, the file runs again as a stage-1 generator, and bad paths are refused
in one line before any work."""
from __future__ import annotations

import pytest
import torch

from stylize_gan.animegan import AnimeGANv2Generator
from stylize_gan.checkpoint import load_generator, save_generator
from stylize_gan.export_onnx import cli, parity
from stylize_gan.foreign import OnnxGenerator
from stylize_gan.inference import stylize_tensor

from _gan_fixtures import single_thread  # noqa: F401

UNET = dict(in_channels=3, out_channels=3, width=4, depth=2, res_blocks=1, norm="layer", residual=True, ink=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(generator, .onnx path) for a tiny U-Net file of ours and a published-layout AnimeGANv2 .pt file."""
    root = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    from stylize_gan.networks import UNetGenerator
    save_generator(UNetGenerator(**UNET), root / "unet.safetensors", "unet", UNET)
    torch.save(AnimeGANv2Generator().state_dict(), root / "paprika.pt")
    out = {}
    for name in ("unet.safetensors", "paprika.pt"):
        result = cli(["--checkpoint", str(root / name), "--output", str(root / f"{name}.onnx")])
        assert result["max_abs_diff"] < 1e-3
        out[name] = (load_generator(root / name), root / f"{name}.onnx")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unet.safetensors", "paprika.pt"])
def test_onnxruntime_matches_pytorch_at_odd_sizes(exported, name):
    generator, path = exported[name]
    for size in ((37, 53), (9, 130), (64, 33)):
        assert parity(generator, path, size) < 1e-3, size
    runner = load_generator(path)  # runs again through --gan-checkpoint / --checkpoint
    assert isinstance(runner, OnnxGenerator) and runner.nchw
    x = torch.rand(1, 3, 29, 47) * 2 - 1
    torch.testing.assert_close(stylize_tensor(runner, x), stylize_tensor(generator, x), atol=1e-3, rtol=0)


def test_export_refuses_bad_paths_in_one_line(tmp_path, capsys):
    gen = tmp_path / "g.safetensors"
    save_generator(AnimeGANv2Generator(), gen, "animegan_v2", {})
    (tmp_path / "taken.onnx").write_bytes(b"keep me")
    (tmp_path / "dir.onnx").mkdir()
    (tmp_path / "model.onnx").write_bytes(b"")
    cases = [([str(tmp_path / "none.safetensors"), str(tmp_path / "a.onnx")], "not found"),
             ([str(gen), str(tmp_path / "a.png")], "must be an .onnx file"),
             ([str(gen), str(tmp_path / "no" / "a.onnx")], "does not exist"),
             ([str(gen), str(tmp_path / "taken.onnx")], "already exists"),
             ([str(gen), str(tmp_path / "dir.onnx")], "is a folder"),
             ([str(tmp_path / "model.onnx"), str(tmp_path / "b.onnx")], "already an ONNX model")]
    for (checkpoint, output), message in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli(["--checkpoint", checkpoint, "--output", output])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and message in err and "\n" not in err, (message, err)
    assert (tmp_path / "taken.onnx").read_bytes() == b"keep me" and not (tmp_path / "a.onnx").exists()
