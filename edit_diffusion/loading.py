"""Load Stable Diffusion / InstructPix2Pix components from a hub id, a local diffusers folder, or a single
original-format `.ckpt` / `.safetensors` file, with one-line errors for a missing path, the wrong kind
of model, or no network. Never `trust_remote_code`; pickles only through `weights_only=True`."""
from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (AutoencoderKL, DDPMScheduler, StableDiffusionInstructPix2PixPipeline,
                       UNet2DConditionModel)
from transformers import CLIPTextModel, CLIPTokenizer

from common.errors import UserInputError

from .families import FAMILIES
from .single_file import LDM_UNET, SINGLE_FILE_EXTS, SINGLE_FILE_FORMS, classify, header_tensors

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
CLIP_ID = "openai/clip-vit-large-patch14"  # the text encoder of SD 1.x (LDM's FrozenCLIPEmbedder)
# diffusers' model types (infer_diffusers_model_type) that StableDiffusionInstructPix2PixPipeline.from_single_file
# builds; SDXL InstructPix2Pix and FLUX.1 Kontext files load through single_file.py, any other is refused by name
SD_SINGLE_FILE_TYPES = ("v1", "v2", "inpainting", "inpainting_v2", "instruct-pix2pix")


class _TinyVaeIsExpected(logging.Filter):
    """Three diffusers warnings about components of the bundled editor that are not the user's problem: the SD
    pipelines annotate `vae: AutoencoderKL` and `text_encoder: CLIPTextModel` although they run a TAESD-style
    AutoencoderTiny (latents via `retrieve_latents`) and a BERT encoder such as all-MiniLM-L6-v2 (its
    `(ids)[0]` is the token states, as CLIP's) as they are; and AutoencoderTiny saves a `block_out_channels`
    entry (for the pipelines' scale factor) that its own constructor then reports as unexpected. Only those
    are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        wrong_type = (message.startswith("Expected types for vae") and "AutoencoderTiny" in message) or \
            (message.startswith("Expected types for text_encoder") and "BertModel" in message)
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


def _hub_error(model: str, err: Exception, hub: HubOptions | None = None) -> UserInputError:
    text = str(err).lower()
    revisions = {r for r in (hub.revision, hub.unet_revision) if r} if hub else set()
    what = model + (f" (revision {', '.join(sorted(revisions))})" if revisions else "")
    if hub is not None and hub.variant and "variant" in text:
        return UserInputError(f"{what}: has no '{hub.variant}' variant files (--variant {hub.variant})")
    if any(word in text for word in NO_NETWORK) or os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return UserInputError(f"{what}: not in the Hugging Face cache and the hub cannot be reached (offline or "
                              "no network); download it where there is internet, or pass a local folder")
    return UserInputError(f"{what}: cannot load from the hub ({type(err).__name__}: {' '.join(str(err).split())[:200]})")


def check_diffusers_folder(folder: Path) -> None:
    """A Stable Diffusion diffusers folder has unet/, vae/, text_encoder/ and tokenizer/ configs."""
    needed = ["unet/config.json", "vae/config.json", "text_encoder/config.json"]
    missing = [n for n in needed if not (folder / n).is_file()]
    if missing:
        raise UserInputError(f"{folder}: not a Stable Diffusion diffusers folder (missing {', '.join(missing)})")
    if not (folder / "tokenizer").is_dir():
        raise UserInputError(f"{folder}: not a Stable Diffusion diffusers folder (missing tokenizer/)")


def check_single_file(path: Path) -> None:
    """Refuse files that are not original-format Stable Diffusion 1.x / 2.x checkpoints, reading only what is safe:
    the safetensors header, or a pickle through `weights_only=True` (a malicious pickle is refused)."""
    tensors = header_tensors(path)
    family = classify(tensors, path)
    if family is not None:
        raise UserInputError(f"{path}: a {FAMILIES[family].label} single file; it loads as an editor (--editor); "
                             "fine-tuning starts from its hub id or a diffusers folder")
    if not any(k.startswith(LDM_UNET) for k in tensors):
        raise UserInputError(f"{path}: not a Stable Diffusion checkpoint (no '{LDM_UNET}*' weights; "
                             f"is it a different kind of model?); {SINGLE_FILE_FORMS}")
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type
    model_type = infer_diffusers_model_type(tensors)
    if model_type not in SD_SINGLE_FILE_TYPES:
        raise UserInputError(f"{path}: a '{model_type}' checkpoint; {SINGLE_FILE_FORMS}")


@dataclass
class HubOptions:
    """Where hub files come from (diffusers' --revision / --variant / --cache_dir; ignored for local paths)."""
    revision: str | None = None
    variant: str | None = None        # e.g. fp16: the `*.fp16.safetensors` files (weights stay in the model's dtype)
    cache_dir: str | None = None
    unet_revision: str | None = None  # --non_ema_revision: the UNet's own revision

    def kwargs(self) -> dict:
        return {k: v for k, v in (("revision", self.revision), ("variant", self.variant),
                                  ("cache_dir", self.cache_dir)) if v is not None}


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())[:300]


