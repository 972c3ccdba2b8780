"""Every entry point as a real child process under bad input: exit code 2, one `error: ...` line naming the
problem, no traceback, and no file that existed before touched (nor new ones left behind). Plus the inputs
that must work: CMYK, palette, 16-bit, grayscale, RGBA, EXIF-rotated, 1x1 and 12000x9000 photos, long
instructions, --overwrite.

The cases run through tests/_entry_runner.py, which forks one child per case after importing torch once (the
child executes the script as `__main__`, exactly as `python infer.py ...`); `test_runner_matches_python`
checks that against plain `python` start-ups."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from PIL import Image

from _bad_input_workspace import EXIF_STORED, PHOTO, build_workspace

REPO = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).resolve().parent / "_entry_runner.py"
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
           TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")


@dataclass
class Case:
    id: str
    target: str                      # "infer.py" or "-m demo.build"
    argv: list[str]                  # "{ws}" is replaced by the workspace folder
    words: tuple[str, ...] = ()      # must appear in the error line (rc 2) or in stdout (rc 0)
    rc: int = 2
    creates: tuple[str, ...] = ()    # files a successful case may create (relative to the workspace)
    changes: tuple[str, ...] = ()    # pre-existing files it may change (--overwrite)
    check: Callable[[Path], None] | None = None  # extra assertions on the workspace after a success
    extra: dict = field(default_factory=dict)


GAN = ["--gan-checkpoint", "{ws}/models/gen.safetensors", "--skip-edit"]
EDITOR = ["--editor", "{ws}/models/editor"]
FAST_EDIT = ["--steps", "2", "--resolution", "32", "--seed", "0"]
TINY_GAN_TRAIN = ["--image-size", "32", "--batch-size", "2", "--gen-width", "4", "--gen-depth", "2",
                  "--gen-res-blocks", "1", "--disc-width", "8", "--disc-layers", "2", "--epochs", "1", "--initial-epochs", "0"]
UNPAIRED = ["--data-dir", "{ws}/gan_data", "--dataset", "Toy"]
EDIT_MODEL = ["--unet_config", "tiny", "--vae_config", "tiny", "--text_encoder_config", "tiny", "--tokenizer", "clip",
              "--resolution", "32", "--max_train_steps", "1", "--train_batch_size", "1"]
EDIT_DATA = ["--train_data_dir", "{ws}/edit_data", "--output_dir", "{ws}/runs/e", "--resolution", "32"]
EDIT_TRAIN = [*EDIT_MODEL, "--train_data_dir", "{ws}/edit_data", "--output_dir", "{ws}/runs/e"]


def _infer(src: str, out: str, *extra: str) -> list[str]:
    return ["--input", f"{{ws}}/images/{src}", "--output", f"{{ws}}/{out}", *extra]


def _size_is(rel: str, size: tuple[int, int]) -> Callable[[Path], None]:
    def check(ws: Path) -> None:
        with Image.open(ws / rel) as img:
            assert img.size == size and img.mode == "RGB", (rel, img.size, img.mode)
    return check


def _works(name: str, src: str, size: tuple[int, int] = PHOTO, *words: str) -> Case:
    out = f"out/ok_{name}.png"
    return Case(f"infer_works_{name}", "infer.py", _infer(src, out, *GAN), words=words, rc=0, creates=(out,),
                check=_size_is(out, size))


CASES = [
    # --- infer.py: input files
    Case("infer_missing_input", "infer.py", _infer("nope.jpg", "out/x.png", *GAN), ("nope.jpg", "not found")),
    Case("infer_text_as_png", "infer.py", _infer("text.png", "out/x.png", *GAN), ("text.png", "not a readable image")),
    Case("infer_truncated_jpeg", "infer.py", _infer("trunc.jpg", "out/x.png", *GAN), ("trunc.jpg", "not a readable")),
    Case("infer_truncated_png", "infer.py", _infer("trunc.png", "out/x.png", *GAN), ("trunc.png", "not a readable")),
    Case("infer_corrupt_png", "infer.py", _infer("corrupt.png", "out/x.png", *GAN), ("corrupt.png", "not a readable")),
    Case("infer_empty_file", "infer.py", _infer("empty.png", "out/x.png", *GAN), ("empty.png", "empty file")),
    Case("infer_empty_folder", "infer.py", _infer("empty_dir", "out/folder_out", *GAN), ("empty_dir", "no images")),
    # --- infer.py: awkward but valid images must work, at the input's (upright) size
    _works("cmyk", "cmyk.jpg"),
    _works("palette", "palette.png"),
    _works("gray16", "gray16.png"),
    _works("gray", "gray.png"),
    _works("rgba", "rgba.png"),
    _works("exif", "exif6.jpg", EXIF_STORED[::-1]),
    _works("one_pixel", "one.png", (1, 1)),
    _works("huge", "huge.jpg", (2048, 1536), "note:", "12000x9000", "2048x1536", "--max-side"),
    Case("infer_folder_skips_unreadable", "infer.py", _infer("mixed", "out/mixed_out", *GAN), rc=0,
         words=("wrote",), creates=("out/mixed_out", "out/mixed_out/good.png"),
         check=_size_is("out/mixed_out/good.png", PHOTO)),
    # --- infer.py: instructions
    Case("infer_empty_instruction", "infer.py", _infer("photo.png", "out/x.png", "--edit", "   ", *EDITOR),
         ("instruction is empty",)),
    Case("infer_missing_instruction", "infer.py", _infer("photo.png", "out/x.png", *EDITOR), ("--edit",)),
    Case("infer_long_instruction", "infer.py",
         _infer("photo.png", "out/long.png", "--gan-checkpoint", "{ws}/models/gen.safetensors", *EDITOR,
                "--edit", "make it " + "very " * 120 + "red", *FAST_EDIT),
         rc=0, words=("only the first 77",), creates=("out/long.png",), check=_size_is("out/long.png", PHOTO)),
    # --- infer.py: checkpoints
    Case("infer_missing_gan", "infer.py", _infer("photo.png", "out/x.png", "--gan-checkpoint", "{ws}/nope.safetensors",
                                                 "--skip-edit"), ("nope.safetensors", "not found")),
    Case("infer_missing_editor", "infer.py", _infer("photo.png", "out/x.png", "--skip-stylize", "--edit", "x",
                                                    "--editor", "{ws}/no_editor"), ("no_editor", "no such file")),
    Case("infer_editor_as_gan", "infer.py", _infer("photo.png", "out/x.png", "--gan-checkpoint", "{ws}/models/editor",
                                                   "--skip-edit"), ("is a folder", "diffusers pipeline")),
    Case("infer_gan_as_editor", "infer.py", _infer("photo.png", "out/x.png", "--skip-stylize", "--edit", "x",
                                                   "--editor", "{ws}/models/gen.safetensors"),
         ("gen.safetensors", "not a Stable Diffusion checkpoint")),
    Case("infer_random_gan", "infer.py", _infer("photo.png", "out/x.png", "--gan-checkpoint",
                                                "{ws}/models/random.safetensors", "--skip-edit"),
         ("random.safetensors", "not a readable safetensors")),
    Case("infer_random_editor", "infer.py", _infer("photo.png", "out/x.png", "--skip-stylize", "--edit", "x",
                                                   "--editor", "{ws}/models/random.ckpt"), ("random.ckpt", "refused")),
    Case("infer_evil_editor", "infer.py", _infer("photo.png", "out/x.png", "--skip-stylize", "--edit", "x",
                                                 "--editor", "{ws}/models/evil.ckpt"), ("evil.ckpt", "refused")),
    Case("infer_disc_as_gan", "infer.py", _infer("photo.png", "out/x.png", "--gan-checkpoint",
                                                 "{ws}/models/disc.safetensors", "--skip-edit"),
         ("not a stylize_gan.generator checkpoint", "discriminator")),
    Case("infer_plain_safetensors_as_gan", "infer.py", _infer("photo.png", "out/x.png", "--gan-checkpoint",
                                                              "{ws}/models/plain.safetensors", "--skip-edit"),
         ("no stylize_gan metadata",)),
    Case("infer_other_architecture", "infer.py", _infer("photo.png", "out/x.png", "--gan-checkpoint",
                                                        "{ws}/models/mismatch.safetensors", "--skip-edit"),
         ("mismatch.safetensors", "do not match the architecture")),
    # --- infer.py: flags
    Case("infer_unknown_flag", "infer.py", _infer("photo.png", "out/x.png", *GAN, "--bogus"), ("unrecognized", "--bogus")),
    Case("infer_negative_steps", "infer.py", _infer("photo.png", "out/x.png", "--edit", "x", "--steps", "-3"),
         ("--steps", "-3")),
    Case("infer_guidance_below_1", "infer.py", _infer("photo.png", "out/x.png", "--edit", "x", "--cfg-image", "0.5"),
         ("--cfg-image", "below 1")),
    Case("infer_resolution_zero", "infer.py", _infer("photo.png", "out/x.png", "--edit", "x", "--resolution", "0"),
         ("--resolution", "positive")),
    Case("infer_resolution_not_number", "infer.py", _infer("photo.png", "out/x.png", "--resolution", "big"),
         ("--resolution", "invalid int value")),
    Case("infer_variants_zero", "infer.py", _infer("photo.png", "out/x.png", *GAN, "--variants", "0"), ("--variants",)),
    Case("infer_max_side_negative", "infer.py", _infer("photo.png", "out/x.png", *GAN, "--max-side", "-1"),
         ("--max-side",)),
    Case("infer_unknown_style", "infer.py", _infer("photo.png", "out/x.png", "--skip-edit", "--style", "nope"),
         ("--style", "invalid choice")),
    # --- infer.py: outputs
    Case("infer_output_folder_missing", "infer.py", _infer("photo.png", "no_such_dir/x.png", *GAN),
         ("no_such_dir", "does not exist")),
    Case("infer_output_is_input", "infer.py", _infer("photo.png", "images/photo.png", *GAN), ("output path is the input",)),
    Case("infer_output_exists", "infer.py", _infer("photo.png", "out/existing.png", *GAN),
         ("existing.png", "already exists", "--overwrite")),
    Case("infer_output_is_folder", "infer.py", _infer("photo.png", "out", *GAN), ("is a folder",)),
    Case("infer_output_bad_extension", "infer.py", _infer("photo.png", "out/x.txt", *GAN),
         ("unsupported output extension",)),
    Case("infer_intermediate_exists", "infer.py", _infer("photo.png", "out/existing2.png", *GAN, "--save-intermediate"),
         ("existing2_stylized.png", "already exists")),
    Case("infer_overwrite_replaces", "infer.py", _infer("photo.png", "out/replace_me.png", *GAN, "--overwrite"),
         rc=0, changes=("out/replace_me.png",), check=_size_is("out/replace_me.png", PHOTO)),

    # --- train_gan.py
    Case("gan_unknown_flag", "train_gan.py", [*UNPAIRED, "--bogus", "1"], ("unrecognized", "--bogus")),
    Case("gan_negative_epochs", "train_gan.py", [*UNPAIRED, "--epochs", "-1"], ("--epochs",)),
    Case("gan_negative_steps", "train_gan.py", [*UNPAIRED, "--max-steps", "-5"], ("--max-steps",)),
    Case("gan_resolution_zero", "train_gan.py", [*UNPAIRED, "--image-size", "0"], ("--image-size",)),
    Case("gan_resolution_not_number", "train_gan.py", [*UNPAIRED, "--image-size", "big"], ("--image-size", "invalid int")),
    Case("gan_nan_weight", "train_gan.py", [*UNPAIRED, "--tv_loss_weight", "nan"], ("--tv_loss_weight",)),
    Case("gan_zero_lr", "train_gan.py", [*UNPAIRED, "--lr-generator", "0"], ("--lr-generator",)),
    Case("gan_missing_data", "train_gan.py", ["--data-dir", "{ws}/nope", "--dataset", "Toy", *TINY_GAN_TRAIN,
                                              "--checkpoint-dir", "{ws}/runs/a"], ("nope", "folder not found")),
    Case("gan_data_is_file", "train_gan.py", ["--data-dir", "{ws}/out/a_file", "--dataset", "Toy", *TINY_GAN_TRAIN,
                                              "--checkpoint-dir", "{ws}/runs/a"], ("a_file", "folder not found")),
    Case("gan_unreadable_data", "train_gan.py", ["--data-dir", "{ws}/gan_bad_data", "--dataset", "Toy",
                                                 *TINY_GAN_TRAIN, "--checkpoint-dir", "{ws}/runs/a"],
         ("no usable images", "not a readable image")),
    Case("gan_checkpoint_exists", "train_gan.py", [*UNPAIRED, *TINY_GAN_TRAIN, "--checkpoint-dir", "{ws}/gan_ckpt"],
         ("already holds a checkpoint", "--overwrite")),
    Case("gan_checkpoint_dir_is_file", "train_gan.py", [*UNPAIRED, *TINY_GAN_TRAIN, "--checkpoint-dir",
                                                        "{ws}/out/a_file"], ("a_file", "not a folder")),
    Case("gan_resume_other_architecture", "train_gan.py", [*UNPAIRED, *TINY_GAN_TRAIN, "--checkpoint-dir",
                                                           "{ws}/gan_ckpt", "--resume_cond", "gen",
                                                           "--content_backbone", "efficientnet_lite0"],
         ("built as", "flags ask for")),
    Case("gan_resume_without_checkpoint", "train_gan.py", [*UNPAIRED, *TINY_GAN_TRAIN, "--checkpoint-dir",
                                                           "{ws}/runs/empty", "--resume_cond", "gen_dis"],
         ("no generator.safetensors",)),
    Case("gan_vgg_missing", "train_gan.py", [*UNPAIRED, *TINY_GAN_TRAIN, "--checkpoint-dir", "{ws}/runs/b",
                                             "--vgg_weights", "{ws}/nope.pth"], ("VGG19 weights not found",)),
    Case("gan_vgg_random", "train_gan.py", [*UNPAIRED, *TINY_GAN_TRAIN, "--checkpoint-dir", "{ws}/runs/b",
                                            "--vgg_weights", "{ws}/models/random.pth"], ("random.pth", "refused")),
    Case("gan_vgg_evil", "train_gan.py", [*UNPAIRED, *TINY_GAN_TRAIN, "--checkpoint-dir", "{ws}/runs/b",
                                          "--vgg_weights", "{ws}/models/evil.pth"], ("evil.pth", "refused")),
    Case("gan_vgg_is_generator", "train_gan.py", [*UNPAIRED, *TINY_GAN_TRAIN, "--checkpoint-dir", "{ws}/runs/b",
                                                  "--vgg_weights", "{ws}/models/gen.safetensors"], ("not VGG19",)),

    # --- train_edit.py
    Case("edit_unknown_flag", "train_edit.py", [*EDIT_TRAIN, "--bogus"], ("unrecognized", "--bogus")),
    Case("edit_negative_steps", "train_edit.py", [*EDIT_TRAIN, "--max_train_steps", "-1"], ("--max_train_steps",)),
    Case("edit_resolution_zero", "train_edit.py", [*EDIT_TRAIN, "--resolution", "0"], ("--resolution",)),
    Case("edit_resolution_not_multiple", "train_edit.py", [*EDIT_TRAIN, "--resolution", "100"], ("--resolution",)),
    Case("edit_resolution_not_number", "train_edit.py", [*EDIT_TRAIN, "--resolution", "big"],
         ("--resolution", "invalid int")),
    Case("edit_guidance_below_1", "train_edit.py", [*EDIT_TRAIN, "--default_cfg_image", "0.5"], ("--default_cfg_image",)),
    Case("edit_nan_lr", "train_edit.py", [*EDIT_TRAIN, "--learning_rate", "nan"], ("--learning_rate",)),
    Case("edit_missing_data", "train_edit.py", [*EDIT_MODEL, "--train_data_dir", "{ws}/nope", "--output_dir",
                                                "{ws}/runs/e"], ("nope",)),
    Case("edit_data_without_metadata", "train_edit.py", [*EDIT_MODEL, "--train_data_dir", "{ws}/images",
                                                         "--output_dir", "{ws}/runs/e"], ("images",)),
    Case("edit_missing_base", "train_edit.py", ["--pretrained_model_name_or_path", "{ws}/nope", *EDIT_DATA],
         ("nope", "no such file")),
    Case("edit_gan_as_base", "train_edit.py", ["--pretrained_model_name_or_path", "{ws}/models/gen.safetensors",
                                               *EDIT_DATA], ("not a Stable Diffusion checkpoint",)),
    Case("edit_random_base", "train_edit.py", ["--pretrained_model_name_or_path", "{ws}/models/random.ckpt",
                                               *EDIT_DATA], ("random.ckpt", "refused")),
    Case("edit_evil_base", "train_edit.py", ["--pretrained_model_name_or_path", "{ws}/models/evil.ckpt", *EDIT_DATA],
         ("evil.ckpt", "refused")),
    Case("edit_output_is_file", "train_edit.py", [*EDIT_MODEL, "--train_data_dir", "{ws}/edit_data",
                                                  "--output_dir", "{ws}/out/a_file"], ("a_file", "not a folder")),
    Case("edit_resume_missing", "train_edit.py", [*EDIT_TRAIN, "--resume_from_checkpoint", "checkpoint-99"],
         ("checkpoint-99", "no such checkpoint")),
    Case("edit_validation_image_missing", "train_edit.py", [*EDIT_TRAIN, "--validation_image", "{ws}/nope.png",
                                                            "--validation_prompt", "x"], ("nope.png", "not found")),

    # --- python -m demo.evaluate
    Case("eval_unknown_flag", "-m demo.evaluate", ["--gan", "{ws}/models/gen.safetensors", "--bogus"], ("--bogus",)),
    Case("eval_nothing", "-m demo.evaluate", [], ("nothing to evaluate",)),
    Case("eval_missing_gan", "-m demo.evaluate", ["--gan", "{ws}/nope.safetensors"], ("nope.safetensors", "not found")),
    Case("eval_editor_as_gan", "-m demo.evaluate", ["--gan", "{ws}/models/editor"], ("is a folder",)),
    Case("eval_random_gan", "-m demo.evaluate", ["--gan", "{ws}/models/random.safetensors"], ("not a readable",)),
    Case("eval_gan_as_editor", "-m demo.evaluate", ["--editor", "{ws}/models/gen.safetensors"],
         ("not a Stable Diffusion checkpoint",)),
    Case("eval_evil_editor", "-m demo.evaluate", ["--editor", "{ws}/models/evil.ckpt"], ("evil.ckpt", "refused")),
    Case("eval_size_zero", "-m demo.evaluate", ["--gan", "{ws}/models/gen.safetensors", "--size", "0"], ("--size",)),
    Case("eval_per_family_negative", "-m demo.evaluate", ["--gan", "{ws}/models/gen.safetensors", "--per-family", "-1"],
         ("--per-family",)),
    Case("eval_data_not_built", "-m demo.evaluate", ["--gan", "{ws}/models/gen.safetensors", "--data", "{ws}/images"],
         ("not found", "demo.build")),
    Case("eval_json_exists", "-m demo.evaluate", ["--gan", "{ws}/models/gen.safetensors", "--json",
                                                  "{ws}/out/result.json"], ("result.json", "already exists")),
    Case("eval_json_folder_missing", "-m demo.evaluate", ["--gan", "{ws}/models/gen.safetensors", "--json",
                                                          "{ws}/nope/result.json"], ("does not exist",)),

    # --- python -m demo.build
    Case("build_unknown_flag", "-m demo.build", ["--out", "{ws}/demo_new", "--bogus"], ("--bogus",)),
    Case("build_size_zero", "-m demo.build", ["--out", "{ws}/demo_new", "--size", "0"], ("--size",)),
    Case("build_negative_count", "-m demo.build", ["--out", "{ws}/demo_new", "--gan-crops", "-1"], ("--gan-crops",)),
    Case("build_size_not_number", "-m demo.build", ["--out", "{ws}/demo_new", "--size", "big"], ("invalid int",)),
    Case("build_unknown_family", "-m demo.build", ["--out", "{ws}/demo_new", "--families", "nope"], ("invalid choice",)),
    Case("build_out_is_file", "-m demo.build", ["--out", "{ws}/out/a_file"], ("a_file", "not a folder")),
    Case("build_existing", "-m demo.build", ["--out", "{ws}/demo_out", "--gan-crops", "1", "--test-crops", "1",
                                             "--edit-samples", "1", "--edit-heldout-per-family", "1"],
         ("already exists", "--overwrite")),

    # --- issue 17: every number checked (NaN, infinities, beyond the ranges), also numbers read from files
    Case("infer_cfg_image_nan", "infer.py", _infer("photo.png", "out/x.png", "--edit", "x", "--cfg-image", "nan"),
         ("--cfg-image", "nan")),
    Case("infer_cfg_text_inf", "infer.py", _infer("photo.png", "out/x.png", "--edit", "x", "--cfg-text", "inf"),
         ("--cfg-text", "inf")),
    Case("infer_cfg_text_minus_inf", "infer.py", _infer("photo.png", "out/x.png", "--edit", "x", "--cfg-text",
                                                        "-inf"), ("--cfg-text",)),
    Case("infer_seed_negative", "infer.py", _infer("photo.png", "out/x.png", "--edit", "x", "--seed", "-1"),
         ("--seed",)),
    Case("infer_max_side_huge", "infer.py", _infer("photo.png", "out/x.png", *GAN, "--max-side", "99999999"),
         ("--max-side",)),
    Case("infer_editor_defaults_nan", "infer.py", _infer("photo.png", "out/x.png", "--skip-stylize", "--edit", "x",
                                                         "--editor", "{ws}/models/editor_nan", *FAST_EDIT),
         ("edit_defaults.json", "--cfg-image", "nan")),
    Case("gan_seed_negative", "train_gan.py", [*UNPAIRED, "--seed", "-1"], ("--seed",)),
    Case("gan_lr_inf", "train_gan.py", [*UNPAIRED, "--lr-generator", "inf"], ("--lr-generator",)),
    Case("gan_decay_above_1", "train_gan.py", [*UNPAIRED, "--lr-decay-fraction", "1.5"], ("--lr-decay-fraction",)),
    Case("edit_beta_nan", "train_edit.py", [*EDIT_TRAIN, "--adam_beta1", "nan"], ("--adam_beta1",)),
    Case("edit_local_rank_below", "train_edit.py", [*EDIT_TRAIN, "--local_rank", "-2"], ("--local_rank",)),
    Case("stylize_overlap_nan", "-m stylize_gan", ["--checkpoint", "{ws}/models/gen.safetensors", "--input",
                                                   "{ws}/images/photo.png", "--output", "{ws}/out/x.png",
                                                   "--overlap", "nan"], ("--overlap",)),
    Case("fewstep_weight_nan", "-m edit_diffusion.fewstep", ["--editor", "{ws}/models/editor", "--base", "x",
                                                             "--distilled", "y", "--output", "{ws}/out/fs",
                                                             "--weight", "nan"], ("--weight",)),
    Case("eval_seed_negative", "-m demo.evaluate", ["--gan", "{ws}/models/gen.safetensors", "--seed", "-5"],
         ("--seed",)),
    # --- issue 17: memory that grows with a number is capped before any work (the limit in the message)
    Case("infer_variants_100000", "infer.py", _infer("photo.png", "out/x.png", "--edit", "x", "--variants",
                                                     "100000"), ("--variants", "64")),
    Case("infer_resolution_huge", "infer.py", _infer("photo.png", "out/x.png", "--edit", "x", "--resolution",
                                                     "100000"), ("--resolution", "4096")),
    Case("infer_batch_size_huge", "infer.py", _infer("photo.png", "out/x.png", "--edit", "x", "--batch-size",
                                                     "100000"), ("--batch-size",)),
    Case("infer_full_size_too_many_pixels", "infer.py", _infer("huge.jpg", "out/x.png", *GAN, "--max-side", "0"),
         ("huge.jpg", "MP", "--max-side")),
    Case("stylize_tile_huge", "-m stylize_gan", ["--checkpoint", "{ws}/models/gen.safetensors", "--input",
                                                 "{ws}/images/photo.png", "--output", "{ws}/out/x.png",
                                                 "--tile", "100000"], ("--tile", "2048")),
    Case("gan_batch_huge", "train_gan.py", [*UNPAIRED, "--batch-size", "100000"], ("--batch-size", "1024")),
    Case("gan_image_size_huge", "train_gan.py", [*UNPAIRED, "--image-size", "100000"], ("--image-size", "4096")),
    Case("edit_batch_huge", "train_edit.py", [*EDIT_TRAIN, "--train_batch_size", "100000"], ("--train_batch_size",)),
    Case("edit_workers_huge", "train_edit.py", [*EDIT_TRAIN, "--dataloader_num_workers", "1000"],
         ("--dataloader_num_workers",)),
    Case("app_upload_pixels_huge", "app.py", ["--max-upload-pixels", "1000000000000"], ("--max-upload-pixels",)),
    # --- issue 17: no silent overwrites (same stem: a.png and a.jpg.png; an unresolvable clash is refused)
    Case("infer_folder_same_stem", "infer.py", _infer("same_stem", "out/stem_out", *GAN), rc=0, words=("wrote",),
         creates=("out/stem_out", "out/stem_out/a.png", "out/stem_out/a.jpg.png"),
         check=_size_is("out/stem_out/a.jpg.png", PHOTO)),
    Case("infer_folder_same_stem_clash", "infer.py", _infer("same_stem_clash", "out/clash_out", *GAN),
         ("a.jpg.png", "both", "rename")),
    Case("stylize_folder_same_stem", "-m stylize_gan", ["--checkpoint", "{ws}/models/gen.safetensors", "--input",
                                                        "{ws}/images/same_stem", "--output", "{ws}/out/s1_out"],
         rc=0, creates=("out/s1_out", "out/s1_out/a.jpg", "out/s1_out/a.png")),
    Case("gan_into_bundled", "train_gan.py", [*UNPAIRED, *TINY_GAN_TRAIN, "--checkpoint-dir", "checkpoints/gan"],
         ("--checkpoint-dir", "bundled", "--allow-overwrite-bundled")),
    Case("edit_into_bundled", "train_edit.py", [*EDIT_MODEL, "--train_data_dir", "{ws}/edit_data", "--output_dir",
                                                "checkpoints/editor"], ("--output_dir", "--allow-overwrite-bundled")),
    # --- issue 17: damaged or untrusted training checkpoints (one line naming the file; no payload runs)
    Case("edit_resume_damaged_optimizer", "train_edit.py", [*EDIT_MODEL, "--train_data_dir", "{ws}/edit_data",
                                                            "--output_dir", "{ws}/runs/edit_bad",
                                                            "--resume_from_checkpoint", "latest"],
         ("optimizer.bin", "damaged")),
    Case("edit_resume_evil_random_states", "train_edit.py", [*EDIT_MODEL, "--train_data_dir", "{ws}/edit_data",
                                                             "--output_dir", "{ws}/runs/edit_evil",
                                                             "--resume_from_checkpoint", "latest"],
         ("random_states_0.pkl", "refused")),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return build_workspace(tmp_path_factory.mktemp("bad_input"))


def _expand(argv: list[str], ws: Path) -> list[str]:
    return [a.replace("{ws}", str(ws)) for a in argv]


@pytest.fixture(scope="module")
def results(workspace, tmp_path_factory) -> dict[str, dict]:
    """Run every case (one runner process, one forked child per case)."""
    scratch = tmp_path_factory.mktemp("runner")
    cases = [{"id": c.id, "target": c.target, "argv": _expand(c.argv, workspace), "cwd": str(REPO),
              "watch": str(workspace)} for c in CASES]
    (scratch / "cases.json").write_text(json.dumps(cases))
    proc = subprocess.run([sys.executable, str(RUNNER), str(scratch / "cases.json"), str(scratch / "results.json")],
                          env=ENV, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {r["id"]: r for r in json.loads((scratch / "results.json").read_text())}


def assert_user_error(result: dict, words: tuple[str, ...]) -> None:
    """Exit 2, stderr is one `error: ...` line containing `words`, no traceback."""
    err = result["stderr"]
    assert "Traceback" not in err, err
    assert result["returncode"] == 2, (result["returncode"], err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    missing = [word for word in words if word.lower() not in lines[0].lower()]
    assert not missing, f"{missing} not in {lines[0]!r}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_entry_point_case(case: Case, results, workspace):
    result = results[case.id]
    if case.rc == 2:
        assert_user_error(result, case.words)
    else:
        assert result["returncode"] == case.rc, result["stderr"][-2000:]
        assert "Traceback" not in result["stderr"], result["stderr"]
        for word in case.words:
            assert word in result["stdout"], (word, result["stdout"])
    assert result["changed"] == sorted(case.changes), "pre-existing files were modified"
    assert result["deleted"] == [], "pre-existing files were deleted"
    assert set(result["created"]) <= set(case.creates), f"unexpected new files {result['created']}"
    if case.rc == 0:
        assert set(case.creates) <= set(result["created"]), f"expected outputs missing: {result['created']}"
    assert not (workspace / "PWNED").exists(), "a pickle payload ran"
    if case.check is not None:
        case.check(workspace)


@pytest.mark.parametrize("target,argv,word", [
    ("train_gan.py", ["--data-dir", "x", "--dataset", "y", "--epochs", "-1"], "--epochs"),
    ("-m demo.build", ["--out", "x", "--size", "0"], "--size"),
    ("infer.py", ["--input", "{ws}/images/text.png", "--output", "{ws}/out/y.png", *GAN], "not a readable image"),
])
def test_runner_matches_python(target, argv, word, workspace):
    """The forked runner reports what a plain `python ...` start reports."""
    cmd = [sys.executable, *target.split()] if target.startswith("-m") else [sys.executable, target]
    proc = subprocess.run([*cmd, *_expand(argv, workspace)], env=ENV, cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert_user_error({"returncode": proc.returncode, "stderr": proc.stderr}, (word,))
