"""Benchmark stage 2 on the CPU: edit latency (per image, per step) through our editing API against the
stock StableDiffusionInstructPix2PixPipeline call on the same weights, and training samples/s of our
loss step against a step written the way the diffusers recipe writes it. Prints a table with ratios.

    python bench/bench_edit.py                      # bundled tiny editor (random weights), 512 px
    python bench/bench_edit.py --model work_data/runs/editor --size 512 --steps 4
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, StableDiffusionInstructPix2PixPipeline
from PIL import Image

from edit_diffusion.editor import SCHEDULERS, EditSettings, edit_image, load_editor
from edit_diffusion.scratch import build_noise_scheduler, build_text_encoder, build_unet, build_vae
from edit_diffusion.step import edit_loss
from edit_diffusion.tokenizer import load_clip_tokenizer
from timing import best_time  # bench/timing.py (scripts run from bench/)


def tiny_pipeline() -> StableDiffusionInstructPix2PixPipeline:
    torch.manual_seed(0)
    scheduler = SCHEDULERS["ddim"].from_config(build_noise_scheduler("sample").config)
    return StableDiffusionInstructPix2PixPipeline(
        vae=build_vae("tiny"), text_encoder=build_text_encoder("tiny"), tokenizer=load_clip_tokenizer(),
        unet=build_unet("tiny"), scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)


def photo(size: int) -> Image.Image:
    from skimage import data
    return Image.fromarray(data.astronaut()).convert("RGB").resize((size, size))


def bench_edit(pipe, size: int, steps: int, repeats: int) -> dict:
    image = photo(size)
    settings = EditSettings(steps=steps, cfg_text=7.5, cfg_image=1.5, seed=0, scheduler="ddim", resolution=size)
    ours = lambda: edit_image(pipe, image, "make it look like winter", settings)
    stock = lambda: pipe("make it look like winter", image=image, num_inference_steps=steps, guidance_scale=7.5,
                         image_guidance_scale=1.5, generator=torch.Generator().manual_seed(0))
    ours()  # warm-up (allocations, scheduler swap)
    return {"ours": best_time(ours, repeats, warmup=False), "stock": best_time(stock, repeats, warmup=False)}


def reference_step(unet, vae, text_encoder, scheduler, batch, null_embeds, prob):
    """The diffusers recipe's step: two VAE encodes, text embeddings replaced after encoding."""
    latents = vae.encode(batch["edited_pixels"]).latent_dist.sample() * vae.config.scaling_factor
    noise = torch.randn_like(latents)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],)).long()
    noisy = scheduler.add_noise(latents, noise, t)
    hidden = text_encoder(batch["input_ids"])[0]
    original = vae.encode(batch["input_pixels"]).latent_dist.mode()
    r = torch.rand(latents.shape[0])
    hidden = torch.where((r < 2 * prob)[:, None, None], null_embeds, hidden)
    original = original * (1 - ((r >= prob) & (r < 3 * prob)).float())[:, None, None, None]
    pred = unet(torch.cat([noisy, original], 1), t, hidden).sample
    target = latents if scheduler.config.prediction_type == "sample" else noise
    return F.mse_loss(pred.float(), target.float())


def bench_train(pipe, batch_size: int, res: int, iters: int) -> dict:
    unet, vae, text_encoder, tok = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    ids = tok(["make it look like winter"] * batch_size, padding="max_length", max_length=tok.model_max_length,
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
    ours()
    return {"ours": batch_size * iters / best_time(ours, 2, warmup=False), "stock": batch_size * iters / best_time(ref, 2, warmup=False)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="editor folder (default: bundled tiny configs, random weights)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--train-res", type=int, default=128)
    p.add_argument("--train-iters", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_editor(args.model) if args.model else tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        edit = bench_edit(pipe, args.size, args.steps, args.repeats)
    train = bench_train(pipe, args.train_batch, args.train_res, args.train_iters)
    rows = [
        (f"edit {args.size}px, s/image ({args.steps} steps)", edit["ours"], edit["stock"], "lower is better"),
        ("edit, s/step", edit["ours"] / args.steps, edit["stock"] / args.steps, "lower is better"),
        (f"train {args.train_res}px b{args.train_batch}, samples/s", train["ours"], train["stock"], "higher is better"),
    ]
    print(f"threads={torch.get_num_threads()} model={args.model or 'bundled tiny (random weights)'}")
    print(f"{'metric':44s} {'ours':>10s} {'stock':>10s} {'ours/stock':>11s}")
    for name, ours, stock, note in rows:
        print(f"{name:44s} {ours:10.3f} {stock:10.3f} {ours / stock:11.2f}  ({note})")


if __name__ == "__main__":
    main()