def find_original_yaml(path: Path, original_config_file: str | None) -> Path | None:
    """The LDM yaml of a single file: the one given, else `<checkpoint stem>.yaml` beside it (the convention of
    the original release and of the web UIs), else None."""
    if original_config_file is not None:
        yaml = Path(original_config_file)
        if not yaml.is_file() or yaml.suffix.lower() not in (".yaml", ".yml"):
            raise UserInputError(f"--original_config_file {original_config_file}: not a .yaml file (give the "
                                 "original config the checkpoint was trained with, e.g. configs/generate.yaml)")
        return yaml
    beside = path.with_suffix(".yaml")
    return beside if beside.is_file() else None


def pipeline_from_ldm_yaml(path: Path, yaml: Path, **kwargs) -> StableDiffusionInstructPix2PixPipeline:
    """An original-format checkpoint described by its LDM yaml: UNet and VAE built from the yaml, the text
    encoder's config and the tokenizer from openai/clip-vit-large-patch14 (the model LDM's FrozenCLIPEmbedder
    loads; hub cache or download), the noise schedule from the yaml's betas. Built component by component:
    diffusers' own yaml path for pipelines without a cached diffusers config fails in 0.42."""
    from diffusers import EulerAncestralDiscreteScheduler
    from diffusers.loaders.single_file_utils import (create_diffusers_clip_model_from_ldm, fetch_original_config,
                                                     load_single_file_checkpoint)
    config = fetch_original_config(str(yaml), local_files_only=True)
    params = config["model"]["params"]
    checkpoint = load_single_file_checkpoint(str(path), local_files_only=True)
    dtype = kwargs.pop("torch_dtype", None)
    unet = UNet2DConditionModel.from_single_file(checkpoint, original_config=config, torch_dtype=dtype)
    vae = AutoencoderKL.from_single_file(checkpoint, original_config=config, torch_dtype=dtype)
    try:
        text_encoder = create_diffusers_clip_model_from_ldm(CLIPTextModel, checkpoint, torch_dtype=dtype,
                                                            is_legacy_loading=True)
        tokenizer = CLIPTokenizer.from_pretrained(CLIP_ID)
    except Exception as err:  # noqa: BLE001 - hub client errors come in many types
        raise _hub_error(CLIP_ID, err) from None
    scheduler = EulerAncestralDiscreteScheduler(
        num_train_timesteps=params.get("timesteps", 1000), beta_start=params.get("linear_start", 0.00085),
        beta_end=params.get("linear_end", 0.012), beta_schedule="scaled_linear",
        prediction_type="v_prediction" if params.get("parameterization") == "v" else "epsilon")
    return StableDiffusionInstructPix2PixPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                                  scheduler=scheduler, **kwargs)


