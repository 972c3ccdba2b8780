"""Single-file SDXL InstructPix2Pix and FLUX.1 Kontext editors (`--editor editor.safetensors`): the family is told
from the file's keys, the file's denoiser loads through diffusers' converters with the reference repo's config
and other models (the tiny offline repos of tests/hub_cache_modern.py), and the edit keeps the input's size."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import hub_cache_modern as modern
import infer
from common.errors import UserInputError
from edit_diffusion import memory, single_file
from edit_diffusion.editor import load_editor
from edit_diffusion.families import FamilyEditor
from edit_diffusion.loading import load_pipeline
from hub_cache import perturbed
from ldm_layout import ldm_state_dict
from test_modern_editors import WORK, one_thread_with_timeout, photo  # noqa: F401 - fixture

SDXL, KONTEXT = single_file.SDXL_IP2P, single_file.KONTEXT
REPOS = {SDXL: modern.SDXL_IP2P, KONTEXT: modern.KONTEXT}


def write_single_file(stock, class_name: str, path):
    """The tiny repo's denoiser, perturbed (so the loaded weights show where they came from), as one file:
    SDXL in SGM's original layout with its VAE beside it, Kontext's transformer in diffusers' layout (diffusers'
    BFL-layout converter is fixed to FLUX.1's full width, 3072, so a tiny one cannot take that layout)."""
    if class_name == SDXL:
        denoiser = perturbed(stock.unet, 0.05, seed=11)
        tensors = ldm_state_dict(denoiser, stock.vae)
    else:
        denoiser = perturbed(stock.transformer, 0.05, seed=12)
        tensors = {k: v.clone() for k, v in denoiser.state_dict().items()}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return denoiser


@pytest.mark.parametrize("class_name", [SDXL, KONTEXT])
def test_single_file_editor_loads_its_denoiser_and_keeps_the_input_size(class_name, modern_hub_cache, tmp_path):
    stock = modern_hub_cache["pipes"][REPOS[class_name]]
    path = tmp_path / "editor.safetensors"
    denoiser = write_single_file(stock, class_name, path)
    component = single_file.SINGLE_FILES[class_name].component
    assert single_file.file_family(path) == class_name
    # the memory check counts the reference's models with the file's denoiser (a full file's VAE left out)
    assert single_file.file_weights_params(path, class_name, None) == memory.weights_params(
        modern_hub_cache[REPOS[class_name]])
    source = tmp_path / "in.png"
    photo().save(source)
    written = infer.main(infer.parse_args([
        "--input", str(source), "--output", str(tmp_path / "out.png"), "--skip-stylize", "--editor", str(path),
        "--edit", "make it red", "--steps", "2", "--resolution", str(WORK), "--seed", "0", "--device", "cpu",
        "--dtype", "fp32"]))
    assert Image.open(written[0]).size == photo().size
    # --original_config: a local folder of the family instead of the reference repo
    folder = str(modern_hub_cache[REPOS[class_name]]) if class_name == KONTEXT else None
    editor = load_editor(str(path), "cpu", "fp32", original_config=folder)
    assert isinstance(editor, FamilyEditor) and type(editor.pipe) is type(stock)
    loaded = getattr(editor.pipe, component).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in denoiser.state_dict().items())  # the file's weights ...
    assert all(torch.equal(a, b) for a, b in zip(editor.pipe.vae.state_dict().values(),
                                                 stock.vae.state_dict().values()))  # ... the reference's VAE
    with pytest.raises(UserInputError, match="single file; it loads as an editor"):
        load_pipeline(str(path))  # the SD 1.5 path (train_edit.py) refuses it in one line


def meta(shapes: dict) -> dict:
    return {k: torch.empty(shape, device="meta") for k, shape in shapes.items()}


LDM = "model.diffusion_model."
BFL = {"double_blocks.0.img_attn.norm.key_norm.scale": (128,), "time_in.in_layer.weight": (3072, 256)}
DIFFUSERS_FLUX = {"x_embedder.weight": (3072, 64), "time_text_embed.text_embedder.linear_1.weight": (3072, 768),
                  "single_transformer_blocks.0.proj_mlp.weight": (12288, 3072)}
GUIDANCE = "time_text_embed.guidance_embedder.linear_1.weight"


@pytest.mark.parametrize("shapes, expected", [
    ({LDM + "input_blocks.0.0.weight": (320, 8, 3, 3), LDM + "label_emb.0.0.weight": (1280, 2816)}, SDXL),
    ({LDM + "input_blocks.0.0.weight": (320, 4, 3, 3), LDM + "label_emb.0.0.weight": (1280, 2816)},
     "an SDXL checkpoint whose UNet takes 4 input channels"),
    ({LDM + "input_blocks.0.0.weight": (320, 8, 3, 3)}, None),  # SD 1.5 InstructPix2Pix: loading.py's own path
    ({**BFL, "guidance_in.in_layer.bias": (3072,), "img_in.weight": (3072, 64)}, KONTEXT),
    ({**{LDM + k: v for k, v in BFL.items()}, LDM + "guidance_in.in_layer.bias": (3072,),
      LDM + "img_in.weight": (3072, 64)}, KONTEXT),  # ComfyUI's prefixed layout
    ({**BFL, "img_in.weight": (3072, 64)}, "a 'flux-schnell' checkpoint"),
    ({**BFL, "guidance_in.in_layer.bias": (3072,), "img_in.weight": (3072, 384)}, "a 'flux-fill' checkpoint"),
    ({**DIFFUSERS_FLUX, GUIDANCE: (3072, 256)}, KONTEXT),
    ({**DIFFUSERS_FLUX, GUIDANCE: (3072, 256), "x_embedder.weight": (3072, 128)}, "a 'flux-depth' checkpoint"),
    ({"transformer_blocks.0.img_mod.1.weight": (4, 4)}, None),  # Qwen-Image's: refused by loading.py
])
def test_the_family_is_told_from_the_keys(shapes, expected, tmp_path):
    if expected in (SDXL, KONTEXT, None):
        assert single_file.classify(meta(shapes), tmp_path / "x.safetensors") == expected
    else:
        with pytest.raises(UserInputError) as err:
            single_file.classify(meta(shapes), tmp_path / "x.safetensors")
        assert expected in str(err.value) and str(err.value).endswith(single_file.SINGLE_FILE_FORMS)


def test_reference_not_cached_is_one_line(modern_hub_cache, tmp_path, monkeypatch):
    """Offline with neither the reference repo cached nor --original_config: what to do, in one line."""
    spec = single_file.SINGLE_FILES[KONTEXT]
    monkeypatch.setitem(single_file.SINGLE_FILES, KONTEXT, dataclasses.replace(spec, reference="nobody/no-such-repo"))
    path = tmp_path / "kontext.safetensors"
    write_single_file(modern_hub_cache["pipes"][modern.KONTEXT], KONTEXT, path)
    with pytest.raises(UserInputError) as err:
        load_editor(str(path), "cpu", "fp32")
    assert "nobody/no-such-repo, which is not in the Hugging Face cache" in str(err.value)
    assert "--original_config" in str(err.value) and "\n" not in str(err.value)
