"""train_edit.py with the latent cache (the default when crops are fixed) against --cache_latents never: one seed,
200 steps of a tiny model, the mean loss of the last 50 steps within 3%; the cache file is written next to the run
and reused by a resume."""
from __future__ import annotations

import pytest
import torch

import train_edit

from _edit_fixtures import write_inverted_triplets

STEPS = 200


@pytest.fixture(scope="module")
def square(tmp_path_factory):
    folder = tmp_path_factory.mktemp("square_triplets")
    write_inverted_triplets(folder, ["astronaut", "chelsea", "coffee", "rocket"] * 2, [32] * 8)  # = resolution
    return folder


def flags(data, out, *extra) -> list[str]:
    return ["--unet_config", "tiny", "--vae_config", "tiny", "--text_encoder_config", "tiny", "--tokenizer", "clip",
            "--prediction_type", "epsilon", "--train_data_dir", str(data), "--resolution", "32", "--random_flip",
            "--train_batch_size", "4", "--max_train_steps", str(STEPS), "--checkpointing_steps", "100",
            "--learning_rate", "1e-3", "--lr_warmup_steps", "10", "--seed", "0", "--default_steps", "2",
            "--output_dir", str(out), *extra]


def losses(out) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(out / "logs"), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.value for e in acc.Scalars("loss/train")]


@pytest.fixture(scope="module")
def runs(square, tmp_path_factory):
    root = tmp_path_factory.mktemp("cache_runs")
    torch.set_num_threads(1)
    train_edit.cli(flags(square, root / "cached"))
    train_edit.cli(flags(square, root / "uncached", "--cache_latents", "never"))
    return root


def test_cached_training_matches_uncached_loss(runs):
    cached, uncached = losses(runs / "cached"), losses(runs / "uncached")
    assert len(cached) == len(uncached) == STEPS
    tail = sum(cached[-50:]) / 50, sum(uncached[-50:]) / 50
    print(f"mean loss of the last 50 steps: cached {tail[0]:.5f}, uncached {tail[1]:.5f}")
    assert abs(tail[0] - tail[1]) <= 0.03 * tail[1], tail
    assert sum(cached[:10]) / 10 > 1.2 * tail[0]  # it learned something: the comparison is not of two flat lines
    # the cache draws the same random numbers as encoding would, so the runs agree step by step, not only on average
    worst = max(abs(a - b) / b for a, b in zip(cached, uncached))
    print(f"largest per-step loss difference {worst:.2e}")
    assert worst < 1e-2


def test_cache_file_next_to_the_run_and_reused_on_resume(runs, square, caplog):
    files = list((runs / "cached" / "latent_cache").glob("latents-*.safetensors"))
    assert len(files) == 1 and not (runs / "uncached" / "latent_cache").exists()
    stamp = files[0].stat().st_mtime_ns
    with caplog.at_level("WARNING"):
        train_edit.cli(flags(square, runs / "cached", "--max_train_steps", str(STEPS + 2),
                             "--resume_from_checkpoint", "latest"))
    assert "latent cache built" not in caplog.text and "latent cache:" in caplog.text
    assert files[0].stat().st_mtime_ns == stamp
