"""Model loading errors (missing path, wrong kind of model, random bytes, malicious pickle, text-to-image
model as editor) and few-step adaptation arithmetic (full distilled model and LCM-LoRA)."""
from __future__ import annotations

import json

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionInstructPix2PixPipeline
from safetensors.torch import save_file

from common.errors import UserInputError
from edit_diffusion.editor import load_editor
from edit_diffusion.fewstep import cli as fewstep_cli
from edit_diffusion.fewstep import task_arithmetic
from edit_diffusion.lora import add_unet_lora
from edit_diffusion.scratch import build_text_encoder, build_unet, build_vae
from edit_diffusion.surgery import expand_conv_in
from edit_diffusion.tokenizer import load_clip_tokenizer

from _edit_fixtures import TINY_TEXT, TINY_UNET, TINY_VAE



def save_pipeline(folder, unet, seed=0):
    torch.manual_seed(seed)
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=build_vae(TINY_VAE), text_encoder=build_text_encoder(TINY_TEXT), tokenizer=load_clip_tokenizer(folder.parent / "tok"),
        unet=unet, scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """base (4-ch) -> editor (8-ch, fine-tuned = perturbed) and distilled (4-ch, perturbed) folders."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    base = build_unet(TINY_UNET)
    editor = build_unet(TINY_UNET)
    editor.load_state_dict(base.state_dict())
    expand_conv_in(editor)
    distilled = build_unet(TINY_UNET)
    distilled.load_state_dict(base.state_dict())
    with torch.no_grad():
        for p in list(editor.parameters()) + list(distilled.parameters()):
            p.add_(torch.randn_like(p) * 0.01)
    return {"base": save_pipeline(root / "base", base), "editor": save_pipeline(root / "editor", editor),
            "distilled": save_pipeline(root / "distilled", distilled), "root": root}


def test_missing_path(tmp_path):
    with pytest.raises(UserInputError, match="no such file or folder"):
        load_editor(str(tmp_path / "nope.safetensors"))
    with pytest.raises(UserInputError, match="no such file or folder"):
        load_editor(str(tmp_path / "nope"))


def test_gan_safetensors_is_the_wrong_kind_of_model(tmp_path):
    gan = tmp_path / "generator.safetensors"
    save_file({"encoder.0.weight": torch.zeros(8, 3, 3, 3), "decoder.4.bias": torch.zeros(3)}, str(gan))
    with pytest.raises(UserInputError, match="not a Stable Diffusion checkpoint"):
        load_editor(str(gan))


def test_random_bytes_file_refused(tmp_path):
    junk = tmp_path / "model.ckpt"
    junk.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(UserInputError, match="refused|not a"):
        load_editor(str(junk))
    junk2 = tmp_path / "model.safetensors"
    junk2.write_bytes(b"\x00" * 1000)
    with pytest.raises(UserInputError, match="not a readable safetensors"):
        load_editor(str(junk2))


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}, "payload": _Exploit(str(marker))}, str(bad))
    marker.unlink(missing_ok=True)  # torch.save does not run __reduce__'s callable, but be explicit
    with pytest.raises(UserInputError, match="refused"):
        load_editor(str(bad))
    assert not marker.exists()


def test_text_to_image_folder_refused_as_editor(models):
    with pytest.raises(UserInputError, match="text-to-image model"):
        load_editor(str(models["base"]))


def test_non_diffusers_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(UserInputError, match="not a Stable Diffusion diffusers folder"):
        load_editor(str(tmp_path))


def test_fewstep_arithmetic_full_distilled_model(models, tmp_path):
    out = fewstep_cli(["--editor", str(models["editor"]), "--base", str(models["base"]), "--distilled",
                       str(models["distilled"]), "--weight", "0.7", "--output", str(tmp_path / "fast")])
    load = lambda name: StableDiffusionInstructPix2PixPipeline.from_pretrained(str(name), safety_checker=None).unet
    w_edit, w_base, w_dist = (load(models[k]).state_dict() for k in ("editor", "base", "distilled"))
    fast = StableDiffusionInstructPix2PixPipeline.from_pretrained(str(out), safety_checker=None)
    w_new = fast.unet.state_dict()
    for key in w_edit:
        if key.startswith("conv_in."):
            assert torch.equal(w_new[key], w_edit[key])
        else:
            torch.testing.assert_close(w_new[key], w_edit[key] + 0.7 * (w_dist[key] - w_base[key]))
    assert type(fast.scheduler).__name__ == "LCMScheduler"
    assert json.loads((out / "edit_defaults.json").read_text()) == {"steps": 4, "scheduler": "lcm"}


def test_fewstep_lcm_lora_is_fused_into_base_first(models, tmp_path):
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(str(models["base"]), safety_checker=None)
    torch.manual_seed(1)
    add_unet_lora(pipe.unet, rank=2)
    with torch.no_grad():
        for name, p in pipe.unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    from edit_diffusion.lora import save_unet_lora
    lora_file = save_unet_lora(pipe.unet, tmp_path / "lcm_lora")
    pipe.unet.fuse_lora()
    pipe.unet.unload_lora()
    w_fused = pipe.unet.state_dict()

    out = fewstep_cli(["--editor", str(models["editor"]), "--base", str(models["base"]), "--distilled",
                       str(lora_file), "--output", str(tmp_path / "fast")])
    load = lambda name: StableDiffusionInstructPix2PixPipeline.from_pretrained(str(name), safety_checker=None).unet
    w_edit, w_base, w_new = load(models["editor"]).state_dict(), load(models["base"]).state_dict(), load(out).state_dict()
    changed = 0
    for key in w_edit:
        expected = w_edit[key] if key.startswith("conv_in.") else w_edit[key] + (w_fused[key] - w_base[key])
        torch.testing.assert_close(w_new[key], expected, rtol=1e-5, atol=1e-6)
        changed += int(not torch.equal(w_fused[key], w_base[key]))
    assert changed > 0  # the LoRA really moved some attention weights


def test_task_arithmetic_rejects_other_architectures():
    w = {"conv_in.weight": torch.zeros(2, 8, 3, 3), "a": torch.zeros(3)}
    with pytest.raises(UserInputError, match="shapes"):
        task_arithmetic(w, {"a": torch.zeros(4)}, {"a": torch.zeros(4)}, 1.0)
    with pytest.raises(UserInputError, match="missing"):
        task_arithmetic(w, {}, {}, 1.0)


def _tiny_triplets(folder):
    from PIL import Image
    folder.mkdir()
    Image.new("RGB", (32, 32), (200, 40, 40)).save(folder / "a.png")
    Image.new("RGB", (32, 32), (40, 40, 200)).save(folder / "b.png")
    (folder / "metadata.jsonl").write_text(json.dumps(
        {"input_image": "a.png", "edit_prompt": "make it blue", "edited_image": "b.png"}))
    return folder


def test_finetune_4_channel_base_gets_surgery(models, tmp_path):
    import train_edit
    data = _tiny_triplets(tmp_path / "data")
    result = train_edit.cli(["--pretrained_model_name_or_path", str(models["base"]), "--train_data_dir", str(data),
                             "--resolution", "32", "--train_batch_size", "1", "--max_train_steps", "2",
                             "--output_dir", str(tmp_path / "out"), "--seed", "0"])
    assert result["step"] == 2
    pipe = load_editor(str(tmp_path / "out"))
    assert pipe.unet.config.in_channels == 8
    assert type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"  # epsilon model default


def test_lora_finetune_of_8_channel_editor(models, tmp_path):
    import train_edit
    data = _tiny_triplets(tmp_path / "data")
    out = tmp_path / "lora"
    train_edit.cli(["--pretrained_model_name_or_path", str(models["editor"]), "--train_data_dir", str(data),
                    "--resolution", "32", "--train_batch_size", "1", "--max_train_steps", "2", "--lora_rank", "2",
                    "--learning_rate", "1e-2", "--output_dir", str(out), "--seed", "0"])
    pipe = load_editor(str(models["editor"])).pipeline()  # the stock pipeline's LoRA API over the editor's modules
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    pipe.load_lora_weights(str(out / "pytorch_lora_weights.safetensors"))
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    fused = load_editor(str(out)).unet.state_dict()  # the complete folder holds the fused weights
    for key, value in pipe.unet.state_dict().items():
        torch.testing.assert_close(fused[key], value, rtol=1e-4, atol=1e-5)
    assert any(not torch.equal(before[k], v) for k, v in pipe.unet.state_dict().items())
    with pytest.raises(SystemExit):  # LoRA cannot start from a 4-channel base
        train_edit.cli(["--pretrained_model_name_or_path", str(models["base"]), "--train_data_dir", str(data),
                        "--max_train_steps", "1", "--lora_rank", "2", "--output_dir", str(tmp_path / "x")])


def test_hub_id_without_network_is_one_line():
    with pytest.raises(UserInputError, match="no network") as err:
        # an id the session's hub-cache fixture (tests/hub_cache.py) never writes, whatever ran before
        load_editor("nobody-offline/instruct-pix2pix")
    assert "\n" not in str(err.value)


def test_typo_in_local_path_is_not_a_hub_error(tmp_path):
    with pytest.raises(UserInputError, match="no such file or folder"):
        load_editor(str(tmp_path / "runs" / "editr"))
