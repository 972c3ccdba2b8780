"""train_gan.py as 2 CPU processes (torchrun, gloo): the ranks hold identical weights after steps, only rank 0
writes checkpoints / TensorBoard logs / image grids, each epoch's data is split between the ranks without
overlap, and a multi-process run stopped mid-epoch and resumed ends exactly like an uninterrupted one."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.checkpoints import load_tensors, read_metadata

from _gan_fixtures import make_paired_folders

REPO = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).resolve().parent / "_ddp_probe.py"
N_PAIRS, BATCH, EPOCHS = 8, 2, 3  # 8 pairs / (2 ranks x batch 2) = 2 steps per epoch on each rank
STEPS = EPOCHS * N_PAIRS // (2 * BATCH)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(data: Path, ckpt: Path, probe_out: Path, *extra: str) -> subprocess.CompletedProcess:
    flags = ["--mode", "paired", "--data-dir", str(data), "--checkpoint-dir", str(ckpt), "--image-size", "32",
             "--batch-size", str(BATCH), "--gen-width", "4", "--gen-depth", "2", "--gen-res-blocks", "1",
             "--disc-width", "8", "--disc-layers", "2", "--epochs", str(EPOCHS), "--initial-epochs", "1",
             "--save-interval", "1", "--log-interval", "1", "--threads", "1",
             "--save-image-dir", str(ckpt / "images"), *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", PROBE_OUT=str(probe_out), PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(PROBE), *flags]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_tensors(path)


def _equal(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    data = make_paired_folders(root / "data", n=N_PAIRS)[0].parent
    torchrun(data, root / "ckpt", root / "probe")
    return root


def test_ranks_hold_identical_weights(reference):
    for name in ("generator", "discriminator"):
        r0 = _weights(reference / "probe" / f"rank0_{name}.safetensors")
        r1 = _weights(reference / "probe" / f"rank1_{name}.safetensors")
        assert not _equal(r0, r1), f"{name} differs between ranks"
    saved = load_tensors(reference / "ckpt" / "generator.safetensors")
    assert not _equal(saved, _weights(reference / "probe" / "rank0_generator.safetensors"))
    assert json.loads(read_metadata(reference / "ckpt" / "generator.safetensors")["extra"])["step"] == STEPS


def test_only_rank_zero_writes(reference):
    rank0 = json.loads((reference / "probe" / "rank0.json").read_text())
    rank1 = json.loads((reference / "probe" / "rank1.json").read_text())
    assert rank0["saves"] == EPOCHS and rank0["grids"] == 2 * EPOCHS  # train + samples grid per save
    assert rank1["saves"] == 0 and rank1["grids"] == 0
    assert len(list((reference / "ckpt" / "logs").glob("events.out.tfevents.*"))) == 1
    assert len(list((reference / "ckpt" / "images").glob("images_samples_*.png"))) == EPOCHS
    assert not [p for p in (reference / "ckpt").iterdir() if p.name.endswith(".tmp")]


def test_each_epoch_is_split_between_ranks(reference):
    items = [json.loads((reference / "probe" / f"rank{r}.json").read_text())["items"] for r in (0, 1)]
    for epoch in range(EPOCHS):
        mine = [{i % N_PAIRS for i in rank if i // N_PAIRS == epoch} for rank in items]
        assert len(mine[0]) == len(mine[1]) == N_PAIRS // 2, mine
        assert not mine[0] & mine[1] and mine[0] | mine[1] == set(range(N_PAIRS))


def test_resumed_multiprocess_run_matches_uninterrupted(reference, tmp_path):
    data = reference / "data"
    torchrun(data, tmp_path / "ckpt", tmp_path / "probe1", "--max-steps", "3")  # stops mid-epoch 2
    state = json.loads(read_metadata(tmp_path / "ckpt" / "training_state.safetensors")["info"])
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (3, 1, 1)
    torchrun(data, tmp_path / "ckpt", tmp_path / "probe2", "--resume_cond", "gen_dis")
    for name in ("generator", "discriminator"):
        assert not _equal(_weights(reference / "ckpt" / f"{name}.safetensors"),
                          _weights(tmp_path / "ckpt" / f"{name}.safetensors")), f"{name} differs after resume"
    ref_state = load_tensors(reference / "ckpt" / "training_state.safetensors")
    new_state = load_tensors(tmp_path / "ckpt" / "training_state.safetensors")
    optim = [k for k in ref_state if k.startswith("optim.")]
    assert optim and not _equal({k: ref_state[k] for k in optim}, {k: new_state[k] for k in optim})
    # both ranks continued their own random streams: rank 1's saved state differs from rank 0's
    assert not torch.equal(new_state["rng.rank0.torch"], new_state["rng.rank1.torch"])
