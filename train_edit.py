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

import dataclasses
import logging

from common.cli import OneLineErrorParser
from common.errors import cli_errors
from edit_diffusion.config import (BETA_SCHEDULES, LR_SCHEDULERS, MIXED_PRECISION, PREDICTION_TYPES,
                                   SCHEDULER_NAMES, EditTrainConfig)

# Flags whose values are a closed set: validated by argparse `choices`.
CHOICES = {"prediction_type": PREDICTION_TYPES, "beta_schedule": BETA_SCHEDULES, "mixed_precision": MIXED_PRECISION,
           "lr_scheduler": LR_SCHEDULERS, "default_scheduler": SCHEDULER_NAMES,
           "cache_images": ("auto", "always", "never")}
HELP = {
    "pretrained_model_name_or_path": "hub id, local diffusers folder, or single .ckpt/.safetensors file",
    "unet_config": "UNet JSON config (or bundled name: tiny, sd15) to train from scratch",
    "vae_config": "VAE JSON config (or 'tiny'); pre-train it with --vae_pretrain_steps",
    "text_encoder_config": "CLIPTextModel JSON config (or 'tiny')",
    "tokenizer": "'clip' (SD 1.5 tokenizer rebuilt offline) or a tokenizer folder",
    "original_config": "local diffusers folder with the configs of a single-file checkpoint",
    "dataset_name": "datasets hub name or save_to_disk folder",
    "train_data_dir": "folder with metadata.jsonl, or the InstructPix2Pix generated layout",
    "conditioning_dropout_prob": "probability of dropping text, image, and both (each), paper §3.2.1",
    "resume_from_checkpoint": "'latest' or a checkpoint-<step> name",
    "validation_steps": "run validation edits every N optimisation steps",
    "rescale_betas_zero_snr": "zero terminal SNR noise schedule (needs v_prediction or sample)",
    "max_nonfinite_steps": "non-finite losses are skipped with a warning; stop after this many in a row",
    "default_steps": "editing defaults written to edit_defaults.json in the output folder",
}

def _arg_type(annotation: str):
    if "bool" in annotation:
        return bool
    if "int" in annotation:
        return int
    if "float" in annotation:
        return float
    return str


def build_parser() -> OneLineErrorParser:
    """One flag per EditTrainConfig field, named like the field (the diffusers recipe's names)."""
    parser = OneLineErrorParser(prog="train_edit.py", description=__doc__.split("\n\n")[0])
    for f in dataclasses.fields(EditTrainConfig):
        kind = _arg_type(str(f.type))
        help_text = HELP.get(f.name)
        if kind is bool:
            parser.add_argument(f"--{f.name}", action="store_true", help=help_text)
        else:
            parser.add_argument(f"--{f.name}", type=kind, default=f.default, choices=CHOICES.get(f.name),
                                help=help_text)
    return parser


def parse_args(argv: list[str] | None = None) -> EditTrainConfig:
    args = build_parser().parse_args(argv)
    return EditTrainConfig(**vars(args))


def main(config: EditTrainConfig) -> dict:
    """Train and write the final StableDiffusionInstructPix2PixPipeline folder to config.output_dir."""
    from edit_diffusion.trainer import train  # heavy imports after argument checks
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return train(config)


@cli_errors
def cli(argv: list[str] | None = None) -> dict:
    result = main(parse_args(argv))
    if result.get("stopped_by"):  # SIGINT / SIGTERM: checkpoint written; exit 128 + signal like the shell expects
        raise SystemExit(result["exit_code"])
    return result


if __name__ == "__main__":
    cli()
