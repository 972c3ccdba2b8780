"""Unit tests of stage 2 (InstructPix2Pix): tokenizer, surgery parity, conditioning dropout, dataset
formats, training targets, dual guidance against the stock pipeline, settings and config checks."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionInstructPix2PixPipeline
from PIL import Image

from common.errors import UserInputError
from edit_diffusion.config import EditTrainConfig
from edit_diffusion.data import (Columns, EditDataset, joint_crop_flip, read_triplets, to_pil, tokenize_prompts)
from edit_diffusion.dropout import apply_conditioning_dropout, dropout_masks
from edit_diffusion.editor import EditSettings, dual_guidance, working_size
from edit_diffusion.scratch import build_text_encoder, build_unet, build_vae, calibrate_scaling_factor
from edit_diffusion.step import training_target
from edit_diffusion.surgery import expand_conv_in
from edit_diffusion.tokenizer import load_clip_tokenizer

from _edit_fixtures import TINY_TEXT, TINY_UNET, TINY_VAE



@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return load_clip_tokenizer(tmp_path_factory.mktemp("tok"))


def test_rebuilt_clip_tokenizer_matches_sd15(tokenizer):
    ids = tokenizer("a photograph of an astronaut riding a horse").input_ids
    assert ids == [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77


# --- surgery ----------------------------------------------------------------------------------------------

def test_surgery_parity_with_zero_extra_channels():
    torch.manual_seed(0)
    unet = build_unet(TINY_UNET).eval()
    z, hidden, t = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 32), torch.tensor([10, 500])
    with torch.no_grad():
        reference = unet(z, t, hidden).sample
        old_weight, old_bias = unet.conv_in.weight.clone(), unet.conv_in.bias.clone()
        expand_conv_in(unet)
        widened = unet(torch.cat([z, torch.randn(2, 4, 8, 8) * 10], 1), t, hidden).sample
    assert unet.config.in_channels == 8 and unet.conv_in.in_channels == 8
    assert torch.equal(unet.conv_in.weight[:, :4], old_weight) and torch.equal(unet.conv_in.bias, old_bias)
    assert torch.count_nonzero(unet.conv_in.weight[:, 4:]) == 0
    torch.testing.assert_close(widened, reference, rtol=1e-5, atol=1e-5)


def test_surgery_leaves_8_channel_base_untouched():
    unet = build_unet({**TINY_UNET, "in_channels": 8})
    conv, before = unet.conv_in, {k: v.clone() for k, v in unet.state_dict().items()}
    assert expand_conv_in(unet) is unet and unet.conv_in is conv
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())


# --- conditioning dropout (§3.2.1) ----------------------------------------------------------------------

def test_dropout_fractions_match_paper():
    n, p = 200_000, 0.05
    keep_text, keep_image = dropout_masks(n, p, torch.Generator().manual_seed(0))
    text_only = (~keep_text & keep_image).float().mean().item()
    image_only = (keep_text & ~keep_image).float().mean().item()
    both = (~keep_text & ~keep_image).float().mean().item()
    tol = 4 * (p * (1 - p) / n) ** 0.5  # 4 standard errors
    for frac in (text_only, image_only, both):
        assert abs(frac - p) < tol
    # seeded: same generator seed, same masks
    again = dropout_masks(n, p, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], keep_text) and torch.equal(again[1], keep_image)


def test_dropout_replaces_with_null_text_and_zero_latents():
    n = 60
    ids = torch.arange(1, n + 1)[:, None].repeat(1, 4)     # (60, 4), no zeros
    null = torch.zeros(4, dtype=ids.dtype)
    latents = torch.rand(n, 4, 2, 2) + 0.5                 # no zeros
    text, image = apply_conditioning_dropout(ids, null, latents, 1 / 3, torch.Generator().manual_seed(1))
    keep_text, keep_image = dropout_masks(n, 1 / 3, torch.Generator().manual_seed(1))
    # dropped rows are exactly the null prompt / zero latents, kept rows exactly the inputs
    assert torch.equal(text[~keep_text], null.expand(int((~keep_text).sum()), -1))
    assert torch.equal(text[keep_text], ids[keep_text])
    assert torch.equal(image[~keep_image], torch.zeros_like(latents[~keep_image]))
    assert torch.equal(image[keep_image], latents[keep_image])
    # at p = 1/3 the three cases (text only, image only, both) fill the batch: no sample keeps both
    cases = {"text": ~keep_text & keep_image, "image": keep_text & ~keep_image, "both": ~keep_text & ~keep_image}
    assert not (keep_text & keep_image).any() and all(c.sum() >= 10 for c in cases.values())


# --- datasets ----------------------------------------------------------------------------------------------

def _img(path, color, size=(40, 30)):
    Image.new("RGB", size, color).save(path)


def test_metadata_jsonl_folder(tmp_path):
    rows = []
    for i in range(3):
        _img(tmp_path / f"in{i}.png", (i * 50, 0, 0))
        _img(tmp_path / f"out{i}.png", (0, i * 50, 0))
        rows.append({"input_image": f"in{i}.png", "edit_prompt": f"edit {i}", "edited_image": f"out{i}.png"})
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    triplets = read_triplets(train_data_dir=str(tmp_path))
    assert [t.edit_prompt for t in triplets] == ["edit 0", "edit 1", "edit 2"]
    assert triplets[1].edited_image == tmp_path / "out1.png"


def test_metadata_custom_columns_and_missing_column(tmp_path):
    _img(tmp_path / "a.png", "red")
    _img(tmp_path / "b.png", "blue")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"src": "a.png", "text": "t", "dst": "b.png"}))
    assert len(read_triplets(train_data_dir=str(tmp_path), columns=Columns("src", "text", "dst"))) == 1
    with pytest.raises(UserInputError, match="missing column"):
        read_triplets(train_data_dir=str(tmp_path))


def test_instructpix2pix_generated_layout(tmp_path):
    for name, edit, seeds in (("0001", "make it snowy", (11, 12)), ("0002", "turn it red", (5,))):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "prompt.json").write_text(json.dumps({"input": "a house", "edit": edit, "output": "x"}))
        for seed in seeds:
            _img(folder / f"{seed}_0.jpg", "gray")
            _img(folder / f"{seed}_1.jpg", "white")
    triplets = read_triplets(train_data_dir=str(tmp_path))
    assert [(t.edit_prompt, t.input_image.name) for t in triplets] == [
        ("make it snowy", "11_0.jpg"), ("make it snowy", "12_0.jpg"), ("turn it red", "5_0.jpg")]


def test_save_to_disk_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    images = [Image.new("RGB", (32, 32), c) for c in ("red", "green")]
    ds = datasets.Dataset.from_dict({"input_image": images, "edit_prompt": ["a", "b"], "edited_image": images[::-1]},
                                    features=datasets.Features({"input_image": datasets.Image(),
                                                                "edit_prompt": datasets.Value("string"),
                                                                "edited_image": datasets.Image()}))
    ds.save_to_disk(str(tmp_path / "ds"))
    triplets = read_triplets(dataset_name=str(tmp_path / "ds"))
    assert [t.edit_prompt for t in triplets] == ["a", "b"]
    assert to_pil(triplets[0].input_image).getpixel((0, 0)) == (255, 0, 0)
    assert to_pil(triplets[1].edited_image).getpixel((0, 0)) == (255, 0, 0)


def test_empty_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserInputError, match="no triplets"):
        read_triplets(train_data_dir=str(tmp_path))


def test_joint_crop_flip_keeps_images_aligned():
    gradient = torch.arange(48 * 64, dtype=torch.float32).view(1, 1, 48, 64).expand(2, 3, 48, 64).clone()
    for seed in range(10):
        pair = joint_crop_flip(gradient, 32, center=False, flip=True, rng=random.Random(seed))
        assert pair.shape == (2, 3, 32, 32) and torch.equal(pair[0], pair[1])


def test_dataset_items_and_truncation_reported_once(tokenizer, tmp_path, caplog):
    _img(tmp_path / "a.png", "red", size=(60, 40))
    _img(tmp_path / "b.png", "blue", size=(60, 40))
    long = " ".join(["word"] * 120)
    rows = [{"input_image": "a.png", "edit_prompt": long, "edited_image": "b.png"}] * 3
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with caplog.at_level("WARNING"):
        ds = EditDataset(read_triplets(train_data_dir=str(tmp_path)), tokenizer, 32, random_flip=True)
    assert sum("truncated" in r.message for r in caplog.records) == 1
    item = ds[0]
    assert item["input_pixels"].shape == (3, 32, 32) and item["input_ids"].shape == (77,)
    assert item["input_pixels"].min() >= -1 and item["edited_pixels"][2].mean() > 0.9  # blue channel
    assert tokenize_prompts(tokenizer, ["x"]).shape == (1, 77)


# --- loss target ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_training_target(prediction_type):
    sched = DDPMScheduler(prediction_type=prediction_type)
    x0, noise, t = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2), torch.tensor([1, 400, 999])
    target = training_target(prediction_type, sched, x0, noise, t)
    alpha = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = {"epsilon": noise, "sample": x0,
                "v_prediction": alpha.sqrt() * noise - (1 - alpha).sqrt() * x0}[prediction_type]
    torch.testing.assert_close(target, expected)


# --- dual guidance against the stock pipeline ------------------------------------------------------------------

def tiny_pipeline(tokenizer, prediction_type="epsilon"):
    torch.manual_seed(0)
    unet = expand_conv_in(build_unet(TINY_UNET))
    vae = build_vae(TINY_VAE)
    text_encoder = build_text_encoder(TINY_TEXT)
    scheduler = DDIMScheduler(prediction_type=prediction_type, timestep_spacing="trailing")
    return StableDiffusionInstructPix2PixPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                                  scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                                  requires_safety_checker=False)


def test_dual_guidance_matches_stock_pipeline(tokenizer):
    """Our sampler (the real path: engine.denoise, 3 branches) against the stock pipeline for one step."""
    from edit_diffusion import engine
    from edit_diffusion.editor import Editor
    pipe = tiny_pipeline(tokenizer)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():  # surgery zero-inits the image channels: give them weights so c_I matters
        pipe.unet.conv_in.weight[:, 4:].normal_(0, 0.2)
    captured = []
    pipe.unet.register_forward_hook(lambda mod, args, out: captured.append(out[0].detach().clone()))
    image = Image.new("RGB", (16, 16), (200, 30, 60))
    s_t, s_i = 5.0, 1.7
    out = pipe("make it blue", image=image, num_inference_steps=1, guidance_scale=s_t, image_guidance_scale=s_i,
               generator=torch.Generator().manual_seed(3), output_type="latent").images
    editor = Editor.from_pipeline(pipe, defaults={})
    cond = engine.conditioning(editor.text_encoder, editor.tokenizer, editor.vae, editor.processor, image,
                               "make it blue", editor.device, editor.dtype)
    ours = engine.denoise(editor.unet, editor.new_scheduler("ddim"), cond, [torch.Generator().manual_seed(3)], 1,
                          s_t, s_i, rows_per_call=3)
    torch.testing.assert_close(ours, out, rtol=1e-4, atol=1e-5)
    text_img, img, uncond = captured[0].chunk(3)  # the pipeline's batch order
    torch.testing.assert_close(captured[1], captured[0], rtol=1e-5, atol=1e-6)  # ours: same rows, same order
    # and the formula is eq. 3 of the paper
    guided = dual_guidance(text_img, img, uncond, s_t, s_i)
    torch.testing.assert_close(guided, uncond + s_i * (img - uncond) + s_t * (text_img - img))


# --- settings, sizes, config -------------------------------------------------------------------------------------

def test_edit_settings_validation():
    with pytest.raises(UserInputError, match="silently turns off ALL guidance"):
        EditSettings(cfg_image=0.5)
    with pytest.raises(UserInputError, match="--steps"):
        EditSettings(steps=0)
    with pytest.raises(UserInputError, match="--resolution"):
        EditSettings(resolution=0)
    with pytest.raises(UserInputError, match="--scheduler"):
        EditSettings(scheduler="pndm")
    assert EditSettings(cfg_image=1.0).cfg_image == 1.0


def test_working_size_keeps_aspect_caps_and_rounds():
    assert working_size(1000, 500, 512, 8) == (512, 256)
    assert working_size(300, 451, 512, 8) == (304, 448)
    assert working_size(5, 3, 512, 16) == (16, 16)
    w, h = working_size(1920, 1080, 512, 64)
    assert w == 512 and h % 64 == 0 and abs(w / h - 1920 / 1080) < 0.25


def test_train_config_errors_name_the_flag():
    base = dict(unet_config="tiny", vae_config="tiny", text_encoder_config="tiny", train_data_dir="x")
    with pytest.raises(ValueError, match="--pretrained_model_name_or_path"):
        EditTrainConfig(train_data_dir="x")
    with pytest.raises(ValueError, match="--conditioning_dropout_prob"):
        EditTrainConfig(**base, conditioning_dropout_prob=0.5)
    with pytest.raises(ValueError, match="--resolution"):
        EditTrainConfig(**base, resolution=30)
    with pytest.raises(ValueError, match="--default_scheduler euler_a"):
        EditTrainConfig(**base, prediction_type="sample", default_scheduler="euler_a")
    with pytest.raises(ValueError, match="--validation_prompt"):
        EditTrainConfig(**base, validation_image="x.png")
    with pytest.raises(ValueError, match="--rescale_betas_zero_snr needs --prediction_type"):
        EditTrainConfig(**base, rescale_betas_zero_snr=True)  # epsilon (the default) cannot start from x_T


def test_zero_terminal_snr_reaches_pure_noise_in_training_and_every_editing_scheduler():
    from edit_diffusion.editor import SCHEDULERS
    from edit_diffusion.loading import noise_scheduler_from
    from edit_diffusion.scratch import build_noise_scheduler
    # SD's schedule leaves sqrt(alpha_bar_T) = 0.068 of the image in x_T: the leak the option removes
    assert float(build_noise_scheduler("sample").alphas_cumprod[-1]) ** 0.5 > 0.06
    zero = build_noise_scheduler("sample", rescale_betas_zero_snr=True)
    assert float(zero.alphas_cumprod[-1]) == 0.0
    x0 = torch.ones(1, 4, 8, 8)
    noisy = zero.add_noise(x0, torch.zeros_like(x0), torch.tensor([999]))
    assert float(noisy.abs().max()) < 1e-6  # at T nothing of the image is left
    # the saved pipeline scheduler is built from this config: every editing sampler must keep the schedule
    for name, cls in SCHEDULERS.items():
        assert float(cls.from_config(zero.config).alphas_cumprod[-1]) < 1e-6, name
    from_base = noise_scheduler_from(DDIMScheduler(), "v_prediction", rescale_betas_zero_snr=True)
    assert float(from_base.alphas_cumprod[-1]) == 0.0 and from_base.config.prediction_type == "v_prediction"


def test_vae_scaling_factor_calibrated_to_unit_variance():
    torch.manual_seed(0)
    vae = build_vae(TINY_VAE)
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    factor = calibrate_scaling_factor(vae, images)
    assert vae.config.scaling_factor == factor
    with torch.no_grad():
        z = vae.encode(images).latent_dist.sample() * factor
    assert 0.8 < float(z.std()) < 1.25
    assert np.isfinite(factor)
