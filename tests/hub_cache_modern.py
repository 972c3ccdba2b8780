"""Tiny offline copies of the modern instruction editors, under their real hub ids and in their real layouts
(model_index.json naming the pipeline class, one folder per component), written into the same hub-shaped
cache as tests/hub_cache.py (its `write_repo`):

- diffusers/sdxl-instructpix2pix-768   StableDiffusionXLInstructPix2PixPipeline: 8-channel SDXL UNet with the
                                       text_time embedding, two CLIP text towers, EulerDiscreteScheduler
- black-forest-labs/FLUX.1-Kontext-dev FluxKontextPipeline: Flux transformer with guidance embedding, CLIP + T5
- Qwen/Qwen-Image-Edit                 QwenImageEditPipeline: QwenImage transformer and VAE, Qwen2.5-VL encoder
- Qwen/Qwen-Image-Edit-2509            QwenImageEditPlusPipeline (same parts, other transformer weights)

Component sizes follow diffusers' own fast tests for these pipelines; the tokenizers are made here, with no
download: CLIP from the BPE file open_clip ships (edit_diffusion/tokenizer.py), T5 as an in-memory Unigram
model, Qwen2 as a byte-level BPE with Qwen's special tokens (their ids feed the Qwen2.5-VL config)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from hub_cache import _model_card, perturbed, write_repo, write_tokenizer_folder

SDXL_IP2P = "diffusers/sdxl-instructpix2pix-768"
KONTEXT = "black-forest-labs/FLUX.1-Kontext-dev"
QWEN_EDIT = "Qwen/Qwen-Image-Edit"
QWEN_EDIT_PLUS = "Qwen/Qwen-Image-Edit-2509"
MODERN_IDS = (SDXL_IP2P, KONTEXT, QWEN_EDIT, QWEN_EDIT_PLUS)

# openai/clip-vit-large-patch14's token ids, as in hub_cache.TEXT
CLIP_TEXT = dict(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=77, projection_dim=32, hidden_act="gelu", bos_token_id=0, eos_token_id=2,
                 pad_token_id=1)
QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
T5_WORDS = "▁a ▁the ▁make ▁it ▁turn ▁into ▁add ▁red ▁blue ▁black ▁and ▁white ▁sky ▁cat ▁photo ▁winter".split()


# --- tokenizers --------------------------------------------------------------------------------------------

def t5_tokenizer():
    """A T5 tokenizer (Unigram, Metaspace, </s> appended) over a small vocabulary, built in memory."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    letters = [f"▁{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(w, -5.0) for w in T5_WORDS] + [(t, -10.0) for t in letters]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(" {2,}", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                           extra_ids=0, model_max_length=512)


def qwen2_tokenizer():
    """A byte-level BPE Qwen2 tokenizer: the 256 byte symbols, a few merges, Qwen's special tokens after them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2TokenizerFast

    from edit_diffusion.tokenizer import bytes_to_unicode  # GPT-2's byte table, which Qwen2 uses too

    symbols = list(bytes_to_unicode().values())
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a")]
    vocab = {s: i for i, s in enumerate(symbols)}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tokenizer = Qwen2TokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token=None, bos_token=None, model_max_length=32768)
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIALS[1:])})
    tokenizer.add_special_tokens({"pad_token": "<|endoftext|>"})
    return tokenizer


# --- components --------------------------------------------------------------------------------------------

def clip_pair(seed: int):
    """(CLIPTextModel, CLIPTextModelWithProjection), seeded."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    torch.manual_seed(seed)
    config = CLIPTextConfig(**CLIP_TEXT)
    return CLIPTextModel(config).eval(), CLIPTextModelWithProjection(config).eval()


def sdxl_ip2p_pipeline(clip_tokenizer):
    from diffusers import (AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLInstructPix2PixPipeline,
                           UNet2DConditionModel)
    text_encoder, text_encoder_2 = clip_pair(1)
    torch.manual_seed(2)
    unet = UNet2DConditionModel(  # diffusers' SDXL IP2P fast test; cross attention = 32 + 32 text features
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=8, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64).eval()
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        sample_size=64, scaling_factor=0.13025, force_upcast=False).eval()
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                       beta_schedule="scaled_linear", timestep_spacing="leading")
    return StableDiffusionXLInstructPix2PixPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=clip_tokenizer,
        tokenizer_2=clip_tokenizer, unet=unet, scheduler=scheduler, add_watermarker=False)


