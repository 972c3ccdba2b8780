"""Unit tests of the web app's handler functions (the very functions the UI calls), on tiny seeded models."""
from __future__ import annotations

import inspect
import os
import random
from dataclasses import astuple, fields, replace
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from _webapp_models import PHOTO_SIZE, build_tiny_editor, build_tiny_generator, real_photo
from webapp import handlers
from webapp.context import (DEFAULT_SEED, FIX, NO_STYLE, RANDOMIZE, UploadLimits, checkpoint_choice,
                            editor_defaults, example_images, load_context)

TINY_STEPS = 2


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("webapp_models")
    return build_tiny_editor(root / "editor"), build_tiny_generator(root / "generator.safetensors")


@pytest.fixture(scope="module")
def ctx(models):
    editor, generator = models
    return load_context(editor=str(editor), gan_checkpoint=str(generator), device="cpu")


@pytest.fixture
def photo_path(tmp_path):
    path = tmp_path / "photo.png"
    real_photo().save(path)
    return str(path)


def request(ctx, image, **overrides) -> handlers.EditRequest:
    """An Edit click with every control fixed (tiny step count), as the UI would send it."""
    d = ctx.defaults
    values = dict(image=image, style=d.style, instruction="make it black and white", steps=TINY_STEPS,
                  steps_mode=FIX, cfg_text=7.5, cfg_text_mode=FIX, cfg_image=1.5, cfg_image_mode=FIX, seed=7,
                  seed_mode=FIX, scheduler=d.scheduler, variants=1, resolution=d.resolution)
    values.update(overrides)
    return handlers.EditRequest(**values)


# --- uploads ------------------------------------------------------------------------------------------

def test_validate_upload_accepts_a_photo(photo_path):
    img = handlers.validate_upload(photo_path, UploadLimits())
    assert img.mode == "RGB" and img.size == PHOTO_SIZE


@pytest.mark.parametrize("content, expected", [
    (b"hello, I am text", "photo.png is not an image"),
    (b"", "photo.png is not an image"),
])
def test_validate_upload_refuses_non_images(tmp_path, content, expected):
    path = tmp_path / "photo.png"
    path.write_bytes(content)
    with pytest.raises(handlers.UserInputError, match=expected):
        handlers.validate_upload(str(path), UploadLimits())


def test_validate_upload_refuses_a_truncated_image_without_the_temp_path(tmp_path):
    full = tmp_path / "full.png"
    real_photo().save(full)
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[:300])
    with pytest.raises(handlers.UserInputError) as err:
        handlers.validate_upload(str(cut), UploadLimits())
    assert "cut.png" in str(err.value) and str(tmp_path) not in str(err.value)


def test_validate_upload_refuses_too_many_megabytes(photo_path):
    limits = UploadLimits(max_megabytes=1 / 1024)  # 1 KiB: smaller than the PNG
    with pytest.raises(handlers.UserInputError, match=r"photo.png is too large: .* MB \(limit"):
        handlers.validate_upload(photo_path, limits)


def test_validate_upload_refuses_too_many_pixels_before_decoding(photo_path):
    limits = UploadLimits(max_pixels=PHOTO_SIZE[0] * PHOTO_SIZE[1] - 1)
    with pytest.raises(handlers.UserInputError, match=r"photo.png is too large: 64x48 = 3,072 pixels \(limit 3,071\)"):
        handlers.validate_upload(photo_path, limits)


def test_validate_upload_without_image():
    with pytest.raises(handlers.UserInputError, match="upload one or pick an example"):
        handlers.validate_upload(None, UploadLimits())


def test_on_upload_keeps_a_good_image_and_drops_a_bad_one_with_a_warning(photo_path, tmp_path):
    assert handlers.on_upload(UploadLimits(), photo_path) == gr.skip()  # leave the component as it is
    bad = tmp_path / "notes.png"
    bad.write_text("not pixels")
    with pytest.warns(UserWarning, match="notes.png is not an image"):  # gr.Warning outside a running app
        assert handlers.on_upload(UploadLimits(), str(bad)) is None  # None clears the upload in the UI


