"""Inference at any size: odd sizes, tiling equals one pass, files / folders / videos, never overwrite inputs."""
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from common.images import pil_to_tensor
from stylize_gan.__main__ import cli
from stylize_gan.checkpoint import save_generator
from stylize_gan.inference import stylize_path, stylize_pil, stylize_tensor
from stylize_gan.networks import build_generator

from _gan_fixtures import single_thread  # noqa: F401 (autouse fixture)

KWARGS = dict(width=4, depth=3, res_blocks=1, norm="layer")


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    return build_generator("unet", **KWARGS).eval()


@pytest.fixture
def checkpoint(tmp_path, generator):
    path = tmp_path / "g.safetensors"
    save_generator(generator, path, "unet", KWARGS)
    return path


@pytest.mark.parametrize("size", [(1, 1), (3, 2), (31, 17), (64, 48)])
def test_stylize_pil_keeps_size(generator, real_photo, size):
    out = stylize_pil(generator, real_photo.resize(size))
    assert out.size == size and out.mode == "RGB"


@pytest.mark.parametrize("norm, ink", [("layer", False), ("instance", False), ("group", False), ("layer", True)])
def test_tiled_equals_untiled(real_photo, norm, ink):
    torch.manual_seed(0)
    gen = build_generator("unet", width=4, depth=3, res_blocks=1, norm=norm, ink=ink).eval()
    x = pil_to_tensor(real_photo.resize((203, 171)))[None]  # odd sizes, several tiles each way
    whole = stylize_tensor(gen, x, tile=1024)
    tiled = stylize_tensor(gen, x, tile=64, overlap=24)
    assert tiled.shape == whole.shape == (1, 3, 171, 203)
    err = (tiled - whole).abs()
    assert err.mean() < 0.01 and err.max() < 0.15, (float(err.mean()), float(err.max()))


def test_tiled_large_image_with_stats_from_thumbnail(generator, real_photo):
    """Beyond stats_size the statistics come from a downscaled copy: still close, and the right size."""
    x = pil_to_tensor(real_photo.resize((161, 130)))[None]
    whole = stylize_tensor(generator, x, tile=1024)
    tiled = stylize_tensor(generator, x, tile=64, overlap=24, stats_size=96)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().mean() < 0.05


def test_stylize_path_image_folder_and_refusals(tmp_path, generator, real_photo):
    src = tmp_path / "in.png"
    real_photo.resize((33, 21)).save(src)
    out = tmp_path / "out.jpg"
    assert stylize_path(generator, src, out) == [out]
    assert Image.open(out).size == (33, 21)
    with pytest.raises(ValueError, match="already exists"):
        stylize_path(generator, src, out)
    stylize_path(generator, src, out, overwrite=True)
    before = src.read_bytes()
    with pytest.raises(ValueError, match="input"):
        stylize_path(generator, src, src, overwrite=True)
    assert src.read_bytes() == before
    # folder -> folder; an unreadable file is skipped with a warning naming it
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        real_photo.resize((20 + i, 16)).save(folder / f"{i}.png")
    (folder / "bad.png").write_bytes(b"nope")
    with pytest.warns(UserWarning, match="bad.png"):
        outputs = stylize_path(generator, folder, tmp_path / "styled")
    assert sorted(p.name for p in outputs) == ["0.png", "1.png"]
    with pytest.raises(ValueError, match="input folder"):
        stylize_path(generator, folder, folder, overwrite=True)


def test_stylize_video(tmp_path, generator):
    src = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"mp4v"), 5, (40, 24))
    assert writer.isOpened()
    for i in range(3):
        writer.write(np.full((24, 40, 3), 40 * i, np.uint8))
    writer.release()
    out = tmp_path / "styled.mp4"
    assert stylize_path(generator, src, out) == [out]
    cap = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 3 and frames[0].shape == (24, 40, 3)
    assert not list(tmp_path.glob(".*tmp*"))  # no temp files left behind
    with pytest.raises(ValueError, match="video output"):
        stylize_path(generator, src, tmp_path / "frame.png")


def test_cli(tmp_path, checkpoint, generator, real_photo, capsys):
    src = tmp_path / "in.png"
    real_photo.resize((30, 22)).save(src)
    assert cli(["--checkpoint", str(checkpoint), "--input", str(src), "--output", str(tmp_path / "o.png")])
    # the file is the generator's own output for this photo (not just any image of the right size)
    expected = np.asarray(stylize_pil(generator, Image.open(src).convert("RGB")))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png").convert("RGB")), expected)
    for argv, message in (
        (["--checkpoint", str(src), "--input", str(src), "--output", str(tmp_path / "p.png")], "safetensors"),
        (["--checkpoint", str(checkpoint), "--input", str(tmp_path / "none.png"), "--output", str(tmp_path / "p.png")],
         "not found"),
        (["--checkpoint", str(checkpoint), "--input", str(src), "--output", str(tmp_path / "o.png")], "exists"),
        (["--checkpoint", str(checkpoint), "--input", str(src), "--output", str(tmp_path / "q.png"), "--tile", "8"],
         "tile"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            cli(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
