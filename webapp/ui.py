"""The page: input and settings on top, the stylized intermediate and the edited result side by side below.
Every event calls a function of `handlers`; this file only lays components out and wires them."""
from __future__ import annotations

import os
from dataclasses import fields
from functools import partial

import gradio as gr

from edit_diffusion.editor import EditSettings

from . import handlers
from .context import (EDIT_CONCURRENCY, MAX_RESOLUTION, MAX_STEPS, MAX_VARIANTS, MIN_RESOLUTION, MODES,
                      RESOLUTION_STEP, AppContext)
from .context import Controls, editor_label, scheduler_choices

# Bounds of the numeric settings come from EditSettings, the same metadata the --steps/--cfg-text/... flags use.
SETTINGS = {f.name: f.metadata for f in fields(EditSettings)}
# Numbers with a Fix/Randomize mode: EditRequest field -> (label, gr.Number options beyond the shared bounds).
NUMBERS = {"steps": ("Steps", dict(precision=0, maximum=MAX_STEPS)), "cfg_text": ("Text guidance", dict(step=0.1)),
           "cfg_image": ("Image guidance", dict(step=0.1)), "seed": ("Seed", dict(precision=0))}
IMAGE_HEIGHT = 360  # px on the page; the files keep their own size
TITLE = "stylize-edit: photo → style (GAN) → instruction edit ({editor})"  # the loaded editor's family


class UploadImage(gr.Image):
    """gr.Image whose handler gets the uploaded file's path untouched: gr.Image would open it with PIL
    first and fail on a non-image with a bare error; `handlers.validate_upload` says why instead."""
    is_template = True  # same browser component as gr.Image

    def preprocess(self, payload):
        if payload is None:
            return None
        if payload.path is None:
            raise gr.Error(handlers.NO_IMAGE)
        return payload.path


def _elem_id(name: str) -> str:
    return name.replace("_", "-")


def _mode(value: str, elem_id: str) -> gr.Radio:
    return gr.Radio(list(MODES), value=value, show_label=False, elem_id=elem_id, min_width=120)


