"""Our InstructPix2Pix sampler (edit_diffusion/engine.py) and the Editor: parity with the stock pipeline when
three branches are needed, fewer branches with the same math otherwise, chunking that never changes an
image, native-size editing, concurrency, limits and one-line memory errors."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline
from PIL import Image

from common.devices import resolve_device, resolve_dtype
from common.errors import UserInputError
from edit_diffusion import engine
from edit_diffusion.editor import SCHEDULERS, EditSettings, Editor, resolve_settings
from edit_diffusion.scratch import build_noise_scheduler, build_text_encoder, build_unet, build_vae
from edit_diffusion.surgery import expand_conv_in
from edit_diffusion.tokenizer import load_clip_tokenizer

from _edit_fixtures import TINY_TEXT, TINY_UNET, TINY_VAE

# The bundled editor's kind of VAE in miniature: TAESD-style, factor 1, no posterior.
TINY_TAESD = {"_class_name": "AutoencoderTiny", "encoder_block_out_channels": [8], "decoder_block_out_channels": [8],
              "num_encoder_blocks": [1], "num_decoder_blocks": [1], "latent_channels": 4}
INSTRUCTION = "make it look like winter"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return load_clip_tokenizer(tmp_path_factory.mktemp("tok"))


def make_editor(tokenizer, vae: dict = TINY_VAE, prediction: str = "epsilon", zero_snr: bool = False) -> Editor:
    """Seeded tiny components; the image channels of conv_in get weights so image guidance matters."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    unet = expand_conv_in(build_unet(TINY_UNET))
    with torch.no_grad():
        unet.conv_in.weight[:, 4:].normal_(0, 0.2)  # surgery zero-inits them: e(c_I, .) would equal e(0, .)
    scheduler = SCHEDULERS["ddim"].from_config(build_noise_scheduler(prediction, rescale_betas_zero_snr=zero_snr).config)
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=build_vae(vae), text_encoder=build_text_encoder(TINY_TEXT), tokenizer=tokenizer, unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return Editor.from_pipeline(pipe, defaults={})


@pytest.fixture(scope="module")
def editor(tokenizer):
    return make_editor(tokenizer)


def photo(size=(32, 24)) -> Image.Image:
    from skimage import data
    return Image.fromarray(data.astronaut()).resize(size, Image.BICUBIC)


def stock_arrays(ed: Editor, image, s: EditSettings) -> np.ndarray:
    """The stock pipeline on the same modules, seeds and scheduler (as edit_diffusion used to call it)."""
    pipe = ed.pipeline(s.scheduler)
    generators = [torch.Generator("cpu").manual_seed(s.seed + i) for i in range(s.num_variants)]
    return pipe([INSTRUCTION] * s.num_variants, image=[image] * s.num_variants, num_inference_steps=s.steps,
                guidance_scale=s.cfg_text, image_guidance_scale=s.cfg_image, generator=generators,
                output_type="np").images


def settings(ed, **kw) -> EditSettings:
    base = dict(steps=3, cfg_text=7.5, cfg_image=1.5, seed=11, scheduler="euler_a", num_variants=2)
    return resolve_settings(ed, EditSettings(**{**base, **kw}))


# --- parity with the stock pipeline ------------------------------------------------------------------------------

@pytest.mark.parametrize("scheduler,cfg_text,cfg_image", [
    ("euler_a", 7.5, 1.5),   # 3 branches, stochastic steps (per-variant generators in `step`)
    ("dpmpp", 7.5, 1.5),     # multistep history in the scheduler
    ("ddim", 7.5, 1.0),      # we run 2 branches, the stock pipeline 3: same math
    ("lcm", 1.0, 1.0),       # both 1 branch
])
def test_matches_stock_pipeline(editor, scheduler, cfg_text, cfg_image):
    image = photo()
    s = settings(editor, scheduler=scheduler, cfg_text=cfg_text, cfg_image=cfg_image)
    ours = editor.edit_arrays(image, INSTRUCTION, s)
    np.testing.assert_allclose(ours, stock_arrays(editor, image, s), atol=2e-5, rtol=0)


def test_matches_stock_pipeline_on_the_bundled_editor_kind(tokenizer):
    """AutoencoderTiny (no latent_dist, factor 1), x0 ("sample") prediction, zero-terminal-SNR, DDIM trailing."""
    ed = make_editor(tokenizer, vae=TINY_TAESD, prediction="sample", zero_snr=True)
    assert ed.vae_scale_factor == 1
    image = photo((16, 12))
    s = settings(ed, scheduler="ddim", num_variants=1)
    np.testing.assert_allclose(ed.edit_arrays(image, INSTRUCTION, s), stock_arrays(ed, image, s), atol=2e-5, rtol=0)


