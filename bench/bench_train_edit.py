"""Benchmark stage-2 training throughput: steady-state samples/s of train_edit.py (run in-process, read from its
perf/samples_per_sec TensorBoard scalars) against a reference loop written step for step the way diffusers'
examples/instruct_pix2pix/train_instruct_pix2pix.py writes its training step (decode + resize per batch, VAE encode
of both images, text encoder on the batch and on the empty prompt every step, conditioning dropout there), on the
same model, data, batch and resolution, in one run; timed per step on the process's CPU clock (the fair measure on
a shared machine; loader workers' CPU is not counted there, so read that knob's wall-clock column) and on the wall
clock. Also prints the one-time latent-cache build and, with --knobs,
each speed option on its own so the table shows which pay.

    python bench/bench_train_edit.py                      # SD-shaped tiny pipeline, 128 px, batch 8
    python bench/bench_train_edit.py --model editor       # the bundled editor's train_config.json at its resolution
    python bench/bench_train_edit.py --knobs all          # + channels_last, AdamW kernels, bf16, compile, workers
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edit_diffusion.config import EditTrainConfig  # noqa: E402

# "SD-shaped tiny pipeline" in the spirit of diffusers' own test fixtures (three UNet levels with cross-attention,
# a three-level KL autoencoder, a three-layer CLIP text encoder); vocab sized for the real CLIP tokenizer.
SD_TINY = {
    "unet": {"sample_size": 32, "in_channels": 8, "out_channels": 4, "layers_per_block": 2,
             "block_out_channels": [32, 64, 128], "cross_attention_dim": 32, "attention_head_dim": 8,
             # cross-attention at the two coarser levels (as in diffusers' fixtures: none at full latent size)
             "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
             "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], "norm_num_groups": 32},
    "vae": {"block_out_channels": [32, 64, 64], "down_block_types": ["DownEncoderBlock2D"] * 3,
            "up_block_types": ["UpDecoderBlock2D"] * 3, "latent_channels": 4, "norm_num_groups": 32,
            "layers_per_block": 1, "in_channels": 3, "out_channels": 3},
    "text_encoder": {"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 3,
                     "num_attention_heads": 4, "max_position_embeddings": 77, "bos_token_id": 49406,
                     "eos_token_id": 49407},
}
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat", "camera", "horse", "immunohistochemistry")
PROMPTS = ("invert the colors", "make it a negative", "turn it upside down", "mirror it")


# --- data and configs ----------------------------------------------------------------------------------------------

def write_data(folder: Path, count: int, size: int) -> None:
    """`count` square triplets at `size` px (the training resolution: fixed crops, as the diffusers script's
    resize gives): skimage photos, shifted per copy, edited by inversion or a flip."""
    from skimage import data
    rows = []
    for i in range(count):
        base = Image.fromarray(np.asarray(getattr(data, PHOTOS[i % len(PHOTOS)])())).convert("RGB")
        shift = (i // len(PHOTOS)) * 7
        image = base.crop((shift, shift, base.width - shift, base.height - shift)).resize((size, size))
        edits = (ImageOps.invert, ImageOps.invert, ImageOps.flip, ImageOps.mirror)
        image.save(folder / f"{i}_in.png")
        edits[i % 4](image).save(folder / f"{i}_out.png")
        rows.append({"input_image": f"{i}_in.png", "edit_prompt": PROMPTS[i % 4], "edited_image": f"{i}_out.png"})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))


def base_flags(model: str, work: Path) -> dict:
    """EditTrainConfig fields of the benchmarked run (everything but output_dir and the knobs)."""
    if model == "sd_tiny":
        paths = {}
        for kind, config in SD_TINY.items():
            paths[kind] = work / f"{kind}.json"
            paths[kind].write_text(json.dumps(config))
        return {"unet_config": str(paths["unet"]), "vae_config": str(paths["vae"]),
                "text_encoder_config": str(paths["text_encoder"]), "tokenizer": "clip", "resolution": 128,
                "random_flip": True, "train_batch_size": 8, "learning_rate": 1e-4, "lr_warmup_steps": 0}
    recipe = json.loads((REPO / "checkpoints" / "editor" / "train_config.json").read_text())
    keep = ("unet_config", "vae_config", "text_encoder_config", "tokenizer", "prediction_type",
            "rescale_betas_zero_snr", "train_text_encoder", "resolution", "random_flip", "train_batch_size",
            "learning_rate", "lr_scheduler", "lr_warmup_steps", "conditioning_dropout_prob", "max_grad_norm")
    flags = {k: recipe[k] for k in keep}
    flags.update({k: str(REPO / recipe[k]) for k in ("unet_config", "vae_config", "text_encoder_config")})
    return flags


# --- train_edit.py -------------------------------------------------------------------------------------------------

def run_train_edit(flags: dict, data: Path, out: Path, steps: int) -> tuple[dict, float | None]:
    """({"cpu": per-step samples per CPU-second, "wall": per-step samples/s}, seconds of the latent-cache build or
    None). The trainer's perf/samples_per_sec scalar is timed on this process's CPU clock (its `time.perf_counter`
    is swapped for `time.process_time`), the wall clock comes from the scalar events' own timestamps."""
    from types import SimpleNamespace

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import edit_diffusion.trainer as trainer
    from train_edit import main
    build = []

    class CacheLog(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("latent cache built in"):
                build.append(float(record.args[0]))

    handler = CacheLog()
    logging.getLogger("edit_diffusion.latent_cache").addHandler(handler)
    trainer.time = SimpleNamespace(perf_counter=time.process_time)
    try:
        config = EditTrainConfig(**flags, train_data_dir=str(data), output_dir=str(out), max_train_steps=steps,
                                 checkpointing_steps=10**6, seed=0, default_steps=2)
        main(config)
    finally:
        logging.getLogger("edit_diffusion.latent_cache").removeHandler(handler)
        trainer.time = time
    acc = EventAccumulator(str(out / "logs"), size_guidance={"scalars": 0})
    acc.Reload()
    events = acc.Scalars("perf/samples_per_sec")
    batch = flags["train_batch_size"]
    wall = [batch / (b.wall_time - a.wall_time) for a, b in zip(events, events[1:])]
    return {"cpu": [e.value for e in events], "wall": [wall[0]] + wall}, (build[0] if build else None)


# --- the reference: diffusers' train_instruct_pix2pix.py training step -----------------------------------------------

class RecipeDataset(torch.utils.data.Dataset):
    """The recipe's preprocess_train per item: decode both images, resize to (res, res) (`convert_to_np`), scale
    to [-1, 1], RandomCrop (a no-op after that resize) / RandomHorizontalFlip of the stacked pair, tokenize."""

    def __init__(self, folder: Path, tokenizer, resolution: int, flip: bool):
        self.rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
        self.folder, self.tokenizer, self.res, self.flip = folder, tokenizer, resolution, flip

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        row = self.rows[i]
        images = [np.array(Image.open(self.folder / row[k]).convert("RGB").resize((self.res, self.res))).transpose(2, 0, 1)
                  for k in ("input_image", "edited_image")]
        pixels = 2 * (torch.tensor(np.stack(images)) / 255) - 1
        if self.flip and torch.rand(()) < 0.5:
            pixels = pixels.flip(-1)
        ids = self.tokenizer(row["edit_prompt"], max_length=self.tokenizer.model_max_length, padding="max_length",
                             truncation=True, return_tensors="pt").input_ids[0]
        return {"original_pixel_values": pixels[0], "edited_pixel_values": pixels[1], "input_ids": ids}


def latents_of(encoded, sample: bool):
    """The recipe's `.latent_dist.sample()` / `.mode()`; AutoencoderTiny (no posterior, bundled editor): `.latents`."""
    if hasattr(encoded, "latent_dist"):
        return encoded.latent_dist.sample() if sample else encoded.latent_dist.mode()
    return encoded.latents


def run_reference(flags: dict, data: Path, steps: int) -> dict:
    """Per-step samples/s of the recipe's loop (models built exactly as train_edit.py builds them). The recipe
    cannot train the text encoder; with --train_text_encoder its parameters join the optimizer here."""
    from accelerate import Accelerator
    from diffusers.optimization import get_scheduler

    from edit_diffusion.components import build_components
    config = EditTrainConfig(**flags, train_data_dir=str(data), output_dir=str(data / "unused"), seed=0)
    torch.manual_seed(0)
    parts, noise_scheduler = build_components(config)
    unet, vae, text_encoder, tokenizer = parts.unet, parts.vae, parts.text_encoder, parts.tokenizer
    accelerator = Accelerator()
    vae.requires_grad_(False)
    text_encoder.requires_grad_(config.train_text_encoder)
    params = list(unet.parameters()) + (list(text_encoder.parameters()) if config.train_text_encoder else [])
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                                  weight_decay=config.adam_weight_decay, eps=config.adam_epsilon)
    loader = torch.utils.data.DataLoader(RecipeDataset(data, tokenizer, config.resolution, config.random_flip),
                                         shuffle=True, batch_size=config.train_batch_size, num_workers=0)
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer=optimizer, num_warmup_steps=config.lr_warmup_steps,
                                 num_training_steps=steps)
    unet, optimizer, loader, lr_scheduler = accelerator.prepare(unet, optimizer, loader, lr_scheduler)
    p = config.conditioning_dropout_prob
    unet.train()
    rates, step = {"cpu": [], "wall": []}, 0
    start, cpu_start = time.perf_counter(), time.process_time()
    while step < steps:
        for batch in loader:
            with accelerator.accumulate(unet):
                latents = latents_of(vae.encode(batch["edited_pixel_values"]), sample=True)
                latents = latents * vae.config.scaling_factor
                noise = torch.randn_like(latents)
                bsz = latents.shape[0]
                timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,)).long()
                noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
                encoder_hidden_states = text_encoder(batch["input_ids"])[0]
                original_image_embeds = latents_of(vae.encode(batch["original_pixel_values"]), sample=False)
                random_p = torch.rand(bsz)
                prompt_mask = (random_p < 2 * p).reshape(bsz, 1, 1)
                null_ids = tokenizer([""], max_length=tokenizer.model_max_length, padding="max_length",
                                     truncation=True, return_tensors="pt").input_ids
                null_conditioning = text_encoder(null_ids)[0]
                encoder_hidden_states = torch.where(prompt_mask, null_conditioning, encoder_hidden_states)
                image_mask = 1 - ((random_p >= p).float() * (random_p < 3 * p).float())
                original_image_embeds = image_mask.reshape(bsz, 1, 1, 1) * original_image_embeds
                concatenated = torch.cat([noisy_latents, original_image_embeds], dim=1)
                target = {"epsilon": noise, "sample": latents}.get(noise_scheduler.config.prediction_type)
                if target is None:
                    target = noise_scheduler.get_velocity(latents, noise, timesteps)
                model_pred = unet(concatenated, timesteps, encoder_hidden_states, return_dict=False)[0]
                loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
                accelerator.gather(loss.repeat(bsz)).mean().item()
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            now, cpu_now = time.perf_counter(), time.process_time()
            rates["wall"].append(bsz / (now - start))
            rates["cpu"].append(bsz / (cpu_now - cpu_start))
            start, cpu_start, step = now, cpu_now, step + 1
            if step >= steps:
                break
    return rates


