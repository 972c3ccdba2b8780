"""Train an InstructPix2Pix editor: fine-tune Stable Diffusion (or an InstructPix2Pix checkpoint) on
editing triplets, or train a small one from scratch. Accepts the diffusers InstructPix2Pix recipe's
flags under their known names.

    python train_edit.py --pretrained_model_name_or_path stable-diffusion-v1-5/stable-diffusion-v1-5 \
        --dataset_name my_triplets --resolution 256 --random_flip --train_batch_size 4 --use_ema \
        --max_train_steps 15000 --conditioning_dropout_prob 0.05 --output_dir ip2p

    python train_edit.py --unet_config tiny --vae_config tiny --text_encoder_config tiny --tokenizer clip \
        --train_text_encoder --vae_pretrain_steps 400 --prediction_type sample --train_data_dir demo_data \
        --resolution 128 --output_dir tiny-editor
"""
from __future__ import annotations

import logging

from common.cli import parse_config
from common.errors import cli_errors
from edit_diffusion.config import EditTrainConfig


def parse_args(argv: list[str] | None = None) -> EditTrainConfig:
    """One flag per EditTrainConfig field, named like the field (the diffusers recipe's names)."""
    return parse_config(EditTrainConfig, argv, prog="train_edit.py", description=__doc__.split("\n\n")[0])


def main(config: EditTrainConfig) -> dict:
    """Train and write the final StableDiffusionInstructPix2PixPipeline folder to config.output_dir."""
    from edit_diffusion.family_training import family_to_train, train_family
    from edit_diffusion.recipe import preflight
    from edit_diffusion.trainer import train  # heavy imports after argument checks
    preflight(config)  # trackers, bitsandbytes, --push_to_hub offline: one line before any work
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    family = family_to_train(config)  # SDXL-IP2P / Kontext / Qwen-Image-Edit bases: their own loop
    if family is not None:
        return train_family(config, family)
    return train(config)


@cli_errors
def cli(argv: list[str] | None = None) -> dict:
    result = main(parse_args(argv))
    if result.get("stopped_by"):  # SIGINT / SIGTERM: checkpoint written; exit 128 + signal like the shell expects
        raise SystemExit(result["exit_code"])
    return result


if __name__ == "__main__":
    cli()
