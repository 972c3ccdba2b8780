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


def torchrun(data: Path, out: Path, probe_out: Path, steps: int, *extra: str, nproc: int = 2, batch: int = 1,
             fixed_noise: bool = False) -> None:
    flags = edit_flags(data, out, *extra)
    flags[flags.index("--max_train_steps") + 1] = str(steps)
    flags[flags.index("--train_batch_size") + 1] = str(batch)
    flags[flags.index("--checkpointing_steps") + 1] = "3"
    env = dict(os.environ, OMP_NUM_THREADS="1", PROBE_OUT=str(probe_out), PYTHONWARNINGS="ignore",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               **({"PROBE_FIXED_NOISE": "1"} if fixed_noise else {}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
           "127.0.0.1", "--master_port", str(_free_port()), str(PROBE), *flags]
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


def test_update_equals_a_single_process_run_on_the_same_global_batch(triplets, tmp_path):  # noqa: F811
    """2 ranks x batch 1 against 1 process x batch 2 for one epoch (conditioning dropout off, fixed noise and
    timesteps): the same items form each global batch, and the averaged gradients give the same weights. Adam's
    epsilon 1 makes its update linear in the gradient (lr * m / (sqrt(v) + 1) ~ lr * g for these gradients), so a
    sum instead of a mean, or unsynchronised ranks, show; with epsilon 1e-8 Adam normalises every element and turns
    float-order noise in near-zero gradients into full-size updates."""
    extra = ("--conditioning_dropout_prob", "0", "--lr_warmup_steps", "0", "--adam_epsilon", "1",
             "--learning_rate", "1", "--max_grad_norm", "1e6")  # no clipping: it would hide a gradient scale
    torchrun(triplets, tmp_path / "ddp", tmp_path / "ddp_probe", 2, *extra, fixed_noise=True)
    torchrun(triplets, tmp_path / "one", tmp_path / "one_probe", 2, *extra, nproc=1, batch=2, fixed_noise=True)
    items = {name: [json.loads((tmp_path / f"{name}_probe" / f"rank{r}.json").read_text())["items"]
                    for r in ranks] for name, ranks in (("ddp", (0, 1)), ("one", (0,)))}
    one = items["one"][0]
    for step in range(2):  # rank r's item of step s = item r of the single process's batch s
        assert {tuple(items["ddp"][r][step]) for r in (0, 1)} == {tuple(x) for x in one[2 * step:2 * step + 2]}
    before = load_tensors(tmp_path / "ddp_probe" / "rank0_unet_initial.safetensors")
    assert all(torch.equal(before[k], v) for k, v in
               load_tensors(tmp_path / "one_probe" / "rank0_unet_initial.safetensors").items())
    ddp = load_tensors(tmp_path / "ddp_probe" / "rank0_unet.safetensors")
    single = load_tensors(tmp_path / "one_probe" / "rank0_unet.safetensors")
    update = {k: single[k] - before[k] for k in before}
    largest = max(float(u.abs().max()) for u in update.values())
    worst = max(float((ddp[k] - before[k] - update[k]).abs().max()) for k in before)
    print(f"largest update {largest:.3e}, largest difference {worst:.3e}")
    assert largest > 1e-4  # two real steps
    assert worst < 1e-4 * largest, f"2-process update differs from the single-process one by up to {worst:.2e}"
