"""train_gan.py under torchrun, instrumented: each rank records the dataset items it drew, how often it saved a
checkpoint or an image grid, and dumps its final generator / discriminator weights, so a test can compare ranks.

    PROBE_OUT=dir torchrun --nproc_per_node 2 tests/_ddp_probe.py <train_gan.py flags>
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import stylize_gan.data as data  # noqa: E402
import stylize_gan.trainer as trainer  # noqa: E402
from common.checkpoints import save_tensors  # noqa: E402

record = {"items": [], "saves": 0, "grids": 0}
nets = {}


def _wrap(module, name, before=None, after=None):
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        if before:
            before(*args, **kwargs)
        out = real(*args, **kwargs)
        if after:
            after(out, *args, **kwargs)
        return out
    setattr(module, name, wrapper)


_wrap(data.PairedDataset, "__getitem__", before=lambda self, idx: record["items"].append(int(idx)))
_wrap(trainer, "save_checkpoint", before=lambda *a, **k: record.__setitem__("saves", record["saves"] + 1))
_wrap(trainer, "log_grid", before=lambda *a, **k: record.__setitem__("grids", record["grids"] + 1))
_wrap(trainer, "gan_step", before=lambda batch, n, *a, **k: nets.__setitem__("nets", n))

from train_gan import cli  # noqa: E402

try:
    cli(sys.argv[1:])
finally:
    out, rank = Path(os.environ["PROBE_OUT"]), int(os.environ.get("RANK", "0"))
    out.mkdir(parents=True, exist_ok=True)
    if "nets" in nets:
        for name in ("generator", "discriminator"):
            net = getattr(nets["nets"], name)
            net = getattr(net, "module", net)  # DDP wrapper -> the model
            save_tensors(net.state_dict(), out / f"rank{rank}_{name}.safetensors")
    (out / f"rank{rank}.json").write_text(json.dumps(record))
