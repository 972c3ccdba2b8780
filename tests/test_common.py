"""Shared helpers: robust image loading, atomic checkpoints, RNG round trip, grids, CLI errors."""
import io
import os
import random

import numpy as np
import pytest
import torch
from PIL import Image

from common.checkpoints import atomic_write, load_tensors, load_weights_any, save_tensors
from common.errors import UserInputError, cli_errors
from common.images import check_output_path, load_image, pil_to_tensor, save_image, tensor_to_pil
from common.seeding import restore_rng_state, rng_state_tensors, seed_everything
from common.tensorboard import image_grid


def _write(path, img, **kw):
    img.save(path, **kw)
    return path


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "LA", "1"])
def test_load_image_modes_become_rgb(tmp_path, real_photo, mode):
    img = real_photo.resize((40, 30))
    if mode == "I;16":
        arr = (np.asarray(img.convert("L"), dtype=np.uint16) * 257)
        src = Image.fromarray(arr)
        assert src.mode.startswith("I")
    else:
        src = img.convert(mode)
    ext = ".jpg" if mode == "CMYK" else ".png"
    path = _write(tmp_path / f"x{ext}", src)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (40, 30)
    if mode == "I;16":  # 16-bit scaled, not clipped to white
        assert abs(np.asarray(out).mean() - np.asarray(img.convert("L")).mean()) < 2


def test_exif_rotation_applied(tmp_path, real_photo):
    img = real_photo.resize((60, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif)
    assert load_image(path).size == (20, 60)


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n\x00\x00garbage"])
def test_bad_files_raise_user_error(tmp_path, content):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(UserInputError, match="bad.png"):
        load_image(path)


def test_truncated_jpeg_and_missing_and_dir(tmp_path, real_photo):
    buf = io.BytesIO()
    real_photo.save(buf, format="JPEG")
    path = tmp_path / "trunc.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    with pytest.raises(UserInputError):
        load_image(path)
    with pytest.raises(UserInputError, match="not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(UserInputError, match="folder"):
        load_image(tmp_path)


def test_tensor_round_trip(real_photo):
    img = real_photo.resize((33, 17))
    assert np.array_equal(np.asarray(tensor_to_pil(pil_to_tensor(img))), np.asarray(img))


def test_output_path_rules(tmp_path, real_photo):
    src = _write(tmp_path / "in.png", real_photo)
    with pytest.raises(UserInputError, match="input"):
        check_output_path(src, [src], overwrite=True)
    with pytest.raises(UserInputError, match="exists"):
        check_output_path(src, [])
    with pytest.raises(UserInputError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "o.png", [src])
    assert check_output_path(tmp_path / "o.png", [src]) == tmp_path / "o.png"
    save_image(real_photo, tmp_path / "o.png")
    assert load_image(tmp_path / "o.png").size == real_photo.size


def test_atomic_write_keeps_old_file_on_crash(tmp_path):
    target = tmp_path / "w.safetensors"
    save_tensors({"a": torch.ones(3)}, target)

    def crash(tmp):
        with open(tmp, "wb") as handle:
            handle.write(b"partial")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash)
    assert torch.equal(load_tensors(target)["a"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temp litter


def test_malicious_pickle_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": Evil()}, path)
    with pytest.raises(UserInputError, match="refused"):
        load_weights_any(path)
    assert not marker.exists()


def test_rng_state_round_trip():
    seed_everything(3)
    state = rng_state_tensors()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    random.random(), np.random.rand(), torch.rand(5)
    restore_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_image_grid_layout():
    a, b = torch.zeros(3, 3, 8, 8), torch.ones(3, 3, 8, 8)
    grid = image_grid([a, b], max_rows=2)
    assert grid.shape == (3, 2 * 8 + 3 * 2, 2 * 8 + 3 * 2) and grid.min() >= 0 and grid.max() <= 1


def test_cli_errors_exit_2(capsys):
    @cli_errors
    def boom():
        raise UserInputError("x.png: file not found\nsecond line")

    with pytest.raises(SystemExit) as info:
        boom()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: x.png: file not found second line"
