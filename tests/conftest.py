"""Shared fixtures: offline, deterministic, small."""
import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A private Hugging Face cache for the session (read by huggingface_hub / diffusers / datasets at import, so
# set here, before any test module imports them). Empty unless a test asks for the `hub_cache` fixture, which
# fills it with tiny copies of the hub ids users type (tests/hub_cache.py); never the user's own cache.
_HF_HOME = tempfile.mkdtemp(prefix="stylize-edit-hf-home-")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
os.environ["HF_HOME"] = _HF_HOME
for _var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "TRANSFORMERS_CACHE", "HF_TOKEN"):
    os.environ.pop(_var, None)
# Under pytest-xdist (README's `-n 2`) each worker owns one core: two threads per worker would oversubscribe.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def real_photo():
    """A real photo (skimage's astronaut, public domain) as PIL RGB."""
    from PIL import Image
    from skimage import data
    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="session")
def hub_cache():
    """The session's HF_HOME filled with tiny offline copies of the hub ids users type (built once, on one
    thread); returns what tests/hub_cache.py wrote (snapshots, the weights they hold)."""
    from pathlib import Path

    import hub_cache as hub

    return _on_one_thread(hub.build_hub_cache, Path(_HF_HOME))


def _on_one_thread(build, *args):
    """Tiny models build fastest on one thread (and two busy cores run them many times slower otherwise)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build(*args)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def modern_hub_cache():
    """The session's HF_HOME with tiny SDXL-IP2P, FLUX.1 Kontext and Qwen-Image-Edit (2509) repos under their real
    ids (tests/hub_cache_modern.py), built once on one thread."""
    from pathlib import Path

    import hub_cache_modern as modern

    return _on_one_thread(modern.build_modern_cache, Path(_HF_HOME))


@pytest.fixture
def fresh_accelerate_state():
    """A training run in this process gets the accelerate state its own flags ask for, and leaves none behind:
    accelerate keeps one process-wide state (a CLI run is one process), so an earlier in-process run's mixed
    precision would otherwise stick (or make `Accelerator(mixed_precision=...)` refuse)."""
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
