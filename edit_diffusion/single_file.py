"""Single-file editors beyond SD 1.x / 2.x: which family a `.safetensors` / `.ckpt` holds, told from its keys and
shapes alone (the safetensors header; a pickle only through `weights_only=True`), and loading the SDXL
InstructPix2Pix and FLUX.1 Kontext [dev] ones. The file gives the denoiser, converted by diffusers' own
`UNet2DConditionModel` / `FluxTransformer2DModel.from_single_file`; its config and the other models (VAE, text
encoders, tokenizers, scheduler) come from the family's reference repo (hub cache, else download) or from a local
diffusers folder (`--original_config`), in the stock pipeline of that family. (BFL ships Kontext as a
transformer-only file, and diffusers' pipeline-level `from_single_file` refuses a file without a VAE.)"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from common.checkpoints import load_weights_any
from common.errors import UserInputError

from .families import FAMILIES

SINGLE_FILE_EXTS = (".ckpt", ".safetensors", ".pt", ".pth", ".bin")
SDXL_IP2P, KONTEXT = "StableDiffusionXLInstructPix2PixPipeline", "FluxKontextPipeline"
LDM_UNET = "model.diffusion_model."  # every original-format (LDM / SGM) checkpoint keeps its UNet here
# SDXL's UNet embeds the pooled text and the size conditioning here (diffusers' add_embedding); SD 1.x / 2.x have none
SDXL_ADD_EMBEDDING = LDM_UNET + "label_emb.0.0.weight"
LDM_CONV_IN = LDM_UNET + "input_blocks.0.0.weight"
# A FLUX.1 transformer in BFL's layout (bare, or under LDM_UNET as ComfyUI saves it) ...
FLUX_BFL = ("double_blocks.0.img_attn.norm.key_norm.scale", LDM_UNET + "double_blocks.0.img_attn.norm.key_norm.scale")
# ... or in diffusers' own (a transformer/ folder's weights as one file); [dev] models have the guidance embedding
FLUX_DIFFUSERS = ("x_embedder.weight", "time_text_embed.text_embedder.linear_1.weight",
                  "single_transformer_blocks.0.proj_mlp.weight")
FLUX_GUIDANCE = "time_text_embed.guidance_embedder.linear_1.weight"
FLUX_VARIANTS = {384: "flux-fill", 128: "flux-depth"}  # x_embedder input features of the non-editing variants
# keys of the models a full checkpoint holds beside its denoiser (VAE, text encoders, EMA copy)
NOT_DENOISER = ("first_stage_model.", "conditioner.", "cond_stage_model.", "text_encoders.", "vae.", "model_ema.")
SINGLE_FILE_FORMS = ("single files load as SD 1.x / 2.x or SDXL InstructPix2Pix (a UNet with 8 input channels) and "
                     "FLUX.1 Kontext [dev] (a FLUX.1 transformer with the guidance embedding); other editors (e.g. "
                     "Qwen/Qwen-Image-Edit) load from a hub id or a diffusers folder with model_index.json")


@dataclass(frozen=True)
class SingleFile:
    """What a family's single file replaces in its pipeline, and where everything else comes from."""
    component: str    # the pipeline component built from the file
    model_class: str  # the diffusers class whose from_single_file converts it
    reference: str    # hub id with the configs and the other models


SINGLE_FILES = {
    SDXL_IP2P: SingleFile("unet", "UNet2DConditionModel", "diffusers/sdxl-instructpix2pix-768"),
    KONTEXT: SingleFile("transformer", "FluxTransformer2DModel", "black-forest-labs/FLUX.1-Kontext-dev"),
}