def _load_single_file(model: str, original_config: str | None, original_config_file: str | None,
                      kwargs: dict) -> StableDiffusionInstructPix2PixPipeline:
    path = Path(model)
    check_single_file(path)
    if original_config is not None and not Path(original_config).is_dir():
        raise UserInputError(f"--original_config {original_config}: not a folder (give a diffusers folder "
                             "whose configs match the checkpoint; an LDM .yaml goes to --original_config_file)")
    yaml = None if original_config is not None else find_original_yaml(path, original_config_file)
    try:
        if yaml is not None:
            return pipeline_from_ldm_yaml(path, yaml, **kwargs)
        # without configs, diffusers infers the model type and reads that repo's configs (hub cache or download)
        return StableDiffusionInstructPix2PixPipeline.from_single_file(
            str(path), config=original_config, local_files_only=original_config is not None, **kwargs)
    except UserInputError:
        raise
    except Exception as err:  # noqa: BLE001 - from_single_file raises many types; report in one line
        if original_config is None and yaml is None:
            raise UserInputError(f"{model}: a single-file checkpoint needs its configs; offline, pass "
                                 "--original_config <local diffusers folder of the same architecture> or "
                                 "--original_config_file <its LDM .yaml>") from None
        raise UserInputError(f"{model}: cannot load the checkpoint ({_one_line(err)})") from None


def load_pipeline(model: str, original_config: str | None = None, dtype: torch.dtype | None = None,
                  hub: HubOptions | None = None, original_config_file: str | None = None
                  ) -> StableDiffusionInstructPix2PixPipeline:
    """An InstructPix2Pix pipeline (safety checker off) from any supported source; the UNet may still
    have 4 input channels (a text-to-image base), callers decide what that means."""
    kind = source_kind(model)
    hub = hub or HubOptions()
    kwargs = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if dtype is not None:
        kwargs["dtype"] = dtype  # diffusers 0.42 name (torch_dtype is deprecated)
    with _quiet_diffusers():
        if kind == "file":
            return _load_single_file(model, original_config, original_config_file, kwargs)
        if kind == "folder":
            check_diffusers_folder(Path(model))
        return _load_pretrained(model, kind, dtype, hub, kwargs)


@contextlib.contextmanager
def _quiet_diffusers():
    """diffusers' multi-line notes (offline fallbacks, legacy single-file loading) give way to our one-line
    errors; its errors still raise."""
    from diffusers.utils import logging as diffusers_logging
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(verbosity)


def _load_pretrained(model: str, kind: str, dtype, hub: HubOptions, kwargs: dict):
    """A diffusers folder or hub id (cache first; offline: cache only)."""
    try:
        if hub.variant is not None or hub.unet_revision is not None:
            # as the diffusers recipe: the UNet in full precision from its own revision, the rest per --variant
            kwargs["unet"] = UNet2DConditionModel.from_pretrained(
                model, subfolder="unet", revision=hub.unet_revision or hub.revision, cache_dir=hub.cache_dir,
                local_files_only=kind == "folder", **({"torch_dtype": dtype} if dtype is not None else {}))
        return StableDiffusionInstructPix2PixPipeline.from_pretrained(
            model, local_files_only=kind == "folder", **hub.kwargs(), **kwargs)
    except Exception as err:  # noqa: BLE001 - hub client errors come in many types
        if kind == "folder":
            raise UserInputError(f"{model}: cannot load the diffusers folder ({_one_line(err)})") from None
        raise _hub_error(model, err, hub) from None


def load_components(model: str, original_config: str | None = None, hub: HubOptions | None = None,
                    original_config_file: str | None = None) -> Components:
    """The five components of a Stable Diffusion model, for fine-tuning."""
    pipe = load_pipeline(model, original_config, hub=hub, original_config_file=original_config_file)
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