# --- only the branches that matter ------------------------------------------------------------------------------

def _record_unet(ed: Editor):
    calls = []
    handle = ed.unet.register_forward_hook(
        lambda mod, args, kwargs, out: calls.append((args[0].clone(), kwargs["encoder_hidden_states"].clone(),
                                                     out[0].clone())), with_kwargs=True)
    return calls, handle


@pytest.mark.parametrize("cfg_text,cfg_image,branches", [(1.0, 1.0, 1), (7.5, 1.0, 2), (1.0, 1.8, 3), (7.5, 1.5, 3)])
def test_unet_rows_per_step_follow_the_scales(editor, monkeypatch, cfg_text, cfg_image, branches):
    s = settings(editor, scheduler="ddim", cfg_text=cfg_text, cfg_image=cfg_image, num_variants=2, steps=2)
    rows, images = {}, {}
    for split in ("small rows", "large rows"):
        if split == "large rows":  # every row counts as large: one row per call (engine.cpu_rows)
            monkeypatch.setattr(engine, "CPU_SPLIT_ABOVE", 0)
        calls, handle = _record_unet(editor)
        try:
            images[split] = editor.edit_arrays(photo(), INSTRUCTION, s)
        finally:
            handle.remove()
        rows[split] = [c[0].shape[0] for c in calls]
    # CPU, small rows: one variant per loop, its branches in one call -> 2 variants x 2 steps calls of `branches` rows
    assert rows["small rows"] == [branches] * 4
    assert rows["large rows"] == [1] * (4 * branches)
    np.testing.assert_allclose(images["large rows"], images["small rows"], atol=2e-5, rtol=0)


@pytest.mark.parametrize("cfg_text,cfg_image", [(7.5, 1.0), (1.0, 1.8), (3.0, 2.0), (1.0, 1.0)])
def test_guided_step_is_eq3(editor, cfg_text, cfg_image):
    """One DDIM step through the real path: the scheduler got eq. 3 built from the rows the UNet returned."""
    work = photo()
    cond = engine.conditioning(editor.text_encoder, editor.tokenizer, editor.vae, editor.processor, work, INSTRUCTION,
                               editor.device, editor.dtype)
    calls, handle = _record_unet(editor)
    try:
        out = engine.denoise(editor.unet, editor.new_scheduler("ddim"), cond, [torch.Generator().manual_seed(3)], 1,
                             cfg_text, cfg_image, rows_per_call=8)
    finally:
        handle.remove()
    (inputs, hidden, pred), = calls
    rows = list(pred)
    ti = rows[0]
    if cfg_text == cfg_image == 1.0:
        assert len(rows) == 1
        expected = ti
    elif cfg_image == 1.0:
        assert len(rows) == 2
        expected = rows[1] + cfg_text * (ti - rows[1])
    else:
        i, uncond = rows[1], rows[2]
        assert torch.equal(inputs[2, 4:], torch.zeros_like(inputs[2, 4:]))  # e(0, 0): no image latents
        assert torch.equal(hidden[1], hidden[2]) and not torch.equal(hidden[0], hidden[1])
        expected = uncond + cfg_image * (i - uncond) + cfg_text * (ti - i)
    sched = editor.new_scheduler("ddim")
    sched.set_timesteps(1)
    noise = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)) * sched.init_noise_sigma
    want = sched.step(expected[None], sched.timesteps[0], noise).prev_sample
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)


def test_image_guidance_counts_with_text_guidance_one(editor):
    """The stock pipeline edits (1, 1.8) exactly like (1, 1); we do not."""
    image = photo()
    one = editor.edit_arrays(image, INSTRUCTION, settings(editor, cfg_text=1.0, cfg_image=1.0, num_variants=1))
    more = editor.edit_arrays(image, INSTRUCTION, settings(editor, cfg_text=1.0, cfg_image=1.8, num_variants=1))
    assert np.abs(one - more).max() > 1e-3
    stock = [stock_arrays(editor, image, settings(editor, cfg_text=1.0, cfg_image=g, num_variants=1)) for g in (1, 1.8)]
    np.testing.assert_array_equal(stock[0], stock[1])


# --- bounded memory ---------------------------------------------------------------------------------------------

