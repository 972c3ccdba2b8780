"""Shared fixtures: offline, deterministic, small."""
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def real_photo():
    """A real photo (skimage's astronaut, public domain) as PIL RGB."""
    from PIL import Image
    from skimage import data
    return Image.fromarray(data.astronaut())
