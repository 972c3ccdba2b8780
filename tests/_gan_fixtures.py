"""Small real-photo datasets for the stage-1 tests: crops of skimage's public-domain photos, an AnimeGAN-layout
folder (photos + a posterized 'style') and paired folders. Everything tiny and seeded."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket")

# Flags that make train_gan.py fast on CPU (tiny networks, 32 px crops).
TINY_TRAIN_FLAGS = ["--image-size", "32", "--batch-size", "2", "--gen-width", "4", "--gen-depth", "2",
                    "--gen-res-blocks", "1", "--disc-width", "8", "--disc-layers", "2", "--log-interval", "1",
                    "--content_backbone", "efficientnet_lite0", "--seed", "0"]


def photo_crops(n: int, size: int = 40, seed: int = 0) -> list[np.ndarray]:
    """n random (size, size, 3) uint8 crops of real photos."""
    from skimage import data
    rng = np.random.default_rng(seed)
    sources = [getattr(data, name)() for name in PHOTO_NAMES]
    crops = []
    for i in range(n):
        img = sources[i % len(sources)]
        y, x = rng.integers(0, img.shape[0] - size), rng.integers(0, img.shape[1] - size)
        crops.append(np.ascontiguousarray(img[y:y + size, x:x + size]))
    return crops


def posterize(rgb: np.ndarray) -> np.ndarray:
    """A crude 'cartoon' style: 4 levels per channel."""
    return (rgb // 64 * 64 + 32).astype(np.uint8)


def make_animegan_dataset(root: Path, n: int = 8, style: str = "Toy", with_smooth: bool = False) -> Path:
    """<root>/train_photo, <root>/<style>/style (and smooth if asked), <root>/test/test_photo."""
    for sub in ("train_photo", f"{style}/style", "test/test_photo"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, crop in enumerate(photo_crops(n)):
        Image.fromarray(crop).save(root / "train_photo" / f"{i:03d}.jpg")
        Image.fromarray(posterize(crop)).save(root / style / "style" / f"{i:03d}.png")
    if with_smooth:
        from stylize_gan.smoothing import edge_smooth
        (root / style / "smooth").mkdir()
        for path in sorted((root / style / "style").iterdir()):
            Image.fromarray(edge_smooth(np.asarray(Image.open(path)))).save(root / style / "smooth" / path.name)
    Image.fromarray(photo_crops(1, size=36, seed=1)[0][:, :30]).save(root / "test" / "test_photo" / "t.png")
    return root


def make_paired_folders(root: Path, n: int = 6) -> tuple[Path, Path]:
    """<root>/A (sketch-like posterized gray) and <root>/B (photos), matching names."""
    (root / "A").mkdir(parents=True, exist_ok=True)
    (root / "B").mkdir(parents=True, exist_ok=True)
    for i, crop in enumerate(photo_crops(n, seed=3)):
        gray = np.repeat(crop.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
        Image.fromarray(gray).save(root / "A" / f"{i:03d}.png")
        Image.fromarray(crop).save(root / "B" / f"{i:03d}.png")
    return root / "A", root / "B"


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny tensors gain nothing from threads, and on a shared 2-core machine OpenMP threads spinning against
    other processes make each op ~100x slower; restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
