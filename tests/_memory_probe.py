"""Run one memory case in a fresh process and print its peak resident-memory growth as JSON.

    python tests/_memory_probe.py CASE WORKDIR

The case warms up at the smallest values (imports, models, first-call caches), then the kernel's peak-RSS mark
is reset (/proc/self/clear_refs 5) and the case runs at its worst accepted values; growth = peak - resident before.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _webapp_models import build_tiny_editor, build_tiny_generator, real_photo  # noqa: E402


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _measure(run) -> dict:
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS (VmHWM) := current RSS
    before = _status_kb("VmRSS")
    run()
    return {"growth_mb": (_status_kb("VmHWM") - before) / 1024}


def variants(work: Path) -> dict:
    """--variants at its cap (64) on a tiny editor: chunked, so memory must not grow with the count."""
    from edit_diffusion.editor import MAX_VARIANTS, EditSettings, load_editor
    editor = load_editor(str(build_tiny_editor(work / "editor")), device="cpu", dtype="fp32")
    photo = real_photo((64, 64))

    def edit(n):
        return editor.edit(photo, "make it red", EditSettings(seed=0, steps=1, resolution=64, num_variants=n))
    edit(1)
    one = _measure(lambda: edit(1))["growth_mb"]
    return {"one_mb": one, **_measure(lambda: edit(MAX_VARIANTS)), "variants": MAX_VARIANTS}


def stylize(work: Path) -> dict:
    """Stage 1 at full size in (default, 1024 px) tiles: memory per pixel must stay under images.BYTES_PER_PIXEL,
    the figure behind PROCESS_MAX_PIXELS."""
    from common.images import BYTES_PER_PIXEL
    from stylize_gan.checkpoint import load_generator
    from stylize_gan.inference import stylize_pil
    gen = load_generator(build_tiny_generator(work / "g.safetensors"))
    stylize_pil(gen, real_photo((64, 48)), tile=256, overlap=32)
    big = real_photo((3000, 2000))
    return {**_measure(lambda: stylize_pil(gen, big)), "pixels": 3000 * 2000,
            "limit_bytes_per_pixel": BYTES_PER_PIXEL}


if __name__ == "__main__":
    torch.set_num_threads(1)
    case, work = sys.argv[1], Path(sys.argv[2])
    print(json.dumps({"variants": variants, "stylize": stylize}[case](work)))
