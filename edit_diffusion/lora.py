"""Optional LoRA fine-tuning (peft) of an 8-channel InstructPix2Pix UNet; the saved file is the format
`pipeline.load_lora_weights` reads (`pytorch_lora_weights.safetensors`, keys prefixed `unet.`)."""
from __future__ import annotations

from pathlib import Path

from diffusers import StableDiffusionInstructPix2PixPipeline
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

# The attention projections, as in the diffusers LoRA recipes (conv_in stays frozen: see components.py).
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


def add_unet_lora(unet, rank: int, alpha: int | None = None) -> None:
    """Attach trainable LoRA adapters (rank `rank`) to the UNet attention projections, in place."""
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian",
                                target_modules=LORA_TARGETS))


def save_unet_lora(unet, out_dir: str | Path) -> Path:
    """Write the adapters as `pytorch_lora_weights.safetensors` in diffusers' LoRA format."""
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionInstructPix2PixPipeline.save_lora_weights(str(out_dir), unet_lora_layers=layers,
                                                             safe_serialization=True)
    return Path(out_dir) / LORA_WEIGHTS


def fuse_unet_lora(unet) -> None:
    """Merge the adapters into the base weights and drop them (plain UNet state dict again)."""
    unet.fuse_lora()
    unet.unload_lora()
