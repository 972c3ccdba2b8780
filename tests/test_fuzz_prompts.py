"""Property-based prompt handling: random unicode (emoji, RTL, control and zero-width characters), whitespace
and very long instructions either edit the image (at its size) or fail with the clear 'empty instruction'
error, in the editing API and in infer.py's config."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from common.errors import UserInputError

from _webapp_models import build_tiny_editor

PROMPT_SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WHITESPACE = " \t\n\r\x0b\x0c\u00a0\u2003\u3000\u2028"
prompts = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=WHITESPACE, max_size=20),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=300, max_size=2000),  # far over 77 tokens
    st.sampled_from(["make it red", "\u200b", "\x00", "🙂" * 50, "اجعلها حمراء", "make it\nblack and white"]),
)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from edit_diffusion.editor import load_editor
    torch.set_num_threads(1)
    return load_editor(str(build_tiny_editor(tmp_path_factory.mktemp("fuzz_editor") / "editor")))


@PROMPT_SETTINGS
@given(prompt=prompts)
def test_edit_api_handles_any_prompt(pipe, prompt):
    from edit_diffusion.editor import EditSettings, edit_image
    image = Image.new("RGB", (24, 17), (90, 140, 30))
    settings_ = EditSettings(steps=1, resolution=16, seed=0)
    if not prompt.strip():
        with pytest.raises(UserInputError, match="empty"):
            edit_image(pipe, image, prompt, settings_)
        return
    outputs, _ = edit_image(pipe, image, prompt, settings_)
    assert len(outputs) == 1 and outputs[0].size == image.size and outputs[0].mode == "RGB"


@settings(max_examples=60, deadline=None)
@given(prompt=prompts)
def test_infer_config_accepts_or_names_the_flag(prompt):
    from infer import InferConfig
    if prompt.strip():
        assert InferConfig(input="a.png", output="b.png", edit=prompt).edit == prompt
    else:
        with pytest.raises(ValueError, match="--edit"):
            InferConfig(input="a.png", output="b.png", edit=prompt)
