"""Benchmark stage 2: our sampler (edit_diffusion/engine.py through `Editor.edit`) against the stock
StableDiffusionInstructPix2PixPipeline on the same weights, seed, scheduler and settings; the UNet's FLOP
utilisation against the machine's measured matmul peak; peak memory of 1 and 4 variants (each in a
fresh process); optionally channels_last / torch.compile and training samples/s. Prints tables with ratios.

    nice python bench/bench_edit.py                                  # bundled editor + tiny SD-shaped model
    python bench/bench_edit.py --models bundled --size 512 --steps 4 --layouts --train
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, StableDiffusionInstructPix2PixPipeline
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, when run as a script
from chain.defaults import DEFAULT_EDITOR  # noqa: E402
from common.devices import DTYPE_CHOICES, resolve_device, resolve_dtype  # noqa: E402
from edit_diffusion import engine  # noqa: E402
from edit_diffusion.editor import SCHEDULERS, EditSettings, Editor, load_editor, working_size  # noqa: E402
from edit_diffusion.scratch import (build_noise_scheduler, build_text_encoder, build_unet, build_vae,  # noqa: E402
                                    latents_of)
from edit_diffusion.step import edit_loss  # noqa: E402
from edit_diffusion.tokenizer import load_clip_tokenizer  # noqa: E402
from timing import best_time  # noqa: E402  (bench/timing.py)

PROMPT = "make it look like winter"
# (text guidance, image guidance) -> the ours/stock time goal of issue 14
GUIDANCE_GOALS = {(7.5, 1.0): 0.70, (7.5, 1.5): 1.0, (1.0, 1.0): 1.0}
MODEL_NAMES = ("bundled", "tiny-sd")


def tiny_pipeline() -> StableDiffusionInstructPix2PixPipeline:
    """SD-shaped in miniature (KL VAE with factor 4, 3-level UNet with cross-attention), random weights."""
    torch.manual_seed(0)
    scheduler = SCHEDULERS["ddim"].from_config(build_noise_scheduler("epsilon").config)
    return StableDiffusionInstructPix2PixPipeline(
        vae=build_vae("tiny"), text_encoder=build_text_encoder("tiny"), tokenizer=load_clip_tokenizer(),
        unet=build_unet("tiny"), scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)


def make_editor(name: str, device: torch.device, dtype: torch.dtype, compile_unet: bool = False,
                channels_last: bool = False) -> Editor:
    if name == "bundled":
        return load_editor(str(DEFAULT_EDITOR), device, dtype, compile_unet=compile_unet, channels_last=channels_last)
    editor = Editor.from_pipeline(tiny_pipeline().to(device, dtype), defaults={"scheduler": "ddim"})
    if channels_last:
        editor.unet.to(memory_format=torch.channels_last)
    if compile_unet:
        editor.unet.compile()
    return editor


def photo(size: int) -> Image.Image:
    from skimage import data
    return Image.fromarray(data.astronaut()).convert("RGB").resize((size, size))


def stock_arrays(editor: Editor, image: Image.Image, s: EditSettings) -> np.ndarray:
    """The stock pipeline as edit_diffusion called it before issue 14 (one generator per variant), at the size
    ours works at (a small image is raised to the native size)."""
    image = image.resize(working_size(*image.size, s.resolution, editor.size_multiple, editor.native_size))
    pipe = editor.pipeline(s.scheduler)
    generators = [torch.Generator("cpu").manual_seed(s.seed + i) for i in range(s.num_variants)]
    return pipe([PROMPT] * s.num_variants, image=[image] * s.num_variants, num_inference_steps=s.steps,
                guidance_scale=s.cfg_text, image_guidance_scale=s.cfg_image, generator=generators,
                output_type="np").images


def settings_for(editor: Editor, size: int, steps: int, cfg_text: float, cfg_image: float) -> EditSettings:
    return EditSettings(steps=steps, cfg_text=cfg_text, cfg_image=cfg_image, seed=0, resolution=size,
                        scheduler=editor.defaults.get("scheduler", "ddim"))


def interleaved(ours, stock, repeats: int) -> dict:
    """Wall and process CPU seconds of each of `repeats` calls of each, run alternately (a busy machine slows
    both alike; CPU seconds leave out the time other processes hold the core)."""
    times = {"ours": [], "stock": [], "ours cpu": [], "stock cpu": []}
    for _ in range(repeats):
        for key, fn in (("ours", ours), ("stock", stock)):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[key].append(time.perf_counter() - wall)
            times[key + " cpu"].append(time.process_time() - cpu)
    return times


def timed_row(label: str, times: dict, goal: str) -> tuple:
    """(label with every repeat and the CPU-time ratio, best ours, best stock, goal)."""
    walls = "; ".join(f"{k} " + "/".join(f"{t:.3g}" for t in times[k]) for k in ("ours", "stock"))
    cpu = min(times["ours cpu"]) / min(times["stock cpu"])
    return f"{label} [wall s: {walls}; CPU-s ratio {cpu:.2f}]", min(times["ours"]), min(times["stock"]), goal


def time_rows(name: str, editor: Editor, size: int, steps: int, repeats: int):
    """Yields (label, ours s/edit, stock s/edit, goal) per guidance setting, then the (1, 1.8) vs (1, 1) check."""
    image = photo(size)
    editor.edit(image, PROMPT, settings_for(editor, size, 1, 1.0, 1.0))  # one warm-up for both (allocator, kernels)
    for (cfg_text, cfg_image), goal in GUIDANCE_GOALS.items():
        s = settings_for(editor, size, steps, cfg_text, cfg_image)
        times = interleaved(lambda: editor.edit(image, PROMPT, s), lambda: stock_arrays(editor, image, s), repeats)
        yield timed_row(f"{name} {size}px {steps} steps, guidance ({cfg_text:g}, {cfg_image:g}), s/edit", times,
                        f"<= {goal:.2f}")
    s = settings_for(editor, size, steps, 7.5, 1.5)  # 3 branches: the same maths as stock, other batching
    parity = np.abs(editor.edit_arrays(image, PROMPT, s) - stock_arrays(editor, image, s)).max()
    yield f"{name} {size}px {steps} steps, max |ours - stock| at (7.5, 1.5)", parity, 0, "fp32 rounding"
    plain, strong = (settings_for(editor, size, steps, 1.0, g) for g in (1.0, 1.8))
    ours_diff = np.abs(editor.edit_arrays(image, PROMPT, strong) - editor.edit_arrays(image, PROMPT, plain)).max()
    stock_diff = np.abs(stock_arrays(editor, image, strong) - stock_arrays(editor, image, plain)).max()
    yield (f"{name} {size}px {steps} steps, max |(1, 1.8) - (1, 1)|", ours_diff, stock_diff, "ours > 0, stock = 0")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048) -> float:
    """FLOP/s of a large square torch.mm: the machine's practical peak for this dtype."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    seconds = best_time(lambda: (a @ a, sync(device)), 3)
    return 2 * n ** 3 / seconds


