"""Stage-1 benchmark on CPU: generator ms per megapixel (256/512/1024) in PyTorch and, exported with
stylize_gan.export_onnx, in onnxruntime (ratio: onnxruntime time / PyTorch time, same run), training images/s,
and edge-smoothing throughput of the vectorized recipe against the per-pixel reference loop.

    python bench/bench_gan.py [--threads 2] [--repeats 3] [--quick] [--no-onnx]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from stylize_gan.backbones import build_backbone
from stylize_gan.losses import ADVERSARIAL_LOSSES
from stylize_gan.networks import build_discriminator, build_generator
from stylize_gan.smoothing import edge_smooth, edge_smooth_reference
from stylize_gan.step import Batch, LossWeights, Nets, gan_step, init_step
from timing import best_time  # bench/timing.py (scripts run from bench/)

# the CPU config the demo model is trained with, and the default (GPU) config of train_gan.py
CONFIGS = {
    "small w16 d3 r2": dict(width=16, depth=3, res_blocks=2, norm="layer"),
    "default w32 d3 r4": dict(width=32, depth=3, res_blocks=4, norm="layer"),
}
GENERATOR_ROWS = {**{name: ("unet", kwargs) for name, kwargs in CONFIGS.items()},
                  "animegan_v2 (published arch)": ("animegan_v2", {})}
ANIMEGAN_WEIGHTS = LossWeights(adv_g=300, adv_d=300, content=1.5, gram=3.0, color=10, tv=1, l1=0)


def _ort_session(gen, threads: int, folder: str):
    """Export with dynamic H, W (stylize_gan.export_onnx) and open it with `threads` intra-op threads."""
    import onnxruntime as ort
    from stylize_gan.export_onnx import export_generator
    path = Path(folder) / "g.onnx"
    export_generator(gen, path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@torch.no_grad()
def bench_generator(sizes, repeats, threads, onnx):
    rows = []
    for name, (arch, kwargs) in GENERATOR_ROWS.items():
        gen = build_generator(arch, **kwargs).eval()
        with tempfile.TemporaryDirectory() as folder:
            session = _ort_session(gen, threads, folder) if onnx else None
            for size in sizes:
                x = torch.rand(1, 3, size, size) * 2 - 1
                seconds = best_time(lambda: gen(x), repeats)
                rows.append((f"generator {name} PyTorch", f"{size}x{size}", f"{seconds * 1000:.0f} ms",
                             f"{seconds * 1000 / (size * size / 1e6):.0f} ms/MP"))
                if session is not None:
                    feed = {session.get_inputs()[0].name: x.numpy()}
                    t_ort = best_time(lambda: session.run(None, feed), repeats)
                    rows.append((f"generator {name} onnxruntime", f"{size}x{size}", f"{t_ort * 1000:.0f} ms",
                                 f"{t_ort * 1000 / (size * size / 1e6):.0f} ms/MP ({t_ort / seconds:.2f}x PyTorch)"))
    return rows


def bench_training(sizes, batch, repeats):
    backbone = build_backbone("efficientnet_lite0")
    rows = []
    for size in sizes:
        torch.manual_seed(0)
        gen = build_generator("unet", **CONFIGS["small w16 d3 r2"])
        disc = build_discriminator("patch", in_channels=3, width=32, n_layers=3)
        nets = Nets(gen, disc, backbone)
        opt_g = torch.optim.Adam(gen.parameters(), lr=1e-4, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(disc.parameters(), lr=1e-4, betas=(0.5, 0.999))
        img = lambda: torch.rand(batch, 3, size, size) * 2 - 1  # noqa: E731
        data = Batch(source=img(), style=img(), smooth=img())
        adv = ADVERSARIAL_LOSSES["lsgan"]
        t_init = best_time(lambda: init_step(Batch(source=data.source), nets, opt_g, ANIMEGAN_WEIGHTS), repeats)
        t_gan = best_time(lambda: gan_step(data, nets, opt_g, opt_d, ANIMEGAN_WEIGHTS, adv), repeats)
        rows.append(("train init step (small G, effnet)", f"b{batch} {size}px", f"{t_init * 1000:.0f} ms",
                     f"{batch / t_init:.1f} img/s"))
        rows.append(("train GAN step (small G, D w32, effnet)", f"b{batch} {size}px", f"{t_gan * 1000:.0f} ms",
                     f"{batch / t_gan:.1f} img/s"))
    return rows


def bench_smoothing(size, repeats):
    from skimage import data
    from PIL import Image
    rgb = np.asarray(Image.fromarray(data.astronaut()).resize((size, size)))
    t_fast = best_time(lambda: edge_smooth(rgb), repeats)
    t_ref = best_time(lambda: edge_smooth_reference(rgb), 1)
    assert np.array_equal(edge_smooth(rgb), edge_smooth_reference(rgb))
    return [("edge smoothing vectorized", f"{size}x{size}", f"{t_fast * 1000:.1f} ms", f"{1 / t_fast:.0f} img/s"),
            ("edge smoothing per-pixel reference", f"{size}x{size}", f"{t_ref * 1000:.0f} ms",
             f"{1 / t_ref:.1f} img/s"),
            ("edge smoothing speed-up", "", "", f"{t_ref / t_fast:.0f}x")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="256/512 only, training at 128 px")
    parser.add_argument("--no-onnx", dest="onnx", action="store_false", help="skip the onnxruntime rows")
    parser.add_argument("--generators-only", action="store_true", help="only the generator rows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen_sizes = (256, 512) if args.quick else (256, 512, 1024)
    train_sizes = (128,) if args.quick else (128, 256)
    rows = bench_generator(gen_sizes, args.repeats, args.threads, args.onnx)
    if not args.generators_only:
        rows += bench_training(train_sizes, args.batch, args.repeats)
        rows += bench_smoothing(256, args.repeats)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    header = ("what", "size", "time", "throughput")
    widths = [max(w, len(h)) for w, h in zip(widths, header)]
    print(f"# torch {torch.__version__}, {args.threads} thread(s), best of {args.repeats}")
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))


if __name__ == "__main__":
    main()
