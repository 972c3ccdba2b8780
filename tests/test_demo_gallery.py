"""demo/gallery.py: the chain's picture (photo, stage-1 cartoon, captioned edits) with the bundled models at a tiny
size; its grid geometry, its refusals, and the measured "left alone" note."""
import numpy as np
import pytest
from PIL import Image

import demo.gallery as gallery
from _gan_fixtures import single_thread  # noqa: F401  (autouse: two threads on a busy 2-core box run ~10x slower)

SIZE = 64
INSTRUCTIONS = ["make it black and white", "add a red hat"]


def _tiles(sheet: Image.Image, g: dict) -> list[np.ndarray]:
    """The tile pixels, row by row, where the layout puts them."""
    out = []
    for i in range(g["cols"] * g["rows"]):
        x = g["pad"] + (i % g["cols"]) * (SIZE + g["pad"])
        y = g["title_h"] + (i // g["cols"]) * g["cell_h"]
        out.append(np.asarray(sheet.crop((x, y, x + SIZE, y + SIZE)), np.float32))
    return out


def test_gallery_renders_the_chain_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "gallery.png"
    argv = ["--out", str(out), "--size", str(SIZE), "--instructions", *INSTRUCTIONS]
    assert gallery.main(gallery.parse_args(argv)) == out
    sheet = Image.open(out)
    # 2 + 2 tiles -> a 2 x 2 grid: width is exact; height depends on how many lines the longest caption took
    g = next(g for lines in (1, 2, 3) if (g := gallery.layout(4, SIZE, lines))["height"] == sheet.height)
    assert (g["cols"], g["rows"]) == (2, 2)
    assert sheet.size == (2 * SIZE + 3 * g["pad"], g["height"])
    photo, cartoon, *edits = _tiles(sheet, g)
    assert all(tile.std() > 10 for tile in (photo, cartoon, *edits))  # pictures, not blank paper
    assert np.abs(photo - cartoon).mean() / 255 > 0.02  # stage 1 ran
    bw = edits[0]
    assert np.abs(bw - bw.mean(axis=2, keepdims=True)).mean() < np.abs(cartoon - cartoon.mean(axis=2,
                                                                                              keepdims=True)).mean()
    # the caption band under the first tile holds dark text
    band = sheet.crop((g["pad"], g["title_h"] + SIZE, g["pad"] + SIZE, g["title_h"] + g["cell_h"]))
    assert np.asarray(band).min() < 100

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        gallery.cli(argv)  # the second time: refused before any model loads
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--overwrite" in err and err.count("\n") == 1
    assert gallery.parse_args([*argv, "--overwrite"]).overwrite


@pytest.mark.parametrize("photo, words", [("no_such_photo", "--photo no_such_photo"), ("", "--photo")])
def test_bad_photo_is_one_line_exit_2(tmp_path, capsys, photo, words):
    with pytest.raises(SystemExit) as exc:
        gallery.cli(["--out", str(tmp_path / "g.png"), "--photo", photo])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and words in err and err.count("\n") == 1
    assert not (tmp_path / "g.png").exists()


def test_unreadable_photo_file_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "photo.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(SystemExit) as exc:
        gallery.cli(["--out", str(tmp_path / "g.png"), "--photo", str(bad)])
    assert exc.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_left_alone_note_is_measured():
    grey = Image.new("RGB", (8, 8), (128, 128, 128))
    nearly = Image.new("RGB", (8, 8), (133, 128, 128))  # 5/255/3: below the 0.04 bar
    changed = Image.new("RGB", (8, 8), (160, 128, 128))  # 32/255/3 = 0.042: above it
    assert gallery.caption("add a red hat", grey, nearly, out_of_scope=True).endswith(gallery.LEFT_ALONE_NOTE)
    assert gallery.caption("add a red hat", grey, changed, out_of_scope=True) == '"add a red hat"'
    assert gallery.caption("make it black and white", grey, nearly, out_of_scope=False) == \
        '"make it black and white"'  # in scope: an edit that changed little is not "left alone"


def test_long_captions_wrap_and_are_cut():
    from PIL import ImageFont
    font = ImageFont.load_default(size=10)
    lines = gallery.wrap("change the colour of the blue parts to pink " * 4, font, 80, 3)
    assert len(lines) == 3 and lines[-1].endswith("...") and all(font.getlength(t) <= 80 for t in lines)
    assert gallery.wrap("make it sepia", font, 200, 3) == ["make it sepia"]
