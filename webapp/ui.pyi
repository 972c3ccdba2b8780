"""The page: input and settings on top, the stylized intermediate and the edited result side by side below.
Every event calls a function of `handlers`; this file only lays components out and wires them."""
from __future__ import annotations

import os
from functools import partial

import gradio as gr

from chain.defaults import EXAMPLES
from common.images import list_images

from . import handlers
from .context import MAX_RESOLUTION, MAX_STEPS, MAX_VARIANTS, MIN_RESOLUTION, MODES, RESOLUTION_STEP, AppContext
from .context import scheduler_choices

TITLE = "stylize-edit: photo → style (GAN) → instruction edit (InstructPix2Pix)"

from gradio.events import Dependency

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
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


def example_paths() -> list[str]:
    """Bundled example images (none while examples/ is empty or absent)."""
    return [str(p) for p in list_images(EXAMPLES)] if EXAMPLES.is_dir() else []


def _mode(value: str, elem_id: str) -> gr.Radio:
    return gr.Radio(list(MODES), value=value, show_label=False, elem_id=elem_id, min_width=120)


def build_ui(ctx: AppContext) -> gr.Blocks:
    """Lay out the page and wire every event to its handler."""
    d = ctx.defaults
    with gr.Blocks(title="stylize-edit", analytics_enabled=False) as demo:
        gr.Markdown(f"## {TITLE}")
        with gr.Row():
            with gr.Column():
                image = UploadImage(label="Input image", type="filepath", sources=["upload"], elem_id="input-image")
                examples = example_paths()
                if examples:
                    gr.Examples(examples=[[p] for p in examples], inputs=[image], label="Bundled examples",
                                cache_examples=False)
            with gr.Column():
                style = gr.Dropdown(list(ctx.generators), value=d.style, label="Stage 1: style", elem_id="style")
                instruction = gr.Textbox(label="Stage 2: edit instruction", placeholder="make it black and white",
                                         elem_id="instruction")
                with gr.Row():
                    edit_button = gr.Button("Edit", variant="primary", elem_id="edit-button")
                    reset_button = gr.Button("Reset", elem_id="reset-button")
                with gr.Row():
                    steps = gr.Number(d.steps, precision=0, minimum=1, maximum=MAX_STEPS, label="Steps",
                                      elem_id="steps")
                    steps_mode = _mode(d.steps_mode, "steps-mode")
                with gr.Row():
                    cfg_text = gr.Number(d.cfg_text, minimum=0, step=0.1, label="Text guidance", elem_id="cfg-text")
                    cfg_text_mode = _mode(d.cfg_text_mode, "cfg-text-mode")
                with gr.Row():
                    cfg_image = gr.Number(d.cfg_image, minimum=1, step=0.1, label="Image guidance",
                                          elem_id="cfg-image")
                    cfg_image_mode = _mode(d.cfg_image_mode, "cfg-image-mode")
                with gr.Row():
                    seed = gr.Number(d.seed, precision=0, minimum=0, label="Seed", elem_id="seed")
                    seed_mode = _mode(d.seed_mode, "seed-mode")
                with gr.Row():
                    scheduler = gr.Dropdown(scheduler_choices(), value=d.scheduler, label="Scheduler",
                                            elem_id="scheduler")
                    variants = gr.Slider(1, MAX_VARIANTS, value=d.variants, step=1, label="Variants",
                                         elem_id="variants")
                    resolution = gr.Slider(MIN_RESOLUTION, MAX_RESOLUTION, value=d.resolution, step=RESOLUTION_STEP,
                                           label="Resolution cap (long side, px)", elem_id="resolution")
        with gr.Row(equal_height=True):
            stylized = gr.Image(label="Stylized (stage 1)", format="png", interactive=False, elem_id="stylized")
            edited = gr.Gallery(label="Edited (stage 2)", format="png", columns=2, interactive=False,
                                elem_id="edited")

        image.upload(partial(handlers.on_upload, ctx.limits), inputs=[image], outputs=[image])

        def on_edit(*values, progress=gr.Progress(track_tqdm=True)):
            return handlers.edit(ctx, handlers.EditRequest(*values), progress)

        edit_inputs = [image, style, instruction, steps, steps_mode, cfg_text, cfg_text_mode, cfg_image,
                       cfg_image_mode, seed, seed_mode, scheduler, variants, resolution]
        edit_button.click(on_edit, inputs=edit_inputs, outputs=[stylized, edited, steps, cfg_text, cfg_image, seed],
                          concurrency_limit=1)
        instruction.submit(on_edit, inputs=edit_inputs,
                           outputs=[stylized, edited, steps, cfg_text, cfg_image, seed], concurrency_limit=1)
        # Same order as the fields of context.Controls, then the two outputs.
        reset_outputs = [style, steps, steps_mode, cfg_text, cfg_text_mode, cfg_image, cfg_image_mode, seed,
                         seed_mode, scheduler, variants, resolution, stylized, edited]
        reset_button.click(partial(handlers.reset, d), inputs=None, outputs=reset_outputs)
    return demo


def launch(ctx: AppContext, temp_dir: str, host: str = "127.0.0.1", port: int | None = None,
           share: bool = False, block: bool = True) -> gr.Blocks:
    """Serve the app; gradio keeps uploads and results in `temp_dir` (the caller creates and deletes it)."""
    # gradio reads these when the page and its routes are built, hence before build_ui.
    os.environ["GRADIO_TEMP_DIR"] = temp_dir
    os.environ["GRADIO_EXAMPLES_CACHE"] = os.path.join(temp_dir, "examples")
    demo = build_ui(ctx)
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name=host, server_port=port, share=share, max_file_size=ctx.limits.max_bytes,
                show_error=True, ssr_mode=False, run_history=False, mcp_server=False, inbrowser=False,
                prevent_thread_lock=not block)
    return demo