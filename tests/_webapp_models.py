"""Tiny seeded models for the web-app tests (the bundled ones are too slow for CPU tests): an
InstructPix2Pix pipeline folder and a stage-1 generator file, plus a real photo to upload."""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

# Non-square on purpose: the app must keep the input's size (width, height).
PHOTO_SIZE = (64, 48)


def real_photo(size: tuple[int, int] = PHOTO_SIZE) -> Image.Image:
    """skimage's astronaut (public domain), resized."""
    from skimage import data
    return Image.fromarray(data.astronaut()).resize(size, Image.BICUBIC)


EXAMPLE_SIZE = (56, 40)


def example_photo(size: tuple[int, int] = EXAMPLE_SIZE) -> Image.Image:
    """skimage's chelsea the cat (public domain), resized: a second, different real photo."""
    from skimage import data
    return Image.fromarray(data.chelsea()).resize(size, Image.BICUBIC)


def _tokenizer(cache_dir: Path):
    """The real SD 1.5 CLIP tokenizer rebuilt offline; tiny vocabulary only if that module is missing."""
    try:
        from edit_diffusion.tokenizer import load_clip_tokenizer
    except ImportError:
        load_clip_tokenizer = None
    if load_clip_tokenizer is not None:
        return load_clip_tokenizer(cache_dir)
    import json

    from transformers import CLIPTokenizer
    cache_dir.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {tok: i for i, tok in enumerate(letters + [c + "</w>" for c in letters]
                                             + ["<|startoftext|>", "<|endoftext|>"])}
    (cache_dir / "vocab.json").write_text(json.dumps(vocab))
    (cache_dir / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(cache_dir / "vocab.json"), str(cache_dir / "merges.txt"), model_max_length=77)


def build_tiny_editor(folder: Path) -> Path:
    """A seeded, untrained StableDiffusionInstructPix2PixPipeline saved with save_pretrained."""
    from diffusers import (AutoencoderKL, EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _tokenizer(folder.parent / (folder.name + "-tokenizer-cache"))
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=8, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    scheduler = EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(folder))
    return folder


def build_tiny_generator(path: Path) -> Path:
    """A seeded, untrained stage-1 generator saved as a self-describing safetensors file."""
    from stylize_gan.checkpoint import save_generator
    from stylize_gan.networks import build_generator

    torch.manual_seed(0)
    generator = build_generator("unet", **TINY_GENERATOR)
    save_generator(generator, path, "unet", TINY_GENERATOR)
    return path


TINY_GENERATOR = dict(width=8, depth=2, res_blocks=1)