def test_messages_are_html_escaped(ctx, tmp_path):
    bad = tmp_path / "<i>x.png"  # gradio renders toast text as HTML; file names come from the user
    bad.write_text("text")
    with pytest.raises(gr.Error) as err:
        handlers.edit(ctx, request(ctx, str(bad)))
    assert "<i>" not in err.value.message and "&lt;i&gt;x.png is not an image" in err.value.message


# --- fix / randomize ----------------------------------------------------------------------------------

def test_pick_values_fix_keeps_the_ui_values(ctx):
    req = request(ctx, None, steps=3.0, cfg_text=8.25, cfg_image=1.25, seed=42.0)
    assert handlers.pick_values(req, ctx.defaults, random.Random(0)) == (3, 8.25, 1.25, 42)


def test_pick_values_randomize_draws_in_the_original_apps_ranges(ctx):
    req = request(ctx, None, steps=None, steps_mode=RANDOMIZE, cfg_text=None, cfg_text_mode=RANDOMIZE,
                  cfg_image=None, cfg_image_mode=RANDOMIZE, seed=None, seed_mode=RANDOMIZE)
    rng = random.Random(0)
    draws = [handlers.pick_values(req, ctx.defaults, rng) for _ in range(50)]
    default_steps = ctx.defaults.steps
    for steps, cfg_text, cfg_image, seed in draws:
        assert max(1, round(default_steps / 2)) <= steps <= round(default_steps * 1.5)
        assert 6.0 <= cfg_text <= 9.0 and round(cfg_text, 2) == cfg_text
        assert 1.2 <= cfg_image <= 1.8
        assert 0 <= seed <= 100_000
    assert len({d[3] for d in draws}) > 40  # seeds really vary
    assert len({d[1] for d in draws}) > 40


@pytest.mark.parametrize("overrides, message", [
    (dict(steps=None), "steps is empty"),
    (dict(seed=None), "seed is empty"),
    (dict(cfg_text=None), "text guidance is empty"),
    (dict(steps=0), "steps must be a whole number >= 1"),
    (dict(steps=2.5), "steps must be a whole number >= 1"),
    (dict(seed=-1), "seed must be a whole number >= 0"),
    (dict(seed_mode="Sometimes"), "seed: choose Fix or Randomize"),
])
def test_pick_values_refuses_bad_values(ctx, overrides, message):
    with pytest.raises(handlers.UserInputError, match=message):
        handlers.pick_values(request(ctx, None, **overrides), ctx.defaults, random.Random(0))


# --- edit -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("instruction", ["", "   \n", None])
def test_edit_refuses_an_empty_instruction(ctx, photo_path, instruction):
    with pytest.raises(gr.Error, match="instruction is empty"):
        handlers.edit(ctx, request(ctx, photo_path, instruction=instruction))


def test_edit_refuses_a_missing_or_bad_upload(ctx, tmp_path):
    with pytest.raises(gr.Error, match="upload one or pick an example"):
        handlers.edit(ctx, request(ctx, None))
    bad = tmp_path / "doc.jpg"
    bad.write_text("not an image")
    with pytest.raises(gr.Error, match="doc.jpg is not an image"):
        handlers.edit(ctx, request(ctx, str(bad)))


def test_edit_refuses_an_unknown_style_and_scheduler(ctx, photo_path):
    with pytest.raises(gr.Error, match="unknown style 'watercolour'"):
        handlers.edit(ctx, request(ctx, photo_path, style="watercolour"))
    with pytest.raises(gr.Error, match="no-such-scheduler"):
        handlers.edit(ctx, request(ctx, photo_path, scheduler="no-such-scheduler"))


