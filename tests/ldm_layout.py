"""The original (CompVis LDM / InstructPix2Pix release) single-file layout of a diffusers SD model, for the
tests' hub cache: the checkpoint keys (`model.diffusion_model.*`, `first_stage_model.*`,
`cond_stage_model.transformer.*`) and the configs/generate.yaml that describes them. diffusers' own
single-file loader converts them back; the tests check it gives the same weights."""
from __future__ import annotations

import torch

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
           "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _unet_to_ldm(key: str, lpb: int, has_attention: list[bool]) -> str:
    """A diffusers UNet key -> the original openaimodel.UNetModel key (SD 1.x layout)."""
    fixed = {"conv_in.": "input_blocks.0.0.", "time_embedding.linear_1.": "time_embed.0.",
             "time_embedding.linear_2.": "time_embed.2.", "conv_norm_out.": "out.0.", "conv_out.": "out.2.",
             # SDXL's pooled-text + size embedding (SGM's label_emb)
             "add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2."}
    for new, old in fixed.items():
        if key.startswith(new):
            return old + key[len(new):]
    parts = key.split(".")

    def resnet(rest: list[str]) -> str:
        return ".".join([_RESNET[rest[0]]] + rest[1:])

    if parts[0] == "mid_block":
        kind, j, rest = parts[1], int(parts[2]), parts[3:]
        return (f"middle_block.{2 * j}." + resnet(rest)) if kind == "resnets" else ("middle_block.1." + ".".join(rest))
    level, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
    if parts[0] == "down_blocks":
        if kind == "downsamplers":
            return f"input_blocks.{(level + 1) * (lpb + 1)}.0.op." + ".".join(rest[1:])
        block = 1 + level * (lpb + 1) + j
        return f"input_blocks.{block}.0." + resnet(rest) if kind == "resnets" else f"input_blocks.{block}.1." + ".".join(rest)
    if kind == "upsamplers":
        slot = 2 if has_attention[level] else 1
        return f"output_blocks.{level * (lpb + 1) + lpb}.{slot}.conv." + ".".join(rest[1:])
    block = level * (lpb + 1) + j
    return f"output_blocks.{block}.0." + resnet(rest) if kind == "resnets" else f"output_blocks.{block}.1." + ".".join(rest)


def _vae_to_ldm(key: str, levels: int) -> str:
    """A diffusers AutoencoderKL key -> the original ldm AutoencoderKL key."""
    parts = key.split(".")
    side, rest = parts[0], parts[1:]
    if side in ("quant_conv", "post_quant_conv"):
        return key
    if rest[0] == "conv_norm_out":
        return ".".join([side, "norm_out"] + rest[1:])
    if rest[0] in ("conv_in", "conv_out"):
        return key
    if rest[0] == "mid_block":
        if rest[1] == "resnets":
            tail = [("nin_shortcut" if t == "conv_shortcut" else t) for t in rest[3:]]
            return ".".join([side, "mid", f"block_{int(rest[2]) + 1}"] + tail)
        sub = ".".join(rest[3:-1])
        return ".".join([side, "mid", "attn_1", _VAE_ATTN[sub], rest[-1]])
    i, kind = int(rest[1]), rest[2]
    stage, level = ("down", i) if rest[0] == "down_blocks" else ("up", levels - 1 - i)
    if kind in ("downsamplers", "upsamplers"):
        return ".".join([side, stage, str(level), "downsample" if stage == "down" else "upsample", "conv", rest[-1]])
    tail = [("nin_shortcut" if t == "conv_shortcut" else t) for t in rest[4:]]
    return ".".join([side, stage, str(level), "block", rest[3]] + tail)


def ldm_state_dict(unet, vae, text_encoder=None) -> dict[str, torch.Tensor]:
    """The original-format (CompVis / InstructPix2Pix release) checkpoint keys of a diffusers model; an SDXL
    UNet and VAE take the same keys in SGM's layout (its text encoders, left out here, sit under conditioner.*)."""
    lpb = unet.config.layers_per_block
    has_attention = ["CrossAttn" in t for t in unet.config.up_block_types]
    out = {"model.diffusion_model." + _unet_to_ldm(k, lpb, has_attention): v.clone()
           for k, v in unet.state_dict().items()}
    levels = len(vae.config.block_out_channels)
    for k, v in vae.state_dict().items():
        ldm = _vae_to_ldm(k, levels)
        if ".attn_1." in ldm and ldm.endswith(".weight") and v.ndim == 2:
            v = v[:, :, None, None]  # the original stores mid-block attention projections as 1x1 convs
        out["first_stage_model." + ldm] = v.clone()
    for k, v in (text_encoder.state_dict() if text_encoder is not None else {}).items():
        out["cond_stage_model.transformer.text_model." + k.removeprefix("text_model.")] = v.clone()
    return out


def ldm_yaml(unet, vae) -> str:
    """The InstructPix2Pix release's configs/generate.yaml with this model's dimensions."""
    base = unet.config.block_out_channels[0]
    mult = [c // base for c in unet.config.block_out_channels]
    attn = [2 ** i for i, t in enumerate(unet.config.down_block_types) if "CrossAttn" in t]
    vbase = vae.config.block_out_channels[0]
    vmult = [c // vbase for c in vae.config.block_out_channels]
    return f"""model:
  base_learning_rate: 1.0e-04
  target: stable_diffusion.ldm.models.diffusion.ddpm_edit.LatentDiffusion
  params:
    linear_start: 0.00085
    linear_end: 0.0120
    num_timesteps_cond: 1
    log_every_t: 200
    timesteps: 1000
    first_stage_key: edited
    cond_stage_key: edit
    image_size: {unet.config.sample_size}
    channels: 4
    cond_stage_trainable: false
    conditioning_key: hybrid
    monitor: val/loss_simple_ema
    scale_factor: {vae.config.scaling_factor}
    use_ema: false
    unet_config:
      target: stable_diffusion.ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        image_size: 32
        in_channels: {unet.config.in_channels}
        out_channels: 4
        model_channels: {base}
        attention_resolutions: {attn}
        num_res_blocks: {unet.config.layers_per_block}
        channel_mult: {mult}
        num_heads: {unet.config.attention_head_dim}
        use_spatial_transformer: True
        transformer_depth: 1
        context_dim: {unet.config.cross_attention_dim}
        use_checkpoint: True
        legacy: False
    first_stage_config:
      target: stable_diffusion.ldm.models.autoencoder.AutoencoderKL
      params:
        embed_dim: 4
        monitor: val/rec_loss
        ddconfig:
          double_z: true
          z_channels: 4
          resolution: {vae.config.sample_size}
          in_channels: 3
          out_ch: 3
          ch: {vbase}
          ch_mult: {vmult}
          num_res_blocks: {vae.config.layers_per_block}
          attn_resolutions: []
          dropout: 0.0
        lossconfig:
          target: torch.nn.Identity
    cond_stage_config:
      target: stable_diffusion.ldm.modules.encoders.modules.FrozenCLIPEmbedder
"""
