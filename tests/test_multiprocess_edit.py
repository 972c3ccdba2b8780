"""train_edit.py as 2 CPU processes (torchrun, gloo): identical UNet weights on both ranks, only rank 0 writes
checkpoints / logs / the final pipeline (rank 1 writes nothing but accelerate's own RNG-state file in the
checkpoint), each epoch's triplets are split between the ranks, and a resumed multi-process run ends exactly like
an uninterrupted one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.checkpoints import load_tensors

from test_crash_edit import edit_flags, triplets  # noqa: F401 - module-scoped triplet fixture
from test_multiprocess_gan import _free_port

REPO = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).resolve().parent / "_ddp_probe_edit.py"
STEPS = 6  # 4 triplets / (2 ranks x batch 1) = 2 steps per epoch


def torchrun(data: Path, out: Path, probe_out: Path, steps: int, *extra: str) -> None:
    flags = edit_flags(data, out, *extra)
    flags[flags.index("--max_train_steps") + 1] = str(steps)
    flags[flags.index("--train_batch_size") + 1] = "1"
    flags[flags.index("--checkpointing_steps") + 1] = "3"
    env = dict(os.environ, OMP_NUM_THREADS="1", PROBE_OUT=str(probe_out), PYTHONWARNINGS="ignore",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(PROBE), *flags]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def reference(triplets, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("ddp_edit")
    torchrun(triplets, root / "out", root / "probe", STEPS)
    return root


def _unet(folder: Path) -> dict[str, torch.Tensor]:
    return load_tensors(next((folder / "unet").glob("*.safetensors")))


def test_ranks_hold_identical_weights(reference):
    r0 = load_tensors(reference / "probe" / "rank0_unet.safetensors")
    r1 = load_tensors(reference / "probe" / "rank1_unet.safetensors")
    assert r0.keys() == r1.keys() and all(torch.equal(r0[k], r1[k]) for k in r0)
    final = _unet(reference / "out")
    assert all(torch.equal(final[k], r0[k]) for k in final)


def test_only_rank_zero_writes(reference):
    out = str((reference / "out").resolve())
    written = {r: json.loads((reference / "probe" / f"rank{r}.json").read_text())["written"] for r in (0, 1)}
    mine = {r: [p for p in written[r] if p.startswith(out)] for r in (0, 1)}
    assert any(p.endswith("model.safetensors") or "checkpoint-" in p for p in mine[0])
    assert all(os.path.basename(p) == "random_states_1.pkl" for p in mine[1]), mine[1]
    assert (reference / "out" / "checkpoint-6" / "random_states_1.pkl").is_file()  # rank 1's own RNG state
    assert len(list((reference / "out" / "logs").glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in (reference / "out").glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    assert not list((reference / "out").glob(".checkpoint-*"))


def test_each_epoch_is_split_between_ranks(reference):
    items = [json.loads((reference / "probe" / f"rank{r}.json").read_text())["items"] for r in (0, 1)]
    for epoch in range(STEPS // 2):
        mine = [{i for e, i in rank if e == epoch} for rank in items]
        assert len(mine[0]) == len(mine[1]) == 2, mine
        assert not mine[0] & mine[1] and mine[0] | mine[1] == set(range(4))


def test_resumed_multiprocess_run_matches_uninterrupted(reference, triplets, tmp_path):  # noqa: F811
    torchrun(triplets, tmp_path / "out", tmp_path / "probe1", 3)  # checkpoint-3: in the middle of epoch 1
    torchrun(triplets, tmp_path / "out", tmp_path / "probe2", STEPS, "--resume_from_checkpoint", "latest")
    ref, new = _unet(reference / "out"), _unet(tmp_path / "out")
    differ = [k for k in ref if not torch.equal(ref[k], new[k])]
    assert not differ, f"UNet differs after a multi-process resume: {differ[:5]}"