def test_edit_runs_both_stages_and_writes_the_fixed_values_back(ctx, photo_path):
    calls = []
    stylized, edited, steps, cfg_text, cfg_image, seed = handlers.edit(
        ctx, request(ctx, photo_path, variants=2), progress=lambda *a, **k: calls.append((a, k)))
    source = np.asarray(real_photo(), dtype=np.int16)
    assert stylized.size == PHOTO_SIZE
    assert np.abs(np.asarray(stylized, dtype=np.int16) - source).mean() > 1  # the generator did something
    assert len(edited) == 2 and all(im.size == PHOTO_SIZE and im.mode == "RGB" for im in edited)
    assert np.abs(np.asarray(edited[0], dtype=np.int16) - source).mean() > 1
    assert (steps, cfg_text, cfg_image, seed) == (TINY_STEPS, 7.5, 1.5, 7)
    assert calls and calls[0][1]["desc"] == "stylizing"


def test_edit_with_a_fixed_seed_is_reproducible_and_the_seed_matters(ctx, photo_path):
    first = handlers.edit(ctx, request(ctx, photo_path, style=NO_STYLE, seed=3))
    again = handlers.edit(ctx, request(ctx, photo_path, style=NO_STYLE, seed=3))
    other = handlers.edit(ctx, request(ctx, photo_path, style=NO_STYLE, seed=4))
    assert np.array_equal(np.asarray(first[1][0]), np.asarray(again[1][0]))
    assert not np.array_equal(np.asarray(first[1][0]), np.asarray(other[1][0]))


def test_out_of_scope_instruction_returns_the_picture_with_a_warning(models, photo_path, monkeypatch):
    """An editor folder with an instruction index (scope.py): "add a dog" is out of scope, so the page warns and
    the result is the stylized picture itself; app.py --edit-out-of-scope runs the model (and still warns)."""
    from edit_diffusion.scope import write_index
    editor, generator = models
    write_index(editor, [("make it black and white", "black_and_white")] * 5 + [("add a dog", "identity")] * 5,
                "identity")
    try:
        scoped = load_context(editor=str(editor), gan_checkpoint=str(generator), device="cpu")
    finally:
        (editor / "instruction_index.json").unlink()
    warnings = []
    monkeypatch.setattr(handlers.gr, "Warning", warnings.append)
    stylized, edited, *_ = handlers.edit(scoped, request(scoped, photo_path, instruction="add a dog", variants=2))
    assert len(edited) == 2 and all(np.array_equal(np.asarray(e), np.asarray(stylized)) for e in edited)
    assert len(warnings) == 1 and "left unchanged" in warnings[0]
    handlers.edit(scoped, request(scoped, photo_path, instruction="make it black and white"))
    assert len(warnings) == 1  # in scope: no warning
    forced = replace(scoped, edit_out_of_scope=True)
    stylized, edited, *_ = handlers.edit(forced, request(forced, photo_path, instruction="add a dog"))
    assert np.abs(np.asarray(edited[0], dtype=np.int16) - np.asarray(stylized, dtype=np.int16)).mean() > 1
    assert len(warnings) == 2 and "will not follow" in warnings[1]


def test_edit_without_stylization_passes_the_photo_through(ctx, photo_path):
    stylized, edited, *_ = handlers.edit(ctx, request(ctx, photo_path, style=NO_STYLE))
    assert np.array_equal(np.asarray(stylized), np.asarray(real_photo()))
    assert edited[0].size == PHOTO_SIZE


def test_edit_resolution_cap_changes_the_work_size_not_the_output_size(ctx, photo_path):
    full = handlers.edit(ctx, request(ctx, photo_path, style=NO_STYLE, resolution=512))
    capped = handlers.edit(ctx, request(ctx, photo_path, style=NO_STYLE, resolution=32))
    assert capped[1][0].size == full[1][0].size == PHOTO_SIZE
    assert not np.array_equal(np.asarray(capped[1][0]), np.asarray(full[1][0]))


