"""The files the bad-input table points at: tiny models, images in every awkward format, broken files, a
malicious pickle, an existing output, datasets and checkpoint folders. Built once per test module."""
from __future__ import annotations

import io
import os
import pickle  # noqa: F401 - only to *write* the malicious file the loaders must refuse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _gan_fixtures import make_animegan_dataset
from _webapp_models import build_tiny_editor, build_tiny_generator, real_photo

PHOTO = (64, 48)          # (w, h) of the ordinary test photo
EXIF_STORED = (40, 24)    # stored landscape, displayed portrait (orientation 6)
HUGE = (12000, 9000)


class Evil:
    """Unpickling this runs `open(marker, "w")`: if the marker exists, a loader executed the pickle."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _images(folder: Path) -> None:
    folder.mkdir(parents=True)
    photo = real_photo(PHOTO)
    photo.save(folder / "photo.png")
    photo.convert("CMYK").save(folder / "cmyk.jpg")
    photo.convert("P", palette=Image.ADAPTIVE, colors=16).save(folder / "palette.png")
    Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257).save(folder / "gray16.png")
    photo.convert("L").save(folder / "gray.png")
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(PHOTO))
    rgba.save(folder / "rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    real_photo(EXIF_STORED).save(folder / "exif6.jpg", exif=exif)
    Image.new("RGB", (1, 1), (200, 30, 30)).save(folder / "one.png")
    # a smooth 12000x9000 photo-sized image (compresses to a few hundred kB)
    ramp = np.linspace(0, 255, HUGE[0], dtype=np.float32)
    big = np.empty((HUGE[1], HUGE[0], 3), np.uint8)
    big[..., 0] = ramp[None, :]
    big[..., 1] = np.linspace(0, 255, HUGE[1], dtype=np.float32)[:, None]
    big[..., 2] = 128
    Image.fromarray(big).save(folder / "huge.jpg", quality=80)
    del big
    (folder / "text.png").write_text("this is a text file with an image extension\n")
    (folder / "empty.png").write_bytes(b"")
    buf = io.BytesIO()
    photo.save(buf, format="JPEG")
    (folder / "trunc.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    buf = io.BytesIO()
    photo.save(buf, format="PNG")
    (folder / "trunc.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    corrupt = bytearray(buf.getvalue())
    corrupt[60:200] = os.urandom(140)  # damaged IDAT: header fine, pixels not
    (folder / "corrupt.png").write_bytes(bytes(corrupt))
    (folder / "empty_dir").mkdir()
    (folder / "mixed").mkdir()
    photo.save(folder / "mixed" / "good.png")
    (folder / "mixed" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


def _models(folder: Path) -> None:
    from stylize_gan.checkpoint import save_discriminator, save_generator
    from stylize_gan.networks import build_discriminator, build_generator
    folder.mkdir(parents=True)
    build_tiny_generator(folder / "gen.safetensors")
    build_tiny_editor(folder / "editor")
    disc_kwargs = dict(in_channels=3, width=8, n_layers=2, spectral_norm=True)
    save_discriminator(build_discriminator("patch", **disc_kwargs), folder / "disc.safetensors", "patch", disc_kwargs)
    # right metadata, weights of a narrower generator: "a checkpoint from a different architecture"
    narrow = build_generator("unet", width=4, depth=2, res_blocks=1)
    save_generator(narrow, folder / "mismatch.safetensors", "unet", dict(width=8, depth=2, res_blocks=1))
    from safetensors.torch import save_file
    save_file({"weight": torch.randn(4, 4)}, str(folder / "plain.safetensors"))  # no metadata at all
    (folder / "random.safetensors").write_bytes(os.urandom(4096))
    (folder / "random.ckpt").write_bytes(os.urandom(4096))
    (folder / "random.pth").write_bytes(os.urandom(4096))
    for name in ("evil.ckpt", "evil.pth"):
        torch.save({"state_dict": {"w": Evil(folder.parent / "PWNED")}}, folder / name)


def _gan_checkpoint(folder: Path) -> None:
    """A train_gan checkpoint folder made with a different generator width than the tiny flags ask for."""
    folder.mkdir(parents=True)
    build_tiny_generator(folder / "generator.safetensors")


def _issue17(ws: Path) -> None:
    """Same-stem folders, an editor whose edit_defaults.json holds NaN, damaged training checkpoints."""
    import json
    import shutil
    for name, files in (("same_stem", ("a.jpg", "a.png")), ("same_stem_clash", ("a.jpg", "a.png", "a.jpg.png"))):
        (ws / "images" / name).mkdir()
        for i, file in enumerate(files):
            real_photo(PHOTO).rotate(90 * i).save(ws / "images" / name / file)
    shutil.copytree(ws / "models" / "editor", ws / "models" / "editor_nan")
    (ws / "models" / "editor_nan" / "edit_defaults.json").write_text('{"steps": 2, "cfg_image": NaN}\n')
    # stage 2, checkpoint-1 of run edit_bad: optimizer.bin differs from the save's manifest
    bad = ws / "runs" / "edit_bad" / "checkpoint-1"
    bad.mkdir(parents=True)
    (bad / "optimizer.bin").write_bytes(os.urandom(256))
    manifest = {"optimizer.bin": {"bytes": 256, "sha256": "0" * 64}}
    (bad / "trainer_state.json").write_text(json.dumps({"global_step": 1, "files": manifest}))
    # stage 2, a save without manifest whose random state is a malicious pickle (once silently skipped)
    evil = ws / "runs" / "edit_evil" / "checkpoint-1"
    evil.mkdir(parents=True)
    torch.save({"state": {}, "param_groups": []}, evil / "optimizer.bin")
    torch.save({"torch_manual_seed": Evil(ws / "PWNED")}, evil / "random_states_0.pkl")
    (evil / "trainer_state.json").write_text(json.dumps({"global_step": 1}))


def build_workspace(ws: Path) -> Path:
    _images(ws / "images")
    _models(ws / "models")
    _issue17(ws)
    _gan_checkpoint(ws / "gan_ckpt")
    make_animegan_dataset(ws / "gan_data", n=4, with_smooth=True)
    bad = ws / "gan_bad_data"
    make_animegan_dataset(bad, n=2, with_smooth=True)
    for path in (bad / "train_photo").iterdir():
        path.write_bytes(b"not an image")
    edit = ws / "edit_data"
    edit.mkdir()
    real_photo(PHOTO).save(edit / "in.png")
    real_photo(PHOTO).transpose(Image.FLIP_LEFT_RIGHT).save(edit / "out.png")
    (edit / "metadata.jsonl").write_text(
        '{"input_image": "in.png", "edit_prompt": "mirror it", "edited_image": "out.png"}\n')
    (ws / "out").mkdir()
    real_photo(PHOTO).save(ws / "out" / "existing.png")
    real_photo(PHOTO).save(ws / "out" / "replace_me.png")
    real_photo(PHOTO).save(ws / "out" / "existing2_stylized.png")  # the --save-intermediate file exists
    (ws / "out" / "result.json").write_text('{"kept": true}\n')
    (ws / "out" / "a_file").write_text("not a folder\n")
    (ws / "demo_out" / "gan").mkdir(parents=True)
    (ws / "demo_out" / "gan" / "keep.txt").write_text("an earlier build\n")
    (ws / "demo_partial").mkdir()
    return ws