def build_ui(ctx: AppContext) -> gr.Blocks:
    """Lay out the page and wire every event to its handler."""
    d = ctx.defaults
    with gr.Blocks(title="stylize-edit", analytics_enabled=False) as demo:
        gr.Markdown(f"## {TITLE.format(editor=editor_label(ctx.editor))}", elem_id="title")
        with gr.Row():
            with gr.Column():
                image = UploadImage(label="Input image", type="filepath", sources=["upload"], height=IMAGE_HEIGHT,
                                    elem_id="input-image")
                if ctx.examples:
                    gr.Examples(examples=[[p] for p in ctx.examples], inputs=[image], label="Examples",
                                cache_examples=False, elem_id="examples")
            with gr.Column():
                style = gr.Dropdown(list(ctx.generators), value=d.style, label="Stage 1: style", elem_id="style")
                instruction = gr.Textbox(label="Stage 2: edit instruction", placeholder="make it black and white",
                                         elem_id="instruction")
                with gr.Row():
                    edit_button = gr.Button("Edit", variant="primary", elem_id="edit-button")
                    reset_button = gr.Button("Reset", elem_id="reset-button")
                controls = {"image": image, "style": style, "instruction": instruction}  # EditRequest field -> input
                for name, (label, options) in NUMBERS.items():  # a value and its Fix/Randomize mode
                    # hidden (value None) where the editor has no use for it; the note below says why
                    with gr.Row(visible=name not in ctx.unused):
                        controls[name] = gr.Number(getattr(d, name), minimum=SETTINGS[name].get("ge"),
                                                   label=label, elem_id=_elem_id(name), **options)
                        controls[f"{name}_mode"] = _mode(getattr(d, f"{name}_mode"), _elem_id(f"{name}_mode"))
                with gr.Row():
                    controls["scheduler"] = gr.Dropdown(scheduler_choices(), value=d.scheduler, label="Scheduler",
                                                        elem_id="scheduler", visible="scheduler" not in ctx.unused)
                    controls["variants"] = gr.Slider(1, MAX_VARIANTS, value=d.variants, step=1, label="Variants",
                                                     elem_id="variants")
                    controls["resolution"] = gr.Slider(MIN_RESOLUTION, MAX_RESOLUTION, value=d.resolution,
                                                       step=RESOLUTION_STEP, label="Resolution cap (long side, px)",
                                                       elem_id="resolution")
                if ctx.unused:  # e.g. Kontext / Qwen: no image guidance, their own scheduler
                    gr.Markdown("Not offered for this editor: " + "; ".join(ctx.unused.values()) + ".",
                                elem_id="unused-controls-note")
        with gr.Row(equal_height=True):
            stylized = gr.Image(label="Stylized (stage 1)", format="png", interactive=False, height=IMAGE_HEIGHT,
                                elem_id="stylized")
            edited = gr.Gallery(label="Edited (stage 2)", format="png", columns=2, interactive=False,
                                height=IMAGE_HEIGHT, object_fit="contain", elem_id="edited")

        image.upload(partial(handlers.on_upload, ctx.limits), inputs=[image], outputs=[image])

        # Inputs by name, from the fields of EditRequest (no second list to keep in the same order). gradio
        # injects gr.Progress only as the default of a positional parameter; the settings come as keywords.
        def on_edit(progress=gr.Progress(track_tqdm=True), **values):
            return handlers.edit(ctx, handlers.EditRequest(**values), progress)

        edit_inputs = {f.name: controls[f.name] for f in fields(handlers.EditRequest)}
        edit_outputs = [stylized, edited, *(controls[name] for name in handlers.RESOLVED_OUTPUTS)]
        # One edit at a time across both triggers: the pipeline is shared and its scheduler is swapped per call.
        for trigger in (edit_button.click, instruction.submit):
            trigger(on_edit, inputs_kwargs=edit_inputs, outputs=edit_outputs, concurrency_limit=1,
                    concurrency_id="edit")
        # Reset writes back every field of context.Controls, then clears the two outputs.
        reset_outputs = [*(controls[f.name] for f in fields(Controls)), stylized, edited]
        reset_button.click(partial(handlers.reset, d), inputs=None, outputs=reset_outputs)
    return demo


def temp_environment(temp_dir: str) -> dict[str, str]:
    """Environment that keeps everything gradio writes inside `temp_dir` (read while serving, not only at start)."""
    return {"GRADIO_TEMP_DIR": temp_dir, "GRADIO_EXAMPLES_CACHE": os.path.join(temp_dir, "examples"),
            # gradio switches matplotlib's backend around every event, which writes a font cache to ~/.cache
            "MPLCONFIGDIR": os.environ.get("MPLCONFIGDIR") or os.path.join(temp_dir, "matplotlib")}


def launch(ctx: AppContext, temp_dir: str, host: str = "127.0.0.1", port: int | None = None,
           share: bool = False, block: bool = True) -> gr.Blocks:
    """Serve the app; gradio keeps uploads and results in `temp_dir` (the caller creates and deletes it).
    With block=False the server keeps running in the background and the environment stays set."""
    saved = {key: os.environ.get(key) for key in temp_environment(temp_dir)}
    os.environ.update(temp_environment(temp_dir))
    try:
        demo = build_ui(ctx)
        demo.queue(default_concurrency_limit=1)
        demo.launch(server_name=host, server_port=port, share=share, max_file_size=ctx.limits.max_bytes,
                    show_error=True, ssr_mode=False, run_history=False, mcp_server=False, inbrowser=False,
                    prevent_thread_lock=not block)
    except BaseException:
        _restore_environment(saved)
        raise
    if block:  # the server has stopped
        _restore_environment(saved)
    return demo


def _restore_environment(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
