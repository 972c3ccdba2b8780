"""Load Stable Diffusion / InstructPix2Pix components from a hub id, a local diffusers folder, or a single
original-format `.ckpt` / `.safetensors` file, with one-line errors for a missing path, the wrong kind
of model, or no network. Never `trust_remote_code`; pickles only through `weights_only=True`."""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (AutoencoderKL, DDPMScheduler, StableDiffusionInstructPix2PixPipeline,
                       UNet2DConditionModel)
from transformers import CLIPTextModel, CLIPTokenizer

from common.checkpoints import load_weights_any
from common.errors import UserInputError

SINGLE_FILE_EXTS = (".ckpt", ".safetensors", ".pt", ".pth", ".bin")
# Every original-format SD checkpoint stores its UNet under this prefix (LDM's DiffusionWrapper).
LDM_UNET_PREFIX = "model.diffusion_model."
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class _TinyVaeIsExpected(logging.Filter):
    """Two diffusers warnings about the TAESD-style AutoencoderTiny that are not the user's problem: the SD
    pipelines annotate `vae: AutoencoderKL` although they run it as is (latents via `retrieve_latents`), and
    AutoencoderTiny saves a `block_out_channels` entry (for the pipelines' scale factor) that its own
    constructor then reports as unexpected. Only those two are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        wrong_type = message.startswith("Expected types for vae") and "AutoencoderTiny" in message
        own_entry = "'block_out_channels'" in message and "were passed to AutoencoderTiny" in message
        return not (wrong_type or own_entry)


for _name in ("diffusers.pipelines.pipeline_utils", "diffusers.configuration_utils"):
    logging.getLogger(_name).addFilter(_TinyVaeIsExpected())

NO_NETWORK = ("could not connect", "couldn't connect", "connection", "offline", "network", "resolve",
              "cannot find the requested files in the local cache", "local_files_only", "hf_hub_offline",
              "max retries", "timed out", "name or service not known")


@dataclass
class Components:
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: object  # any diffusers scheduler; training uses its config for a DDPMScheduler


def source_kind(model: str) -> str:
    """'folder', 'file' or 'hub'; a local-looking path that does not exist is a user error."""
    path = Path(model)
    if path.is_dir():
        return "folder"
    if path.is_file():
        return "file"
    # "owner/name" is a hub id unless it clearly points into the local file system (a typo in a local path
    # must not turn into a network error)
    local_looking = (path.suffix.lower() in SINGLE_FILE_EXTS or model.startswith((".", "/", "~"))
                     or not HUB_ID.match(model) or path.parent.is_dir() and str(path.parent) != ".")
    if local_looking:
        raise UserInputError(f"{model}: no such file or folder")
    return "hub"


def _hub_error(model: str, err: Exception) -> UserInputError:
    text = str(err).lower()
    if any(word in text for word in NO_NETWORK) or os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return UserInputError(f"{model}: cannot download from the Hugging Face hub (no network?); download it "
                              "where there is internet and pass the local folder")
    return UserInputError(f"{model}: cannot load from the hub ({type(err).__name__}: {' '.join(str(err).split())[:200]})")


def check_diffusers_folder(folder: Path) -> None:
    """A Stable Diffusion diffusers folder has unet/, vae/, text_encoder/ and tokenizer/ configs."""
    needed = ["unet/config.json", "vae/config.json", "text_encoder/config.json"]
    missing = [n for n in needed if not (folder / n).is_file()]
    if missing:
        raise UserInputError(f"{folder}: not a Stable Diffusion diffusers folder (missing {', '.join(missing)})")
    if not (folder / "tokenizer").is_dir():
        raise UserInputError(f"{folder}: not a Stable Diffusion diffusers folder (missing tokenizer/)")


def check_single_file(path: Path) -> None:
    """Refuse files that are not original-format Stable Diffusion checkpoints, reading only what is safe:
    the safetensors header, or a pickle through `weights_only=True` (a malicious pickle is refused)."""
    if path.suffix.lower() not in SINGLE_FILE_EXTS:
        raise UserInputError(f"{path}: unsupported checkpoint type {path.suffix!r} "
                             f"(expected a diffusers folder or one of {', '.join(SINGLE_FILE_EXTS)})")
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError, safe_open
        try:
            with safe_open(str(path), framework="pt") as handle:
                keys = list(handle.keys())
        except (SafetensorError, OSError, ValueError) as err:
            raise UserInputError(f"{path}: not a readable safetensors file ({err})") from None
    else:
        keys = list(load_weights_any(path).keys())
    if not any(k.startswith(LDM_UNET_PREFIX) for k in keys):
        raise UserInputError(f"{path}: not a Stable Diffusion checkpoint (no '{LDM_UNET_PREFIX}*' weights; "
                             "is it a different kind of model?)")


def load_pipeline(model: str, original_config: str | None = None, dtype: torch.dtype | None = None
                  ) -> StableDiffusionInstructPix2PixPipeline:
    """An InstructPix2Pix pipeline (safety checker off) from any supported source; the UNet may still
    have 4 input channels (a text-to-image base), callers decide what that means."""
    kind = source_kind(model)
    kwargs = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    if kind == "folder":
        check_diffusers_folder(Path(model))
        try:
            return StableDiffusionInstructPix2PixPipeline.from_pretrained(model, local_files_only=True, **kwargs)
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise UserInputError(f"{model}: cannot load the diffusers folder ({' '.join(str(err).split())[:300]})") from None
    if kind == "file":
        path = Path(model)
        check_single_file(path)
        if original_config is not None and not Path(original_config).is_dir():
            raise UserInputError(f"--original_config {original_config}: not a folder (give a diffusers folder "
                                 "whose configs match the checkpoint)")
        try:
            return StableDiffusionInstructPix2PixPipeline.from_single_file(
                str(path), config=original_config, local_files_only=original_config is not None, **kwargs)
        except Exception as err:  # noqa: BLE001 - from_single_file raises many types; report in one line
            if original_config is None:
                raise UserInputError(f"{model}: a single-file checkpoint needs its diffusers configs; offline, pass "
                                     "--original_config <local diffusers folder of the same architecture>") from None
            raise UserInputError(f"{model}: cannot load the checkpoint ({' '.join(str(err).split())[:300]})") from None
    from diffusers.utils import logging as diffusers_logging
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # our one-line error replaces its multi-line connection notes
    try:
        return StableDiffusionInstructPix2PixPipeline.from_pretrained(model, **kwargs)
    except Exception as err:  # noqa: BLE001 - hub client errors come in many types
        raise _hub_error(model, err) from None
    finally:
        diffusers_logging.set_verbosity(verbosity)


def load_components(model: str, original_config: str | None = None) -> Components:
    """The five components of a Stable Diffusion model, for fine-tuning."""
    pipe = load_pipeline(model, original_config)
    return Components(unet=pipe.unet, vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                      scheduler=pipe.scheduler)


def noise_scheduler_from(scheduler, prediction_type: str | None = None, beta_schedule: str | None = None,
                         rescale_betas_zero_snr: bool = False) -> DDPMScheduler:
    """The training-time DDPM schedule of a model (same betas as its inference scheduler)."""
    overrides = {"rescale_betas_zero_snr": True} if rescale_betas_zero_snr else {}
    if prediction_type is not None:
        overrides["prediction_type"] = prediction_type
    if beta_schedule is not None:
        overrides["beta_schedule"] = beta_schedule
    return DDPMScheduler.from_config(scheduler.config, **overrides)