@torch.no_grad()
def unet_utilisation(name: str, editor: Editor, size: int, repeats: int) -> tuple:
    """(label, achieved FLOP/s of one UNet row at `size` px, matmul peak, note)."""
    from torch.utils.flop_counter import FlopCounterMode
    unet, latent = editor.unet, size // editor.vae_scale_factor
    x = torch.randn(1, unet.config.in_channels, latent, latent, device=editor.device, dtype=editor.dtype)
    hidden = torch.randn(1, editor.tokenizer.model_max_length, editor.text_encoder.config.hidden_size,
                         device=editor.device, dtype=editor.dtype)
    t = torch.tensor(999, device=editor.device)
    with FlopCounterMode(display=False) as counter:
        unet(x, t, hidden)
    seconds = best_time(lambda: (unet(x, t, hidden), sync(editor.device)), repeats)
    return (f"{name} UNet forward {size}px ({counter.get_total_flops() / 1e9:.1f} GFLOP), GFLOP/s",
            counter.get_total_flops() / seconds / 1e9, matmul_peak(editor.device, editor.dtype) / 1e9,
            "ours = UNet, stock = torch.mm peak")


def _proc_status_bytes(key: str) -> int:
    """VmRSS / VmHWM of this process (Linux /proc), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_memory_child(name: str, size: int, variants: int, steps: int, device: str, dtype: str) -> None:
    """Run in a fresh process: load, reset the peak, one edit, then print the edit's peak memory as JSON."""
    dev = resolve_device(device)
    editor = make_editor(name, dev, resolve_dtype(dtype, dev))
    image, s = photo(size), memory_settings(editor, size, steps)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (the RSS high-water mark) to the current RSS
    loaded = _proc_status_bytes("VmRSS")
    editor.edit(image, PROMPT, EditSettings(**{**s.__dict__, "num_variants": variants}))
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else _proc_status_bytes("VmHWM")
    print(json.dumps({"peak": peak, "loaded": loaded}))