def header_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A single file's tensors: for safetensors the header only (shapes as meta tensors), a pickle through
    `weights_only=True` (a malicious one is refused)."""
    if path.suffix.lower() not in SINGLE_FILE_EXTS:
        raise UserInputError(f"{path}: unsupported checkpoint type {path.suffix!r} "
                             f"(expected a diffusers folder or one of {', '.join(SINGLE_FILE_EXTS)})")
    if path.suffix.lower() != ".safetensors":
        return load_weights_any(path)
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {k: torch.empty(handle.get_slice(k).get_shape(), device="meta") for k in handle.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise UserInputError(f"{path}: not a readable safetensors file ({err})") from None


def flux_kind(tensors: dict) -> str | None:
    """diffusers' name of a FLUX transformer's variant (flux-dev, flux-schnell, flux-fill, ...), None if none."""
    if any(k in tensors for k in FLUX_BFL):
        from diffusers.loaders.single_file_utils import infer_diffusers_model_type
        return infer_diffusers_model_type(tensors)
    if all(k in tensors for k in FLUX_DIFFUSERS):
        if FLUX_GUIDANCE not in tensors:
            return "flux-schnell"
        return FLUX_VARIANTS.get(tensors["x_embedder.weight"].shape[1], "flux-dev")
    return None


def classify(tensors: dict, path: Path) -> str | None:
    """The FAMILIES key of the editor a single file holds (SDXL InstructPix2Pix, FLUX.1 Kontext), None for an
    SD 1.x / 2.x file (loading.py's own path); other SDXL and FLUX models are refused in one line.
    FLUX.1 Kontext [dev] and the text-to-image FLUX.1 [dev] have the same keys and shapes: a [dev] transformer
    loads as Kontext."""
    if SDXL_ADD_EMBEDDING in tensors and LDM_CONV_IN in tensors:
        channels = tensors[LDM_CONV_IN].shape[1]
        if channels == 8:  # noisy latents ++ the input image's latents (InstructPix2Pix §3.2)
            return SDXL_IP2P
        raise UserInputError(f"{path}: an SDXL checkpoint whose UNet takes {channels} input channels (text-to-image "
                             f"4, inpainting 9), not an InstructPix2Pix editor (8); {SINGLE_FILE_FORMS}")
    kind = flux_kind(tensors)
    if kind == "flux-dev":
        return KONTEXT
    if kind is not None:
        raise UserInputError(f"{path}: a '{kind}' checkpoint; {SINGLE_FILE_FORMS}")
    return None


def file_family(path: Path) -> str | None:
    """classify() of a single file on disk."""
    return classify(header_tensors(path), path)


def denoiser_params(path: Path) -> int:
    """Parameters of the file's denoiser (a full checkpoint's VAE and text encoders left out)."""
    import math
    return sum(math.prod(t.shape) for k, t in header_tensors(path).items() if not k.startswith(NOT_DENOISER))


def reference_folder(path: Path, class_name: str, original_config: str | None) -> tuple[str, Path]:
    """(where the other models load from, the local folder with its configs): --original_config, or the family's
    reference repo (its configs from the hub cache, else downloaded)."""
    from .memory import local_folder
    label, reference = FAMILIES[class_name].label, SINGLE_FILES[class_name].reference
    if original_config is not None:
        if not Path(original_config).is_dir():
            raise UserInputError(f"--original_config {original_config}: not a folder (give a local {label} "
                                 "diffusers folder with model_index.json)")
        return original_config, Path(original_config)
    folder = local_folder(reference, "hub")
    if folder is None:
        raise UserInputError(f"{path}: a {label} single file takes its config and the other models (VAE, text "
                             f"encoders) from {reference}, which is not in the Hugging Face cache and the hub cannot "
                             f"be reached; download it where there is internet, or pass --original_config <local "
                             f"{label} diffusers folder> (python -m edit_diffusion)")
    return reference, folder


def file_weights_params(path: Path, class_name: str, original_config: str | None) -> dict[str, int]:
    """component -> parameters for the memory check: the reference's components, the denoiser the file's."""
    from .memory import weights_params
    _, folder = reference_folder(path, class_name, original_config)
    params = weights_params(folder) if (folder / "model_index.json").is_file() else {}
    return {**params, SINGLE_FILES[class_name].component: denoiser_params(path)}


def pipeline_from_file(path: Path, class_name: str, dtype: torch.dtype, original_config: str | None):
    """The stock `class_name` pipeline with the file's denoiser; the rest from reference_folder's source."""
    import diffusers

    from .loading import _hub_error, _one_line
    spec, label = SINGLE_FILES[class_name], FAMILIES[class_name].label
    source, folder = reference_folder(path, class_name, original_config)
    try:  # the config from the local folder: what fails here is the file itself
        denoiser = getattr(diffusers, spec.model_class).from_single_file(
            str(path), config=str(folder), subfolder=spec.component, torch_dtype=dtype, local_files_only=True)
    except Exception as err:  # noqa: BLE001 - diffusers' converters raise many types; one line says which
        raise UserInputError(f"{path}: cannot load as the {spec.component} of {label} with {source}'s config "
                             f"({_one_line(err)})") from None
    local = source != spec.reference
    try:  # the other models: from the cache, else downloaded (the file's component is not fetched)
        return getattr(diffusers, class_name).from_pretrained(source, dtype=dtype, local_files_only=local,
                                                              **{spec.component: denoiser})
    except Exception as err:  # noqa: BLE001 - hub client / loading errors come in many types
        if local:
            raise UserInputError(f"--original_config {source}: cannot load its {label} models ({_one_line(err)})") \
                from None
        raise UserInputError(f"{path}: the other models of a {label} single file come from "
                             f"{_hub_error(source, err)}") from None