def test_edit_randomize_writes_the_drawn_values_back(ctx, photo_path):
    req = request(ctx, photo_path, style=NO_STYLE, cfg_text_mode=RANDOMIZE, cfg_image_mode=RANDOMIZE,
                  seed_mode=RANDOMIZE)
    _, _, steps, cfg_text, cfg_image, seed = handlers.edit(ctx, req, rng=random.Random(1))
    expected = handlers.pick_values(req, ctx.defaults, random.Random(1))
    assert (steps, cfg_text, cfg_image, seed) == expected
    assert (cfg_text, cfg_image) != (7.5, 1.5)


# --- defaults and reset --------------------------------------------------------------------------------------

def test_defaults_come_from_the_editor_and_the_command_line(ctx, models):
    d = ctx.defaults
    resolved = editor_defaults(ctx.editor)
    assert (d.steps, d.cfg_text, d.cfg_image, d.scheduler) == (resolved.steps, resolved.cfg_text,
                                                                resolved.cfg_image, resolved.scheduler)
    assert d.style == checkpoint_choice(str(models[1])) and NO_STYLE in ctx.generators
    assert (d.seed, d.seed_mode, d.steps_mode, d.cfg_text_mode, d.cfg_image_mode) == (
        DEFAULT_SEED, RANDOMIZE, FIX, FIX, FIX)


def test_reset_restores_every_default_and_clears_the_outputs(ctx):
    values = handlers.reset(ctx.defaults)
    assert values == (*astuple(ctx.defaults), None, None)
    assert len(values) == len(fields(ctx.defaults)) + 2
    steps = values[[f.name for f in fields(ctx.defaults)].index("steps")]
    assert steps == ctx.defaults.steps >= 1  # the original app's reset set steps to 0
    changed = replace(ctx.defaults, steps=99, seed=5, seed_mode=FIX)
    assert handlers.reset(ctx.defaults) != (*astuple(changed), None, None)


def test_example_images_come_from_the_given_folder(tmp_path):
    real_photo().save(tmp_path / "b.png")
    real_photo().save(tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("not an example")
    assert example_images(str(tmp_path)) == [str(tmp_path / "a.jpg"), str(tmp_path / "b.png")]
    with pytest.raises(handlers.UserInputError, match="not a folder"):
        example_images(str(tmp_path / "missing"))


def test_build_ui_offers_the_examples(ctx, tmp_path):
    from webapp.ui import build_ui
    real_photo().save(tmp_path / "astronaut.png")
    demo = build_ui(replace(ctx, examples=example_images(str(tmp_path))))
    datasets = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "examples"]
    assert len(datasets) == 1 and len(datasets[0].samples) == 1


def test_build_ui_wires_the_handlers(ctx):
    from webapp.ui import build_ui
    demo = build_ui(ctx)
    ids = {block.elem_id for block in demo.blocks.values() if getattr(block, "elem_id", None)}
    assert {"input-image", "style", "instruction", "edit-button", "reset-button", "steps", "steps-mode", "cfg-text",
            "cfg-text-mode", "cfg-image", "cfg-image-mode", "seed", "seed-mode", "scheduler", "variants",
            "resolution", "stylized", "edited"} <= ids
    title = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "title")
    assert title.value.endswith("instruction edit (InstructPix2Pix)")  # an SD 1.5 editor (other families: their name)
    edit_events = [f for f in demo.fns.values() if f.name == "on_edit"]
    assert edit_events and all(len(f.inputs) == len(fields(handlers.EditRequest)) for f in edit_events)
    # gradio injects gr.Progress only as the default of a positional parameter
    params = inspect.signature(edit_events[0].fn).parameters.values()
    assert [p.kind for p in params if isinstance(p.default, gr.Progress)] == [inspect.Parameter.POSITIONAL_OR_KEYWORD]


def _call_event(demo, block_fn, values: list):
    """Run one wired event the way gradio does for a click (keyword inputs, gr.Progress injected)."""
    import asyncio

    from gradio.state_holder import SessionState
    return asyncio.run(demo.call_function(block_fn, values, state=SessionState(demo)))["prediction"]


