"""SDXL InstructPix2Pix, FLUX.1 Kontext and Qwen-Image-Edit (2509) behind `--editor`, by their real hub ids from the
offline cache (tests/hub_cache_modern.py): family dispatch from model_index.json, each adapter's defaults and
flag refusals, the input's size and aspect kept end to end, memory refusal before loading, the licence notice."""
from __future__ import annotations

import json
import signal
from dataclasses import replace

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

import hub_cache_modern as modern
import infer
from edit_diffusion import families, memory
from edit_diffusion.editor import EditSettings, load_editor

TEST_TIMEOUT_S = 300  # per test: a hang guard (tiny models on one thread take seconds; busy shared cores more)
WORK = 64  # --resolution: the long side the tiny models run at
# diffusers versions whose private resize hooks (Qwen's module-level calculate_dimensions and the 2509 pipeline's
# CONDITION_IMAGE_SIZE / VAE_IMAGE_SIZE) these tests shrink; another version must be checked by hand first
PATCHED_DIFFUSERS = ("0.42.",)


@pytest.fixture(autouse=True)
def one_thread_with_timeout():
    """Tiny models run fastest on one thread; a hung pipeline fails the test instead of the session."""
    def expire(signum, frame):
        raise TimeoutError(f"test took longer than {TEST_TIMEOUT_S} s")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_TIMEOUT_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
    torch.set_num_threads(threads)


@pytest.fixture
def small_qwen_condition(monkeypatch):
    """Qwen-Image-Edit resizes its condition image to ~1 MP whatever the output size (a minute per tiny edit on
    a CPU); shrink that target to 64 x 64 px through the pipelines' own module-level hooks."""
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit as edit, pipeline_qwenimage_edit_plus as plus
    assert diffusers.__version__.startswith(PATCHED_DIFFUSERS), (
        f"diffusers {diffusers.__version__}: check that Qwen's calculate_dimensions / CONDITION_IMAGE_SIZE hooks "
        "are unchanged, then add the version to PATCHED_DIFFUSERS")
    for module in (edit, plus):
        original = module.calculate_dimensions
        monkeypatch.setattr(module, "calculate_dimensions",
                            lambda area, ratio, original=original: original(WORK * WORK, ratio))
    monkeypatch.setattr(plus, "CONDITION_IMAGE_SIZE", 56 * 56)
    monkeypatch.setattr(plus, "VAE_IMAGE_SIZE", WORK * WORK)


