"""Hub ids resolve offline through the libraries' own cache lookup (tests/hub_cache.py writes the cache):
pipelines, fp16 variants, revisions, the CLIP repo, the dataset; `infer.py --editor timbrooks/instruct-pix2pix`
and the web app's handler; original-format single files with their LDM yaml; missing ids in one line."""
from __future__ import annotations

import shutil

import pytest
import torch
from huggingface_hub import hf_hub_download

import hub_cache as hub
import infer
from common.errors import UserInputError
from edit_diffusion.loading import HubOptions, load_components, load_pipeline

CLIP_IDS = [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]  # the real tokenizer's, RESOURCES.md


def same_weights(module, reference) -> bool:
    ours, theirs = module.state_dict(), reference.state_dict()
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_every_id_resolves_offline_with_the_real_layout(hub_cache):
    import json

    import datasets
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTokenizer

    editor = load_pipeline(hub.IP2P)
    assert editor.unet.config.in_channels == 8 and type(editor.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert same_weights(editor.unet, hub_cache["editor_unet"])
    for repo in (hub.SD15, hub.RUNWAY):
        index = json.loads((hub_cache[repo] / "model_index.json").read_text())
        assert index["_class_name"] == "StableDiffusionPipeline"
        assert index["safety_checker"] == ["stable_diffusion", "StableDiffusionSafetyChecker"]
        assert index["feature_extractor"] == ["transformers", "CLIPImageProcessor"]
        assert (hub_cache[repo] / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    # a user's plain load (safety checker included) and the fp16 variant, as diffusers resolves them
    sd = StableDiffusionPipeline.from_pretrained(hub.SD15, variant="fp16", torch_dtype=torch.float16)
    assert sd.unet.dtype == torch.float16 and sd.safety_checker is not None and sd.unet.config.in_channels == 4
    assert CLIPTextConfig.from_pretrained(hub.CLIP).hidden_size == hub.TEXT["hidden_size"]
    text = "a photograph of an astronaut riding a horse"
    assert CLIPTokenizer.from_pretrained(hub.CLIP)(text).input_ids == CLIP_IDS
    assert editor.tokenizer(text).input_ids == CLIP_IDS
    rows = datasets.load_dataset(hub.DATASET, split="train")  # offline: from the datasets cache
    assert rows.column_names == ["input_image", "edit_prompt", "edited_image"] and len(rows) == hub.DATASET_ROWS


def test_revision_and_non_ema_revision(hub_cache):
    main = load_components(hub.SD15)
    assert same_weights(main.unet, hub_cache["sd_unet"])
    old = load_components(hub.SD15, hub=HubOptions(revision=hub.OLD_REVISION))
    assert same_weights(old.unet, hub_cache["old_unet"])
    # the recipe's --non_ema_revision: the UNet from that revision, everything else from --revision (main)
    mixed = load_components(hub.SD15, hub=HubOptions(unet_revision=hub.OLD_REVISION, variant="fp16"))
    assert same_weights(mixed.unet, hub_cache["old_unet"]) and mixed.unet.dtype == torch.float32
    half = hub_cache["parts"]["vae"].state_dict()["decoder.conv_out.weight"].half().float()
    assert torch.equal(mixed.vae.state_dict()["decoder.conv_out.weight"], half)  # fp16 files, upcast


def test_missing_ids_are_one_line_naming_the_id(hub_cache, tmp_path, capsys, real_photo):
    with pytest.raises(UserInputError, match="nobody/missing-editor: not in the Hugging Face cache"):
        load_pipeline("nobody/missing-editor")
    with pytest.raises(UserInputError, match=f"{hub.SD15} \\(revision 0{{40}}\\)"):
        load_pipeline(hub.SD15, hub=HubOptions(revision="0" * 40))
    photo = tmp_path / "photo.png"
    real_photo.resize((32, 32)).save(photo)
    with pytest.raises(SystemExit) as exc:
        infer.cli(["--input", str(photo), "--output", str(tmp_path / "out.png"), "--skip-stylize",
                   "--edit", "make it snowy", "--editor", "nobody/missing-editor"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and "nobody/missing-editor" in err


def test_infer_and_web_app_take_the_editor_hub_id(hub_cache, tmp_path, real_photo):
    from webapp import handlers
    from webapp.context import FIX, NO_STYLE, load_context

    photo = tmp_path / "photo.png"
    real_photo.resize((32, 32)).save(photo)
    out = tmp_path / "edited.png"
    written = infer.cli(["--input", str(photo), "--output", str(out), "--skip-stylize", "--edit", "make it snowy",
                         "--editor", hub.IP2P, "--steps", "2", "--seed", "0", "--device", "cpu"])
    assert written == [out] and out.is_file()
    ctx = load_context(editor=hub.IP2P, device="cpu")
    d = ctx.defaults
    request = handlers.EditRequest(
        image=str(photo), style=NO_STYLE, instruction="make it snowy", steps=2, steps_mode=FIX, cfg_text=7.5,
        cfg_text_mode=FIX, cfg_image=1.5, cfg_image_mode=FIX, seed=0, seed_mode=FIX, scheduler=d.scheduler,
        variants=1, resolution=d.resolution)
    stylized, edited, steps, *_ = handlers.edit(ctx, request)
    assert stylized is None or stylized.size == (32, 32)
    assert len(edited) == 1 and edited[0].size == (32, 32) and steps == 2


def test_original_format_single_file_with_its_yaml(hub_cache, tmp_path, monkeypatch):
    """The release's single file (LDM keys) + its configs/generate.yaml: UNet and VAE from the yaml, the text
    encoder's config and tokenizer from openai/clip-vit-large-patch14 in the cache; weights equal the
    diffusers-format repo's."""
    checkpoint = hf_hub_download(hub.IP2P, hub.IP2P_SINGLE_FILE)
    reference = load_pipeline(hub.IP2P)
    # the yaml route only: diffusers' config-repo route would find timbrooks/instruct-pix2pix in this cache too
    from edit_diffusion import loading

    def no_config_repo(*args, **kwargs):
        raise AssertionError("the yaml was not used")
    monkeypatch.setattr(loading.StableDiffusionInstructPix2PixPipeline, "from_single_file", no_config_repo)
    explicit = load_pipeline(checkpoint, original_config_file=str(hub_cache["ldm_yaml"]))
    beside = tmp_path / "ip2p.safetensors"  # <checkpoint>.yaml next to the file is found without the flag
    shutil.copy(checkpoint, beside)
    shutil.copy(hub_cache["ldm_yaml"], beside.with_suffix(".yaml"))
    found = load_pipeline(str(beside))
    for pipe in (explicit, found):
        for name in ("unet", "vae", "text_encoder"):
            assert same_weights(getattr(pipe, name), getattr(reference, name)), name
        assert pipe.unet.config.in_channels == 8 and pipe.vae.config.scaling_factor == 0.18215
        assert pipe.tokenizer("a photograph of an astronaut riding a horse").input_ids == CLIP_IDS
    with pytest.raises(UserInputError, match="--original_config_file .*not a .yaml file"):
        load_pipeline(checkpoint, original_config_file=str(tmp_path / "missing.yaml"))