def memory_settings(editor: Editor, size: int, steps: int) -> EditSettings:
    """The editor's recommended guidance (the bundled editor: (1, 1)), else (7.5, 1.5)."""
    guidance = editor.defaults.get("cfg_text", 7.5), editor.defaults.get("cfg_image", 1.5)
    return settings_for(editor, size, steps, *guidance)


def memory_rows(name: str, size: int, steps: int, device: str, dtype: str) -> list[tuple]:
    peaks = {}
    for variants in (1, 4):
        out = subprocess.run([sys.executable, __file__, "--peak-memory-child", name, str(size), str(variants),
                              str(steps), "--device", device, "--dtype", dtype],
                             capture_output=True, text=True, check=True).stdout
        peaks[variants] = json.loads(out.strip().splitlines()[-1])
    kind = "GPU allocated" if resolve_device(device).type == "cuda" else "process RSS"
    label = f"{name} {size}px {steps} step(s), its default guidance: peak {kind}, MiB"
    rows = [(label + " (4 variants vs 1)", peaks[4]["peak"] / 2**20, peaks[1]["peak"] / 2**20, "<= 1.30")]
    if kind == "process RSS":
        above = {v: (p["peak"] - p["loaded"]) / 2**20 for v, p in peaks.items()}
        rows.append((f"{name} {size}px: peak above the loaded process, MiB (4 vs 1)", above[4], above[1], "-"))
    return rows


LAYOUTS = {"channels_last": {"channels_last": True}, "torch.compile": {"compile_unet": True}}


def layout_rows(name: str, size: int, steps: int, repeats: int, device, dtype) -> list[tuple]:
    """Ours with the UNet in channels_last, and torch.compile'd, against ours with the default eager UNet
    (alternating; the default guidance of GUIDANCE_GOALS' first row). A layout that fails says why in its row."""
    image, rows = photo(size), []
    base = make_editor(name, device, dtype)
    s = settings_for(base, size, steps, *next(iter(GUIDANCE_GOALS)))
    base.edit(image, PROMPT, s)
    for label, kwargs in LAYOUTS.items():
        row = f"{name} {size}px {steps} steps, guidance {next(iter(GUIDANCE_GOALS))}, {label} vs without"
        try:
            editor = make_editor(name, device, dtype, **kwargs)
            start = time.perf_counter()
            editor.edit(image, PROMPT, s)  # warm-up: compilation happens here
            warm = time.perf_counter() - start
            times = interleaved(lambda: editor.edit(image, PROMPT, s), lambda: base.edit(image, PROMPT, s), repeats)
        except Exception as err:  # noqa: BLE001 - the row reports the failure (e.g. no C++ compiler for inductor)
            reason = (str(err).splitlines() or [""])[0][:150]
            rows.append((f"{row}: FAILED ({type(err).__name__}: {reason})", 0, 0, "-"))
            continue
        rows.append(timed_row(f"{row} (first call {warm:.0f} s), s/edit", times, "stock = default eager UNet"))
    return rows


def reference_step(unet, vae, text_encoder, scheduler, batch, null_embeds, prob):
    """The diffusers recipe's step: two VAE encodes, text embeddings replaced after encoding."""
    latents = latents_of(vae.encode(batch["edited_pixels"]), sample=True) * vae.config.scaling_factor
    noise = torch.randn_like(latents)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],)).long()
    noisy = scheduler.add_noise(latents, noise, t)
    hidden = text_encoder(batch["input_ids"])[0]
    original = latents_of(vae.encode(batch["input_pixels"]))
    r = torch.rand(latents.shape[0])
    hidden = torch.where((r < 2 * prob)[:, None, None], null_embeds, hidden)
    original = original * (1 - ((r >= prob) & (r < 3 * prob)).float())[:, None, None, None]
    pred = unet(torch.cat([noisy, original], 1), t, hidden).sample
    target = latents if scheduler.config.prediction_type == "sample" else noise
    return F.mse_loss(pred.float(), target.float())