def photo(width: int = 56, height: int = 40) -> Image.Image:
    """A non-square test picture (seeded noise over a gradient)."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    return Image.fromarray((0.5 * ramp + 0.5 * rng.random((height, width, 3)) * 255).astype(np.uint8))


def record_pipeline_outputs(cls, monkeypatch) -> list:
    """Wrap a pipeline class's __call__ so each call's raw output size (before our resize back) is kept."""
    shapes, call = [], cls.__call__

    def recording(self, *args, **kwargs):
        out = call(self, *args, **kwargs)
        shapes.append(out.images[0].shape[:2])
        return out
    monkeypatch.setattr(cls, "__call__", recording)
    return shapes


@pytest.mark.parametrize("repo", modern.MODERN_IDS)
def test_infer_edits_a_non_square_image_at_its_size(repo, modern_hub_cache, small_qwen_condition, tmp_path,
                                                    monkeypatch):
    source = tmp_path / "in.png"
    photo().save(source)
    stock = modern_hub_cache["pipes"][repo]
    class_name = json.loads((modern_hub_cache[repo] / "model_index.json").read_text())["_class_name"]
    assert type(stock).__name__ == class_name and class_name in families.FAMILIES
    shapes = record_pipeline_outputs(type(stock), monkeypatch)
    written = infer.main(infer.parse_args([
        "--input", str(source), "--output", str(tmp_path / "out.png"), "--skip-stylize", "--editor", repo,
        "--edit", "make it red", "--steps", "2", "--resolution", str(WORK), "--seed", "0", "--device", "cpu",
        "--dtype", "fp32", "--variants", "2"]))
    assert [p.name for p in written] == ["out-1.png", "out-2.png"]
    first, second = (Image.open(p) for p in written)
    assert first.size == second.size == (56, 40)
    assert not np.array_equal(np.asarray(first), np.asarray(second))  # variants use seeds 0 and 1
    # the pipeline itself ran at the input's aspect ratio (64 x 45.7 -> the model's multiple), not squared,
    # snapped to a preferred resolution or blown up to ~1 MP
    multiple = families.FamilyEditor(stock, families.FAMILIES[class_name], {}).size_multiple
    assert shapes == [(round(40 * WORK / 56 / multiple) * multiple, WORK)] * 2


def test_family_defaults_and_refusals(modern_hub_cache, capsys):
    """Each family's recommended settings fill what the user left out; flags with no meaning are refused."""
    expected = {modern.SDXL_IP2P: (30, 3.0, 1.5), modern.KONTEXT: (28, 2.5, None), modern.QWEN_EDIT: (50, 4.0, None),
                modern.QWEN_EDIT_PLUS: (40, 4.0, None)}
    for repo, (steps, cfg_text, cfg_image) in expected.items():
        editor = load_editor(repo, "cpu", "fp32")
        s = editor.resolve_settings(EditSettings(seed=0))
        assert (s.steps, s.cfg_text, s.cfg_image, s.resolution) == (steps, cfg_text, cfg_image, editor.native_size)
        assert editor.resolve_settings(EditSettings(seed=0, cfg_text=1.0, steps=3)).cfg_text == 1.0
        with pytest.raises(ValueError, match="--batch-size"):
            editor.resolve_settings(EditSettings(batch_size=2))
        if cfg_image is None:
            with pytest.raises(ValueError, match="--cfg-image: .* has no image guidance"):
                editor.resolve_settings(EditSettings(cfg_image=2.0))
            with pytest.raises(ValueError, match="--scheduler"):
                editor.resolve_settings(EditSettings(scheduler="ddim"))
        else:
            assert editor.resolve_settings(EditSettings(seed=0, scheduler="ddim")).scheduler == "ddim"


