"""The web app under load, at the handler layer (the functions the browser triggers): two tabs editing at once
each get their own result and seed, and a failed edit (out of memory, injected) leaves a message and an app that
still edits."""
from __future__ import annotations

import random
import threading
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from _webapp_models import build_tiny_editor, build_tiny_generator, real_photo
from webapp import handlers
from webapp.context import FIX, RANDOMIZE, load_context


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    root = tmp_path_factory.mktemp("webapp_load")
    return load_context(editor=str(build_tiny_editor(root / "editor")),
                        gan_checkpoint=str(build_tiny_generator(root / "generator.safetensors")), device="cpu")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    real_photo().save(path)
    return str(path)


def _request(ctx, image, instruction, seed, seed_mode=FIX, variants=2) -> handlers.EditRequest:
    d = ctx.defaults
    return handlers.EditRequest(image=image, style=d.style, instruction=instruction, steps=2, steps_mode=FIX,
                                cfg_text=7.5, cfg_text_mode=FIX, cfg_image=1.5, cfg_image_mode=FIX, seed=seed,
                                seed_mode=seed_mode, scheduler=d.scheduler, variants=variants, resolution=32)


def _pixels(result) -> list[np.ndarray]:
    stylized, edited = result[0], result[1]
    return [np.asarray(stylized)] + [np.asarray(img) for img in edited]


def _concurrently(*calls):
    """Run the calls on threads released at the same moment; returns their results in order."""
    barrier, results, errors = threading.Barrier(len(calls)), [None] * len(calls), []

    def run(i, call):
        barrier.wait()
        try:
            results[i] = call()
        except BaseException as err:  # noqa: BLE001 - re-raised below in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    if errors:
        raise errors[0]
    return results


def test_two_tabs_editing_at_once_get_their_own_results(ctx, photo, tmp_path):
    a = _request(ctx, photo, "make it black and white", seed=1)
    b = _request(ctx, photo, "make it sepia", seed=2, variants=3)
    alone_a, alone_b = handlers.edit(ctx, a), handlers.edit(ctx, b)
    both_a, both_b = _concurrently(lambda: handlers.edit(ctx, a), lambda: handlers.edit(ctx, b))
    for alone, both in ((alone_a, both_a), (alone_b, both_b)):
        assert both[2:] == alone[2:]  # steps, guidance, seed used
        assert len(both[1]) == len(alone[1])
        for x, y in zip(_pixels(both), _pixels(alone)):
            assert np.array_equal(x, y)
    assert alone_a[-1] == 1 and alone_b[-1] == 2 and not np.array_equal(_pixels(alone_a)[1], _pixels(alone_b)[1])
    # the downloads: gradio files each result under a folder named by its content hash, so the two tabs'
    # files never replace each other and each holds its own picture
    gallery = gr.Gallery(format="png")
    gallery.GRADIO_CACHE = str(tmp_path)  # gradio's cache folder, here kept inside the test's own folder
    files = [[Path(item.image.path) for item in gallery.postprocess(r[1]).root] for r in (both_a, both_b)]
    assert not set(files[0]) & set(files[1])
    for paths, result in zip(files, (both_a, both_b)):
        for path, img in zip(paths, result[1]):
            with Image.open(path) as saved:
                assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(img))


def test_randomized_seeds_of_concurrent_tabs_are_their_own(ctx, photo):
    """Each tab draws from its own generator; the seed shown is the seed used (rerunning it reproduces)."""
    a = _request(ctx, photo, "make it black and white", seed=None, seed_mode=RANDOMIZE, variants=1)
    ra, rb = _concurrently(lambda: handlers.edit(ctx, a, rng=random.Random(10)),
                           lambda: handlers.edit(ctx, a, rng=random.Random(20)))
    assert ra[-1] != rb[-1]
    again = handlers.edit(ctx, _request(ctx, photo, "make it black and white", seed=rb[-1], variants=1))
    assert np.array_equal(_pixels(again)[1], _pixels(rb)[1])


@pytest.mark.parametrize("where", ["stylize", "edit"])
def test_out_of_memory_leaves_a_message_and_a_working_app(ctx, photo, monkeypatch, where):
    import chain.pipeline
    from edit_diffusion import engine

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    request = _request(ctx, photo, "make it black and white", seed=3, variants=1)
    expected = handlers.edit(ctx, request)
    with monkeypatch.context() as patch:
        patch.setattr(*((chain.pipeline, "stylize_pil") if where == "stylize" else (engine, "denoise")), oom)
        with pytest.raises(gr.Error, match="memory") as err:
            handlers.edit(ctx, request)
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)
    after = handlers.edit(ctx, request)  # the next click works and gives the same picture
    for x, y in zip(_pixels(after), _pixels(expected)):
        assert np.array_equal(x, y)