# --- table ---------------------------------------------------------------------------------------------------------

KNOBS = {  # name -> extra EditTrainConfig fields on top of the default (cached) run
    "channels_last": {"channels_last": True},
    "AdamW foreach": {"adam_implementation": "foreach"},
    "AdamW fused": {"adam_implementation": "fused"},
    "AdamW for-loop": {"adam_implementation": "loop"},
    "bf16 autocast": {"mixed_precision": "bf16"},
    "torch.compile": {"torch_compile": True},
    "2 loader workers": {"dataloader_num_workers": 2},
}


def steady(rates: dict, warmup: int) -> dict:
    """Median per clock after the warm-up steps (first steps: allocations, compilation, loader start)."""
    return {clock: statistics.median(values[warmup:]) for clock, values in rates.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("sd_tiny", "editor"), default="sd_tiny")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run (after --warmup)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--items", type=int, default=32, help="training triplets")
    parser.add_argument("--knobs", default="", help="also time these speed options on their own: 'all' or a "
                        f"comma-separated list of {sorted(KNOBS)}")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the tiny models' fastest)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        flags = base_flags(args.model, work)
        data = work / "data"
        data.mkdir()
        write_data(data, args.items, flags["resolution"])
        total = args.steps + args.warmup
        rows = [("diffusers recipe step (reference)", steady(run_reference(flags, data, total), args.warmup), None)]
        uncached, _ = run_train_edit({**flags, "cache_latents": "never"}, data, work / "uncached", total)
        rows.append(("train_edit.py, --cache_latents never", steady(uncached, args.warmup), None))
        cached, build = run_train_edit(flags, data, work / "cached", total)
        rows.append(("train_edit.py (defaults: latent cache)", steady(cached, args.warmup), build))
        chosen = list(KNOBS) if args.knobs == "all" else [k for k in args.knobs.split(",") if k]
        for name in chosen:
            try:
                rates, _ = run_train_edit({**flags, **KNOBS[name]}, data, work / name.replace(" ", "_"), total)
                rows.append((f"  + {name}", steady(rates, args.warmup), None))
            except Exception as err:  # a knob this machine lacks (e.g. no compiler): report, keep going
                failed = {"cpu": float("nan"), "wall": float("nan")}
                rows.append((f"  + {name}: failed ({type(err).__name__}: {str(err)[:60]})", failed, None))
    ref = rows[0][1]
    print(f"\nmodel {args.model}: resolution {flags['resolution']}, batch {flags['train_batch_size']}, "
          f"{args.items} triplets, {args.steps} timed steps after {args.warmup}, torch threads {args.threads}")
    print(f"| {'run':<44} | samples/CPU-s | vs reference | samples/s (wall) | vs reference |")
    print(f"|{'-' * 46}|---------------|--------------|------------------|--------------|")
    for name, rate, _ in rows:
        print(f"| {name:<44} | {rate['cpu']:13.2f} | {rate['cpu'] / ref['cpu']:11.2f}x | {rate['wall']:16.2f} | "
              f"{rate['wall'] / ref['wall']:11.2f}x |")
    if build is not None:
        print(f"one-time latent cache build: {build:.2f} s for {args.items} triplets "
              f"({'2 flips' if flags['random_flip'] else '1 view'} each)")


if __name__ == "__main__":
    main()
