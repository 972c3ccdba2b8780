"""The README's few-step command with its three hub ids (editor, base, LCM-LoRA repo), and a full distilled
UNet repo: the output folder loads in infer.py and its UNet is the editor's plus the distillation's task
vector, computed independently from the LoRA file (kohya keys: (alpha / rank) up @ down)."""
from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

import hub_cache as hub
import infer
from edit_diffusion.fewstep import SKIPPED_PREFIX
from edit_diffusion.fewstep import cli as fewstep_cli


def unet_of(folder) -> dict[str, torch.Tensor]:
    return UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet").state_dict()


def test_fewstep_with_the_three_hub_ids_loads_in_infer(hub_cache, tmp_path, real_photo):
    out = tmp_path / "fewstep"
    fewstep_cli(["--editor", hub.IP2P, "--base", hub.SD15, "--distilled", hub.LCM_LORA, "--output", str(out)])
    got, editor = unet_of(out), hub_cache["editor_unet"].state_dict()
    lora = hub_cache["lora_state"]
    lora_keys = {k[len("lora_unet_"):-len(".alpha")] for k in lora if k.endswith(".alpha")}
    changed = set()
    for name, _ in hub_cache["editor_unet"].named_modules():
        if name.replace(".", "_") in lora_keys:
            expected = editor[f"{name}.weight"] + hub.lora_delta(lora, name)  # W_edit + (W_base + LoRA - W_base)
            torch.testing.assert_close(got[f"{name}.weight"], expected, rtol=0, atol=1e-5)
            changed.add(f"{name}.weight")
    assert len(changed) == len(lora_keys) > 20  # every LoRA module found and applied once
    assert all(torch.equal(got[k], v) for k, v in editor.items() if k not in changed)  # conv_in, norms, biases

    photo = tmp_path / "photo.png"
    real_photo.resize((32, 32)).save(photo)
    written = infer.cli(["--input", str(photo), "--output", str(tmp_path / "edit.png"), "--skip-stylize",
                         "--edit", "make it snowy", "--editor", str(out), "--seed", "0", "--device", "cpu"])
    assert written[0].is_file()  # 4 LCM steps: the folder's edit_defaults.json


def test_fewstep_with_a_full_distilled_unet_repo(hub_cache, tmp_path):
    out = tmp_path / "fewstep-unet"
    fewstep_cli(["--editor", hub.IP2P, "--base", hub.SD15, "--distilled", hub.LCM_UNET, "--output", str(out),
                 "--weight", "0.5"])
    got, editor = unet_of(out), hub_cache["editor_unet"].state_dict()
    base, distilled = hub_cache["sd_unet"].state_dict(), hub_cache["lcm_unet"].state_dict()
    for key, value in editor.items():
        expected = value if key.startswith(SKIPPED_PREFIX) else value + 0.5 * (distilled[key] - base[key])
        torch.testing.assert_close(got[key], expected, rtol=0, atol=1e-6)