def test_cli_refusal_is_one_line_before_loading(modern_hub_cache, tmp_path, capsys, monkeypatch):
    source = tmp_path / "in.png"
    photo().save(source)
    import edit_diffusion.editor as editor_module

    def no_loading(*args, **kwargs):
        raise AssertionError("the editor was loaded before the flag was refused")
    monkeypatch.setattr(editor_module, "load_family_editor", no_loading)
    with pytest.raises(SystemExit) as exit_info:
        infer.cli(["--input", str(source), "--output", str(tmp_path / "out.png"), "--skip-stylize", "--editor",
                   modern.KONTEXT, "--edit", "make it red", "--cfg-image", "1.5", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: --cfg-image: FLUX.1 Kontext has no image guidance")
    assert not (tmp_path / "out.png").exists()


def test_memory_is_estimated_from_headers_and_refused_in_one_line(modern_hub_cache, monkeypatch):
    pipe = modern_hub_cache["pipes"][modern.KONTEXT]
    params = sum(sum(p.numel() for p in getattr(pipe, name).parameters())
                 for name in ("transformer", "vae", "text_encoder", "text_encoder_2"))
    counted = memory.weights_params(modern_hub_cache[modern.KONTEXT])
    assert sum(counted.values()) == params
    need = params * 4  # float32
    monkeypatch.setattr(memory, "available_bytes", lambda device: int(need / memory.HEADROOM) - 1)
    with pytest.raises(ValueError) as err:
        load_editor(modern.KONTEXT, "cpu", "fp32")
    message = str(err.value)
    assert f"needs about {need / 2**20:.1f} MiB for its weights in fp32 ({params / 1e6:.1f} M parameters)" in message
    assert message.endswith("use --dtype bf16")  # no GPU here: neither --device cuda nor --cpu-offload is offered
    assert "\n" not in message
    monkeypatch.setattr(memory, "available_bytes", lambda device: int(need / memory.HEADROOM) + 1)
    assert load_editor(modern.KONTEXT, "cpu", "fp32") is not None  # just enough: loads


def test_kontext_licence_named_once(modern_hub_cache, monkeypatch, capsys):
    monkeypatch.setattr(families, "_licences_named", set())
    load_editor(modern.KONTEXT, "cpu", "fp32")
    load_editor(modern.KONTEXT, "cpu", "fp32")
    assert capsys.readouterr().out.count("Non-Commercial License") == 1
    load_editor(modern.QWEN_EDIT, "cpu", "fp32")
    assert "License" not in capsys.readouterr().out


def test_web_app_runs_every_family_and_hides_controls_it_has_no_use_for(modern_hub_cache, small_qwen_condition,
                                                                        tmp_path):
    """Kontext and Qwen edit through the web app's own Edit handler at the upload's size; their image guidance and
    scheduler controls are hidden with a note, and a value sent for one anyway is refused, not dropped."""
    import random

    import gradio as gr
    from webapp import handlers
    from webapp.context import FIX, RANDOMIZE, NO_STYLE, load_context
    from webapp.ui import build_ui
    ctx = load_context(modern.SDXL_IP2P, None, "cpu", dtype="fp32")
    assert (ctx.defaults.steps, ctx.defaults.cfg_text, ctx.defaults.cfg_image) == (30, 3.0, 1.5)
    assert ctx.unused == {}  # SDXL-IP2P keeps every control
    assert_randomize_draws_around_the_default(ctx, (2.5, 4.0))
    titles = {modern.SDXL_IP2P: next(c.value for c in build_ui(ctx).blocks.values() if c.elem_id == "title")}
    source = tmp_path / "in.png"
    photo().save(source)
    for repo, steps, cfg_text, cfg_range in ((modern.KONTEXT, 28, 2.5, (2.0, 3.5)),
                                             (modern.QWEN_EDIT, 50, 4.0, (3.0, 5.0))):
        ctx = load_context(repo, None, "cpu", dtype="fp32")
        d = ctx.defaults
        assert (d.steps, d.cfg_text, d.cfg_image, d.scheduler) == (steps, cfg_text, None, None)
        assert set(ctx.unused) == {"cfg_image", "scheduler"}
        assert_randomize_draws_around_the_default(ctx, cfg_range)
        request = handlers.EditRequest(
            image=str(source), style=NO_STYLE, instruction="make it red", steps=2, steps_mode=FIX, cfg_text=None,
            cfg_text_mode=RANDOMIZE, cfg_image=d.cfg_image, cfg_image_mode=FIX, seed=3, seed_mode=FIX,
            scheduler=d.scheduler, variants=2, resolution=WORK)
        _, edited, used_steps, used_cfg_text, used_cfg_image, seed = handlers.edit(ctx, request, rng=random.Random(0))
        assert [img.size for img in edited] == [photo().size] * 2  # 56 x 40 in, 56 x 40 out
        assert (used_steps, used_cfg_image, seed) == (2, None, 3)
        assert cfg_range[0] <= used_cfg_text <= cfg_range[1]  # Randomize: the family's range, not 6-9
        for sent in (dict(cfg_image=1.5), dict(cfg_image_mode=RANDOMIZE), dict(scheduler="ddim")):
            with pytest.raises(gr.Error, match="has no image guidance|its own FlowMatch"):
                handlers.edit(ctx, replace(request, **sent))
        by_id = {c.elem_id: c for c in build_ui(ctx).blocks.values() if c.elem_id}
        assert [shown(by_id[name]) for name in ("cfg-image", "cfg-image-mode", "scheduler", "cfg-text")] == [
            False, False, False, True]  # the page hides both controls and says why
        assert "no image guidance" in by_id["unused-controls-note"].value
        titles[repo] = by_id["title"].value
    # the page title names the loaded family
    assert titles == {modern.SDXL_IP2P: "## stylize-edit: photo → style (GAN) → instruction edit (SDXL InstructPix2Pix)",
                      modern.KONTEXT: "## stylize-edit: photo → style (GAN) → instruction edit (FLUX.1 Kontext)",
                      modern.QWEN_EDIT: "## stylize-edit: photo → style (GAN) → instruction edit (Qwen-Image-Edit)"}


def assert_randomize_draws_around_the_default(ctx, cfg_range: tuple[float, float]) -> None:
    """Randomize draws text guidance over the family's range, which holds its default (InstructPix2Pix's 6-9 would
    be 2-4x the recommended guidance of these models)."""
    import random

    from webapp import handlers
    from webapp.context import FIX, NO_STYLE, RANDOMIZE
    d = ctx.defaults
    request = handlers.EditRequest(
        image=None, style=NO_STYLE, instruction="x", steps=2, steps_mode=FIX, cfg_text=None, cfg_text_mode=RANDOMIZE,
        cfg_image=d.cfg_image, cfg_image_mode=FIX, seed=0, seed_mode=FIX, scheduler=d.scheduler, variants=1,
        resolution=WORK)
    rng = random.Random(0)
    draws = [handlers.pick_values(request, d, rng, ctx.unused, ctx.cfg_text_range)[1] for _ in range(200)]
    assert ctx.cfg_text_range == cfg_range and cfg_range[0] <= d.cfg_text <= cfg_range[1]
    assert cfg_range[0] <= min(draws) < cfg_range[0] + 0.1 and cfg_range[1] - 0.1 < max(draws) <= cfg_range[1]


def shown(block) -> bool:
    """Whether a gradio component is visible: it and every layout block around it."""
    while block is not None:
        if getattr(block, "visible", True) is False:
            return False
        block = getattr(block, "parent", None)
    return True


@pytest.mark.parametrize("keys, named", [
    ({"model.diffusion_model.input_blocks.0.0.weight": (32, 8, 3, 3),  # SDXL-IP2P in original (LDM) format
      "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": (4,)}, "a 'xl_base' checkpoint"),
    ({"model.diffusion_model.double_blocks.0.img_attn.norm.key_norm.scale": (4,),  # a FLUX transformer
      "model.diffusion_model.img_in.weight": (8, 64)}, "a 'flux-schnell' checkpoint"),
    ({"transformer_blocks.0.img_mod.1.weight": (4, 4)}, "not a Stable Diffusion checkpoint"),  # Qwen-Image's
])
def test_single_file_of_another_family_names_the_supported_forms(keys, named, tmp_path, monkeypatch, capsys):
    """A single .safetensors that is neither SD 1.x / 2.x nor an SDXL-IP2P / Kontext editor is refused in one line
    naming hub id / folder, before the SD 1.5 single-file path (which would fail later, or look for SD 1.5
    configs)."""
    from safetensors.torch import save_file
    from edit_diffusion import loading

    def sd_path(*args, **kwargs):
        raise AssertionError("went down the SD 1.5 single-file path")
    monkeypatch.setattr(loading.StableDiffusionInstructPix2PixPipeline, "from_single_file", sd_path)
    path = tmp_path / "editor.safetensors"
    save_file({k: torch.zeros(shape) for k, shape in keys.items()}, str(path))
    photo().save(tmp_path / "in.png")
    with pytest.raises(SystemExit) as exit_info:
        infer.cli(["--input", str(tmp_path / "in.png"), "--output", str(tmp_path / "out.png"), "--skip-stylize", "--editor",
                   str(path), "--edit", "make it red", "--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err
    assert err.endswith("other editors (e.g. Qwen/Qwen-Image-Edit) load from a hub id or a diffusers folder with "
                        "model_index.json")