def train_row(name: str, editor: Editor, batch_size: int, res: int, iters: int) -> tuple:
    """Training samples/s of our loss step against the diffusers recipe's step (CPU, float32)."""
    unet, vae, text_encoder, tok = editor.unet, editor.vae, editor.text_encoder, editor.tokenizer
    scheduler = DDPMScheduler.from_config(editor.scheduler.config)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    ids = tok([PROMPT] * batch_size, padding="max_length", max_length=tok.model_max_length,
              return_tensors="pt").input_ids
    null_ids = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids[0]
    with torch.no_grad():
        null_embeds = text_encoder(null_ids[None])[0]
    batch = {"input_pixels": torch.rand(batch_size, 3, res, res) * 2 - 1,
             "edited_pixels": torch.rand(batch_size, 3, res, res) * 2 - 1, "input_ids": ids}

    def run(loss_fn):
        def go():
            for _ in range(iters):
                loss = loss_fn()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return go

    ours = run(lambda: edit_loss(unet, vae, text_encoder, scheduler, batch, null_ids, 0.05)[0])
    ref = run(lambda: reference_step(unet, vae, text_encoder, scheduler, batch, null_embeds, 0.05))
    unet.train()
    return (f"{name} train {res}px b{batch_size}, samples/s", batch_size * iters / best_time(ours, 2),
            batch_size * iters / best_time(ref, 2), "higher is better")


def print_header() -> None:
    print(f"| {'row':70s} | {'ours':>10s} | {'stock':>10s} | {'ours/stock':>10s} | goal |")
    print(f"|{'-' * 72}|{'-' * 12}|{'-' * 12}|{'-' * 12}|------|", flush=True)


def print_rows(rows) -> None:
    """Rows as soon as they are measured (a long run shows its progress)."""
    for label, ours, stock, goal in rows:
        ratio = f"{ours / stock:10.2f}" if stock else f"{'-':>10s}"
        print(f"| {label:70s} | {ours:10.4g} | {stock:10.4g} | {ratio} | {goal} |", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="*", choices=MODEL_NAMES, default=list(MODEL_NAMES),
                   help="models of the timing rows (none: only the memory rows)")
    p.add_argument("--size", type=int, default=512, help="edit size (px) of the timing rows")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--memory-size", type=int, default=1024, help="edit size (px) of the peak-memory rows")
    p.add_argument("--memory-steps", type=int, default=1)
    p.add_argument("--memory-models", nargs="*", choices=MODEL_NAMES, default=None, help="default: --models")
    p.add_argument("--layouts", action="store_true", help="also time channels_last and torch.compile")
    p.add_argument("--layout-size", type=int, default=256)
    p.add_argument("--train", action="store_true", help="also time a training step against the recipe's")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cpu-split-above", type=float, default=None,
                   help="override engine.CPU_SPLIT_ABOVE (bytes); inf: the CPU plan before issue 14's fix (all "
                        "branches of a variant in one UNet call)")
    p.add_argument("--peak-memory-child", nargs=4, metavar=("MODEL", "SIZE", "VARIANTS", "STEPS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_split_above is not None:
        engine.CPU_SPLIT_ABOVE = args.cpu_split_above
    if args.peak_memory_child:
        name, size, variants, steps = args.peak_memory_child
        return peak_memory_child(name, int(size), int(variants), int(steps), args.device, args.dtype)
    from diffusers.utils import logging as diffusers_logging
    diffusers_logging.disable_progress_bar()
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    print(f"device={device} dtype={dtype} threads={torch.get_num_threads()} (bundled: checkpoints/editor; "
          "tiny-sd: edit_diffusion/configs/tiny_*.json, random weights)")
    print_header()
    with torch.no_grad():
        for name in args.models:
            editor = make_editor(name, device, dtype)
            print_rows(time_rows(name, editor, args.size, args.steps, args.repeats))
            print_rows([unet_utilisation(name, editor, args.size, max(1, args.repeats))])
            if args.layouts:
                print_rows(layout_rows(name, args.layout_size, args.steps, args.repeats, device, dtype))
    for name in args.models if args.memory_models is None else args.memory_models:
        print_rows(memory_rows(name, args.memory_size, args.memory_steps, args.device, args.dtype))
    if args.train:
        print_rows([train_row(name, make_editor(name, torch.device("cpu"), torch.float32), 8, 128, 3)
                    for name in args.models])


if __name__ == "__main__":
    main()
