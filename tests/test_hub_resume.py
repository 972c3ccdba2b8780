"""`--resume_from_checkpoint` on a checkpoint-N folder written the way diffusers' train_instruct_pix2pix.py
writes it (accelerate save_state with the script's save hook: UNet and EMA as save_pretrained folders unet/ and
unet_ema/, accelerate's optimizer / scheduler / RNG files, no trainer_state.json) continues that run: UNet,
EMA (its decay and step), optimizer moments, LR schedule and the step count."""
from __future__ import annotations

import os

import pytest
import torch
from accelerate import Accelerator
from diffusers import UNet2DConditionModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file

import hub_cache as hub
import train_edit
from edit_diffusion.surgery import expand_conv_in

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def write_diffusers_checkpoint(out, step: int) -> dict:
    """checkpoint-<step> as the recipe saves it, after `step` real AdamW steps on an SD 1.5 UNet (8-channel
    surgery, EMA with model_cls / model_config); the weights are then moved away from the base so that a
    resume from the base instead would show."""
    accelerator = Accelerator()
    unet = UNet2DConditionModel.from_pretrained(hub.SD15, subfolder="unet")
    expand_conv_in(unet)
    ema_unet = EMAModel(unet.parameters(), model_cls=UNet2DConditionModel, model_config=unet.config)

    def save_model_hook(models, weights, output_dir):  # the recipe's hook
        if accelerator.is_main_process:
            ema_unet.save_pretrained(os.path.join(output_dir, "unet_ema"))
            for model in models:
                model.save_pretrained(os.path.join(output_dir, "unet"))
                weights.pop()

    handle = accelerator.register_save_state_pre_hook(save_model_hook)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=5e-05, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-08)
    lr_scheduler = get_scheduler("constant", optimizer=optimizer, num_warmup_steps=0, num_training_steps=100)
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    gen = torch.Generator().manual_seed(0)
    for _ in range(step):
        sample = torch.randn(1, 8, 8, 8, generator=gen)
        loss = unet(sample, 10, torch.randn(1, 77, 32, generator=gen)).sample.pow(2).mean()
        accelerator.backward(loss)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
        ema_unet.step(unet.parameters())
    with torch.no_grad():  # "trained" weights and EMA, far from the base
        for p, s in zip(unet.parameters(), ema_unet.shadow_params):
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
            s.add_(torch.randn(s.shape, generator=gen) * 0.05)
    accelerator.save_state(str(out / f"checkpoint-{step}"))
    handle.remove()
    return {"unet": {k: v.clone() for k, v in accelerator.unwrap_model(unet).state_dict().items()},
            "ema": [s.clone() for s in ema_unet.shadow_params]}


def test_resume_a_diffusers_recipe_checkpoint(hub_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "instruct-pix2pix-model"  # the recipe's default --output_dir
    saved = write_diffusers_checkpoint(out, step=2)
    assert sorted(p.name for p in (out / "checkpoint-2").iterdir()) == [
        "optimizer.bin", "random_states_0.pkl", "scheduler.bin", "unet", "unet_ema"]
    result = train_edit.cli([f"--pretrained_model_name_or_path={hub.SD15}", f"--dataset_name={hub.DATASET}",
                             "--resolution=16", "--train_batch_size=4", "--learning_rate=5e-05",
                             "--lr_warmup_steps=0", "--use_ema", "--seed=42", f"--output_dir={out}",
                             "--resume_from_checkpoint=checkpoint-2", "--max_train_steps=3",
                             "--checkpointing_steps=1"])
    assert result["step"] == 3
    ours = out / "checkpoint-3"
    optimizer = torch.load(ours / "optimizer.bin", weights_only=True)
    assert {float(s["step"]) for s in optimizer["state"].values()} == {3.0}  # the recipe's 2 Adam steps, then 1
    assert torch.load(ours / "scheduler.bin", weights_only=True)["last_epoch"] == 3
    weights = load_file(str(ours / "model.safetensors"))
    for key, value in saved["unet"].items():  # one Adam step (|change| <= lr per weight) from the saved UNet
        torch.testing.assert_close(weights[key], value, rtol=0, atol=2e-4)
    # EMA: the saved shadow weights, one more update with the saved run's own decay schedule
    decay = EMAModel.from_pretrained(str(out / "checkpoint-2" / "unet_ema"), UNet2DConditionModel).get_decay(3)
    ema = load_file(str(ours / "ema.safetensors"))
    params = [weights[k] for k, _ in UNet2DConditionModel.from_pretrained(
        str(out / "checkpoint-2" / "unet")).named_parameters()]
    for i, (shadow, param) in enumerate(zip(saved["ema"], params)):
        torch.testing.assert_close(ema[f"shadow.{i:05d}"], shadow - (1 - decay) * (shadow - param), rtol=0, atol=1e-5)