def kontext_pipeline(clip_tokenizer):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel
    text_encoder, _ = clip_pair(3)
    t5_tok = t5_tokenizer()
    torch.manual_seed(4)
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), d_model=32, d_ff=37, d_kv=8, num_layers=2,
                                             num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0)).eval()
    torch.manual_seed(5)
    # diffusers' Kontext fast test, with [dev]'s guidance embedding (guidance-distilled)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=(4, 4, 8),
                                         guidance_embeds=True).eval()
    vae = AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                        latent_channels=4, norm_num_groups=4, use_quant_conv=False, use_post_quant_conv=False,
                        shift_factor=0.0609, scaling_factor=1.5035,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2).eval()
    return FluxKontextPipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True,
                                                                         base_shift=0.5, max_shift=1.15),
                               vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer,
                               text_encoder_2=text_encoder_2, tokenizer_2=t5_tok, transformer=transformer)


def qwen_parts() -> dict:
    """Qwen-Image-Edit's parts as diffusers' fast test builds them (vocabulary: our byte-level tokenizer)."""
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessor,
                              Qwen2VLProcessor, Qwen2VLVideoProcessor)
    tokenizer = qwen2_tokenizer()
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in
           (("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"),
            ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
            ("bos_token_id", "<|endoftext|>"), ("eos_token_id", "<|im_end|>"))}
    torch.manual_seed(6)
    config = Qwen2_5_VLConfig(
        text_config={"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 2, "vocab_size": len(tokenizer), "rope_theta": 1000000.0,
                     "bos_token_id": ids["bos_token_id"], "eos_token_id": ids["eos_token_id"],
                     "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"}},
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
        hidden_size=16, vocab_size=len(tokenizer), **ids)
    text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
    torch.manual_seed(7)
    transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=2,
                                              attention_head_dim=16, num_attention_heads=3, joint_attention_dim=16,
                                              guidance_embeds=False, axes_dims_rope=(8, 4, 4)).eval()
    torch.manual_seed(8)
    vae = AutoencoderKLQwenImage(base_dim=4 * 6, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1,
                                 temperal_downsample=[False, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4).eval()
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112),
                                 tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor())
    scheduler = FlowMatchEulerDiscreteScheduler(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=8192,
                                                max_shift=0.9, shift=1.0, shift_terminal=0.02,
                                                use_dynamic_shifting=True, time_shift_type="exponential")
    return dict(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                processor=processor, scheduler=scheduler)


# --- the cache ---------------------------------------------------------------------------------------------

def build_modern_cache(hf_home: Path) -> dict:
    """Write the four repos into `hf_home` (an HF_HOME); returns their snapshot folders by id."""
    from diffusers import QwenImageEditPipeline, QwenImageEditPlusPipeline

    from edit_diffusion.tokenizer import load_clip_tokenizer, write_tokenizer_files

    hub = Path(hf_home) / "hub"
    work = Path(tempfile.mkdtemp(prefix="hub-modern-", dir=hf_home))
    vocab = write_tokenizer_files(work / "vocab")
    clip_tok = load_clip_tokenizer(work / "vocab")
    qwen = qwen_parts()
    pipes = {SDXL_IP2P: sdxl_ip2p_pipeline(clip_tok), KONTEXT: kontext_pipeline(clip_tok),
             QWEN_EDIT: QwenImageEditPipeline(**qwen),
             QWEN_EDIT_PLUS: QwenImageEditPlusPipeline(**{**qwen, "transformer": perturbed(qwen["transformer"],
                                                                                           0.02, seed=9)})}
    info = {}
    for repo, pipe in pipes.items():
        folder = work / repo.replace("/", "--")
        pipe.save_pretrained(str(folder), safe_serialization=True)
        for name in ("tokenizer", "tokenizer_2"):  # the CLIP tokenizers as the hub has them (no tokenizer.json)
            if (folder / name / "vocab.json").is_file() and "CLIP" in type(getattr(pipe, name)).__name__:
                write_tokenizer_folder(folder / name, vocab)
        _model_card(folder, repo)
        info[repo] = write_repo(hub, repo, folder)
    info["pipes"] = pipes
    shutil.rmtree(work)
    return info
