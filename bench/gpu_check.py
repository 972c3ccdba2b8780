"""GPU check of the editing engine on the real SD 1.5 architecture (random fp16 weights; no download):
ours vs the stock pipeline per 512 px edit at three guidance settings, peak GPU memory of 1 and 4
variants at 1024 px, and the effect of torch.compile; optionally UNet rows, training steps and sharded
training. On one H200 edit, memory, compile and train took about 2 minutes, sharded about 2 more. Never part of
the CPU test suite; `--dry-run` runs every section on a tiny SD-shaped model (CPU is fine) to check the script.

    python bench/gpu_check.py                       # on a CUDA machine
    python bench/gpu_check.py --wheels /path/wheels # install missing packages from local wheels first
    python bench/gpu_check.py --dry-run --sections edit memory

Imports it needs: torch, numpy, Pillow, diffusers, transformers (+ tokenizers, huggingface_hub),
safetensors; open_clip (its installed CLIP vocabulary file only, never imported) for `sharded`, whose
train_edit.py runs use `--tokenizer clip`; the other sections take a byte-level stand-in without it (same
timing). A missing package is installed with `pip install --no-index --find-links DIR` from --wheels.

Sections are plain functions in SECTIONS (name -> fn(ctx) -> rows); add a new one (e.g. an FSDP training
row) by writing a function and registering it there.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
# import name -> pip package (what the editing engine imports; accelerate/peft are optional to diffusers)
NEEDED = {"torch": "torch", "numpy": "numpy", "PIL": "pillow", "safetensors": "safetensors",
          "huggingface_hub": "huggingface_hub", "tokenizers": "tokenizers", "transformers": "transformers",
          "diffusers": "diffusers"}
PROMPT = "make it look like winter"
GUIDANCE = ((7.5, 1.0), (7.5, 1.5), (1.0, 1.0))


def ensure_imports(wheels: str | None) -> None:
    """Say what is needed; install what is missing from the local wheel folder (never from the network)."""
    missing = [pkg for name, pkg in NEEDED.items() if importlib.util.find_spec(name) is None]
    print(f"needs: {', '.join(NEEDED.values())}; missing: {', '.join(missing) or 'none'}", flush=True)
    if not missing:
        return
    if wheels is None:
        raise SystemExit(f"error: missing {', '.join(missing)}; pass --wheels DIR (a folder of wheels for them)")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", wheels, *missing],
                   check=True)
    importlib.invalidate_caches()


@dataclass
class Context:
    editor: object       # edit_diffusion.editor.Editor over the random-weight model
    size: int            # edit size (px) of the timing rows
    memory_size: int     # edit size (px) of the memory rows
    steps: int
    repeats: int
    build: Callable      # () -> a fresh Editor (same architecture and seed), for the compile section


def sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()


def clock(fn, device, repeats: int) -> float:
    """Best of `repeats` synchronised wall-clock runs after one warm-up."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def photo(size: int):
    """A smooth synthetic photo (no image packages needed): colour gradients with a bright disc."""
    import numpy as np
    from PIL import Image
    y, x = np.mgrid[0:size, 0:size] / size
    disc = ((x - 0.5) ** 2 + (y - 0.45) ** 2 < 0.05).astype(float)
    rgb = np.stack([x, y, 0.5 + 0.5 * disc], -1)
    return Image.fromarray((rgb * 255).astype(np.uint8))