def test_ui_events_are_wired_by_field_name(ctx, photo_path):
    """The Edit event takes one input per EditRequest field by name and writes the used values back to the
    controls they came from; Reset writes every Controls field to the control of that name. A list kept in
    the wrong order (the old failure mode) puts a value into the wrong control and fails here."""
    from webapp.ui import build_ui
    demo = build_ui(ctx)
    by_id = lambda blocks: [b.elem_id for b in blocks]  # noqa: E731
    on_edit = [f for f in demo.fns.values() if f.name == "on_edit"][0]
    assert on_edit.input_keyword_names == [f.name for f in fields(handlers.EditRequest)]
    assert [b.elem_id for b in on_edit.inputs] == ["input-image", *(n.replace("_", "-") for n in
                                                                    on_edit.input_keyword_names[1:])]
    values = astuple(request(ctx, photo_path, steps=3, cfg_text=6.5, cfg_image=1.25, seed=11))
    stylized, edited, *used = _call_event(demo, on_edit, list(values))
    assert stylized is not None and len(edited) == 1
    assert by_id(on_edit.outputs[2:]) == ["steps", "cfg-text", "cfg-image", "seed"] and used == [3, 6.5, 1.25, 11]
    reset = [f for f in demo.fns.values() if by_id(f.outputs)[:2] == ["style", "steps"]][0]
    restored = _call_event(demo, reset, [])
    assert by_id(reset.outputs) == [f.name.replace("_", "-") for f in fields(type(ctx.defaults))] + [
        "stylized", "edited"]
    assert list(restored) == [*astuple(ctx.defaults), None, None]


# --- entry point ---------------------------------------------------------------------------------------------

def test_parse_args_defaults_are_loopback_and_no_share():
    from app import parse_args
    config = parse_args([])
    # device "auto": CUDA, else MPS, else CPU (issue 14)
    assert (config.host, config.port, config.share, config.load.device) == ("127.0.0.1", None, False, "auto")
    config = parse_args(["--host", "0.0.0.0", "--port", "8123", "--share", "--editor", "e", "--gan-checkpoint", "g"])
    assert (config.host, config.port, config.share, config.editor, config.gan_checkpoint) == (
        "0.0.0.0", 8123, True, "e", "g")


@pytest.mark.parametrize("argv, message", [
    (["--port", "70000"], "--port must lie in 1..65535"),
    (["--device", "toaster"], "--device: unknown device"),
    (["--max-upload-mb", "0"], "--max-upload-mb must be positive"),
    (["--port", "x"], "invalid int value"),
])
def test_cli_refuses_bad_flags_in_one_line(capsys, argv, message):
    from app import cli
    with pytest.raises(SystemExit) as exit_info:
        cli(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_cli_reports_a_missing_editor_in_one_line(capsys, tmp_path):
    from app import cli
    with pytest.raises(SystemExit) as exit_info:
        cli(["--editor", str(tmp_path / "no-such-editor")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no-such-editor" in err and "Traceback" not in err


def test_cli_reports_a_busy_port_in_one_line(capsys, models):
    import signal
    import socket

    from app import cli
    handler_before = signal.getsignal(signal.SIGTERM)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit) as exit_info:
            cli(["--editor", str(models[0]), "--port", str(port)])
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert f"error: cannot serve on 127.0.0.1:{port}" in err and "Traceback" not in err
    temp_dir = out.split("temporary files: ")[1].split()[0]
    assert not Path(temp_dir).exists()  # deleted although serving failed
    assert signal.getsignal(signal.SIGTERM) is handler_before
    assert os.environ.get("GRADIO_TEMP_DIR") != temp_dir  # the environment is restored too


def test_cli_explains_a_missing_bundled_editor(capsys, monkeypatch, tmp_path):
    import webapp.context
    from app import cli
    monkeypatch.setattr(webapp.context, "DEFAULT_EDITOR", tmp_path / "checkpoints" / "editor")
    with pytest.raises(SystemExit):
        cli([])
    assert "the bundled editor is missing" in capsys.readouterr().err