def test_chunked_variants_equal_unchunked(editor):
    image = photo()
    for kw in (dict(scheduler="euler_a"), dict(scheduler="ddim", cfg_image=1.0)):
        whole = editor.edit_arrays(image, INSTRUCTION, settings(editor, num_variants=3, batch_size=64, **kw))
        for batch in (1, 2, 4):  # branches split across calls; one variant per loop; uneven chunks
            parts = editor.edit_arrays(image, INSTRUCTION, settings(editor, num_variants=3, batch_size=batch, **kw))
            np.testing.assert_allclose(parts, whole, atol=2e-5, rtol=0)
        assert np.abs(whole[0] - whole[1]).max() > 1e-3  # variants do differ


def test_plan_rows_and_chunks():
    unet = build_unet(TINY_UNET)
    cpu = torch.device("cpu")
    assert engine.plan_rows(unet, (8, 8), torch.float32, cpu, 3, 4, None) == 3  # CPU: one variant's branches
    # CPU, a row whose full-resolution activation reaches CPU_SPLIT_ABOVE (16 channels x 256^2 x 4 B = 4 MiB): 1 row
    assert engine.plan_rows(unet, (256, 256), torch.float32, cpu, 3, 4, None) == 1
    assert engine.plan_rows(unet, (256, 256), torch.float32, cpu, 3, 4, 6) == 6  # --batch-size still wins
    assert engine.plan_rows(unet, (8, 8), torch.float32, cpu, 3, 4, 100) == 12  # never more than the edit has
    assert engine.variant_chunks(5, 3, 7) == [range(0, 2), range(2, 4), range(4, 5)]
    assert engine.variant_chunks(2, 3, 1) == [range(0, 1), range(1, 2)]


def test_variant_cap_and_batch_size_are_checked():
    with pytest.raises(UserInputError, match="above 64"):
        EditSettings(num_variants=65)
    with pytest.raises(UserInputError, match="--batch-size"):
        EditSettings(batch_size=0)
    assert EditSettings(num_variants=64).num_variants == 64


def test_out_of_memory_is_one_line(editor, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    monkeypatch.setattr(engine, "denoise", oom)
    with pytest.raises(UserInputError, match="lower --batch-size .*--resolution .*--variants") as err:
        editor.edit(photo(), INSTRUCTION, EditSettings(seed=0, steps=1))
    assert "\n" not in str(err.value)


# --- sizes, state, devices --------------------------------------------------------------------------------------

def test_small_images_run_at_native_size(editor):
    calls, handle = _record_unet(editor)
    try:
        out, _ = editor.edit(photo((12, 9)), INSTRUCTION, EditSettings(seed=0, steps=1, cfg_text=1.0, cfg_image=1.0))
    finally:
        handle.remove()
    assert editor.native_size == 16 and out[0].size == (12, 9)
    assert calls[0][0].shape[-2:] == (12 // 2, 16 // 2)  # 16x12 px (long side raised to 16) -> latents /2
    calls, handle = _record_unet(editor)
    try:  # --resolution stays the cap
        editor.edit(photo((12, 9)), INSTRUCTION, EditSettings(seed=0, steps=1, cfg_text=1.0, cfg_image=1.0,
                                                              resolution=8))
    finally:
        handle.remove()
    assert calls[0][0].shape[-2:] == (4, 4)


def test_edits_keep_no_state_and_may_run_at_once(editor):
    before = dict(editor.scheduler.config)
    s = EditSettings(seed=4, steps=3, scheduler="euler_a", num_variants=2)
    first, _ = editor.edit(photo(), INSTRUCTION, s)
    editor.edit(photo(), "make it red", EditSettings(seed=1, steps=2, scheduler="dpmpp"))
    assert dict(editor.scheduler.config) == before and type(editor.scheduler).__name__ == "DDIMScheduler"
    results = [None, None]

    def run(k):
        results[k] = editor.edit(photo(), INSTRUCTION, s)[0]
    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results:
        assert [np.asarray(a).tolist() for a in got] == [np.asarray(a).tolist() for a in first]


def test_saved_folder_loads_in_the_stock_pipeline(editor, tmp_path):
    editor.save(tmp_path / "ed", scheduler_name="lcm")
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(str(tmp_path / "ed"))
    assert type(pipe.scheduler).__name__ == "LCMScheduler"
    torch.testing.assert_close(pipe.unet.state_dict()["conv_in.weight"], editor.unet.state_dict()["conv_in.weight"])


def test_auto_device_and_dtype(monkeypatch):
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (5, 0))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserInputError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(UserInputError, match="unknown device"):
        resolve_device("gpu0")
    with pytest.raises(UserInputError, match="--dtype"):
        resolve_dtype("fp8", torch.device("cpu"))