def tokenizer(cache: Path):
    from edit_diffusion.tokenizer import load_clip_tokenizer
    from common.errors import UserInputError
    try:
        return load_clip_tokenizer(cache)
    except UserInputError:  # open_clip missing: byte-level stand-in (same sequence length, same timing)
        import json
        from transformers import CLIPTokenizer
        from edit_diffusion.tokenizer import bytes_to_unicode
        tokens = list(bytes_to_unicode().values())
        vocab = {t: i for i, t in enumerate(tokens + [t + "</w>" for t in tokens] + ["<|startoftext|>", "<|endoftext|>"])}
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "vocab.json").write_text(json.dumps(vocab))
        (cache / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer(str(cache / "vocab.json"), str(cache / "merges.txt"), model_max_length=77)


def build_editor(dry_run: bool, device, dtype):
    """SD 1.5 (UNet widened to 8 input channels, VAE, CLIP text encoder) with seeded random weights."""
    import torch
    from diffusers import StableDiffusionInstructPix2PixPipeline
    from edit_diffusion.editor import SCHEDULERS, Editor
    from edit_diffusion.scratch import build_noise_scheduler, build_text_encoder, build_unet, build_vae, read_config
    name = "tiny" if dry_run else "sd15"
    unet_config = {**read_config(name, "unet"), "in_channels": 8}  # InstructPix2Pix §3.2: 4 image channels more
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: seconds instead of a minute for 860M parameters
        unet, vae, text = build_unet(unet_config), build_vae(name), build_text_encoder(name)
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae, text_encoder=text, tokenizer=tokenizer(Path.home() / ".cache" / "gpu_check_tokenizer"), unet=unet,
        scheduler=SCHEDULERS["euler_a"].from_config(build_noise_scheduler("epsilon").config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False).to(device, dtype)
    return Editor.from_pipeline(pipe, defaults={"scheduler": "euler_a"})


def stock_edit(editor, image, s):
    import torch
    pipe = editor.pipeline(s.scheduler)
    generators = [torch.Generator("cpu").manual_seed(s.seed + i) for i in range(s.num_variants)]
    return pipe([PROMPT] * s.num_variants, image=[image] * s.num_variants, num_inference_steps=s.steps,
                guidance_scale=s.cfg_text, image_guidance_scale=s.cfg_image, generator=generators, output_type="np")


def settings(ctx: Context, size: int, cfg_text=7.5, cfg_image=1.5, **kw):
    from edit_diffusion.editor import EditSettings
    return EditSettings(steps=ctx.steps, cfg_text=cfg_text, cfg_image=cfg_image, seed=0, scheduler="euler_a",
                        resolution=size, **kw)


def section_edit(ctx: Context) -> list[tuple]:
    """Ours vs stock, seconds per edit, at the three guidance settings of issue 14."""
    image, rows, dev = photo(ctx.size), [], ctx.editor.device
    for cfg_text, cfg_image in GUIDANCE:
        s = settings(ctx, ctx.size, cfg_text, cfg_image)
        ours = clock(lambda: ctx.editor.edit(image, PROMPT, s), dev, ctx.repeats)
        stock = clock(lambda: stock_edit(ctx.editor, image, s), dev, ctx.repeats)
        rows.append((f"{ctx.size}px {ctx.steps} steps ({cfg_text:g}, {cfg_image:g}), s/edit", ours, stock))
    return rows


def peak_of(fn, device) -> float:
    """Peak allocated MiB while fn runs (CUDA), or the growth of the RSS high-water mark (CPU dry run)."""
    import torch
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        fn()
        return torch.cuda.max_memory_allocated() / 2**20
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM
    fn()
    hwm = [ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM")][0]
    return int(hwm.split()[1]) / 1024


def section_unet(ctx: Context) -> list[tuple]:
    """One UNet forward at 1, 2 and 3 rows (the branch counts) against 1 row: near 1.0 means the step is bound by
    kernel launches (CPU), not by the GPU's arithmetic, so fewer branches cannot save time there."""
    import torch
    unet, dev, dtype = ctx.editor.unet, ctx.editor.device, ctx.editor.dtype
    side = ctx.size // ctx.editor.vae_scale_factor
    hidden_size = unet.config.cross_attention_dim
    times = {}
    for rows in (1, 2, 3):
        x = torch.randn(rows, unet.config.in_channels, side, side, device=dev, dtype=dtype)
        h = torch.randn(rows, 77, hidden_size, device=dev, dtype=dtype)
        t = torch.full((rows,), 500, device=dev)
        times[rows] = clock(lambda: unet(x, t, encoder_hidden_states=h, return_dict=False), dev, ctx.repeats)
    return [(f"{ctx.size}px UNet forward, {rows} rows vs 1 row, ms", times[rows] * 1e3, times[1] * 1e3)
            for rows in (2, 3)]


def section_memory(ctx: Context) -> list[tuple]:
    """Peak memory of 4 variants vs 1 at memory_size px, with the automatic chunking and one variant per call."""
    image, rows, dev = photo(ctx.memory_size), [], ctx.editor.device
    for label, batch in (("auto chunks", None), ("--batch-size 3", 3)):
        one, four = (peak_of(lambda: ctx.editor.edit(image, PROMPT, settings(ctx, ctx.memory_size, num_variants=n,
                                                                             batch_size=batch)), dev) for n in (1, 4))
        rows.append((f"{ctx.memory_size}px (7.5, 1.5) {label}: peak MiB, 4 variants (ours) vs 1 (stock col.)", four, one))
    return rows


def section_compile(ctx: Context) -> list[tuple]:
    """torch.compile of the UNet (first call includes compilation) against eager, both ours."""
    image, dev = photo(ctx.size), ctx.editor.device
    s = settings(ctx, ctx.size)
    eager = clock(lambda: ctx.editor.edit(image, PROMPT, s), dev, ctx.repeats)
    compiled = ctx.build()
    compiled.unet.compile()
    start = time.perf_counter()
    compiled.edit(image, PROMPT, s)
    first = time.perf_counter() - start
    steady = clock(lambda: compiled.edit(image, PROMPT, s), dev, ctx.repeats)
    return [(f"{ctx.size}px (7.5, 1.5) torch.compile (first call {first:.0f} s) vs eager, s/edit", steady, eager)]


def section_train(ctx: Context) -> list[tuple]:
    """Samples/s of our training step (edit_loss, AdamW) at 256 px, batch 4, in the model's dtype."""
    import torch
    from edit_diffusion.step import edit_loss
    from diffusers import DDPMScheduler
    ed, dev, batch = ctx.build(), ctx.editor.device, 4
    ed.unet.to(torch.float32).train()  # fp32 master weights; autocast runs the maths in half precision
    opt = torch.optim.AdamW(ed.unet.parameters(), lr=1e-5)
    tok = ed.tokenizer
    ids = tok([PROMPT] * batch, padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    null_ids = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids[0]
    data = {"input_pixels": torch.rand(batch, 3, 256, 256, device=dev) * 2 - 1,
            "edited_pixels": torch.rand(batch, 3, 256, 256, device=dev) * 2 - 1, "input_ids": ids.to(dev)}
    scheduler = DDPMScheduler.from_config(ed.scheduler.config)

    def step():
        with torch.autocast(dev.type, dtype=ctx.editor.dtype, enabled=dev.type == "cuda"):
            loss = edit_loss(ed.unet, ed.vae, ed.text_encoder, scheduler, data, null_ids.to(dev), 0.05)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return [("train 256px b4 (edit_loss + AdamW), samples/s", batch / clock(step, dev, ctx.repeats), float("nan"))]


def section_sharded(ctx: Context) -> list[tuple]:
    """A few train_edit.py steps under configs/accelerate/fsdp2.yaml and ddp.yaml (EMA, clipping, checkpoint,
    resume, final pipeline) within 180 s: bench/gpu_train_check.py (issue 16). Value: seconds taken."""
    from gpu_train_check import sharded_training_section
    results = sharded_training_section(budget_s=180)
    for r in results:
        if r["detail"]:  # a failure's stderr tail, so that one GPU run says why
            print(f"--- {r['config']}:\n{r['detail']}", flush=True)
    return [(f"train_edit.py under {r['config']}: {r['result']}, s", r["seconds"], float("nan")) for r in results]


SECTIONS: dict[str, Callable[[Context], list[tuple]]] = {
    "edit": section_edit, "unet": section_unet, "memory": section_memory, "compile": section_compile,
    "train": section_train, "sharded": section_sharded}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--wheels", help="folder of wheels to install missing packages from (pip --no-index)")
    p.add_argument("--dry-run", action="store_true", help="tiny SD-shaped model, small sizes: checks the script")
    p.add_argument("--sections", nargs="+", choices=sorted(SECTIONS), default=["edit", "memory", "compile"])
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default 20; dry run 2)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    ensure_imports(args.wheels)
    import torch
    from diffusers.utils import logging as diffusers_logging
    from common.devices import resolve_device, resolve_dtype
    diffusers_logging.set_verbosity_error()
    device = resolve_device(args.device)
    if device.type != "cuda" and not args.dry_run:
        raise SystemExit("error: no CUDA device here; use --dry-run to check the script on the CPU")
    dtype = resolve_dtype("auto", device)
    build = lambda: build_editor(args.dry_run, device, dtype)  # noqa: E731
    start = time.perf_counter()
    ctx = Context(editor=build(), size=128 if args.dry_run else 512, memory_size=256 if args.dry_run else 1024,
                  steps=args.steps or (2 if args.dry_run else 20), repeats=args.repeats, build=build)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    print(f"{gpu}; torch {torch.__version__}; {'tiny SD-shaped' if args.dry_run else 'SD 1.5'} random weights, "
          f"{dtype}; built in {time.perf_counter() - start:.0f} s", flush=True)
    print(f"| {'row':72s} | {'ours':>9s} | {'stock':>9s} | ratio |\n|{'-' * 74}|{'-' * 11}|{'-' * 11}|-------|")
    with torch.no_grad():
        for name in args.sections:
            rows = torch.enable_grad()(SECTIONS[name])(ctx) if name == "train" else SECTIONS[name](ctx)
            for label, ours, stock in rows:
                print(f"| {label:72s} | {ours:9.4g} | {stock:9.4g} | {ours / stock:5.2f} |", flush=True)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
