"""train_edit.py under torchrun, instrumented: each rank records the dataset items it drew (epoch, index), every
file it opened for writing, and dumps its final UNet weights, so a test can compare the ranks.

    PROBE_OUT=dir torchrun --nproc_per_node 2 tests/_ddp_probe_edit.py <train_edit.py flags>
"""
from __future__ import annotations

import builtins
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import edit_diffusion.data as data  # noqa: E402
import edit_diffusion.trainer as trainer  # noqa: E402
from common.checkpoints import save_tensors  # noqa: E402

record = {"items": [], "written": []}
captured = {}
_open, _replace = builtins.open, os.replace


def _open_recording(file, mode="r", *args, **kwargs):
    if any(flag in mode for flag in "wax+"):
        record["written"].append(os.path.abspath(str(file)))
    return _open(file, mode, *args, **kwargs)


def _replace_recording(src, dst, *args, **kwargs):
    record["written"].append(os.path.abspath(str(dst)))
    return _replace(src, dst, *args, **kwargs)


builtins.open, os.replace = _open_recording, _replace_recording
_getitem = data.EditDataset.__getitem__
data.EditDataset.__getitem__ = lambda self, i: (record["items"].append([self.epoch, int(i)]), _getitem(self, i))[1]
_loss = trainer.edit_loss


def _loss_capturing(unet, *args, **kwargs):
    captured["unet"] = unet
    return _loss(unet, *args, **kwargs)


trainer.edit_loss = _loss_capturing

from train_edit import cli  # noqa: E402

try:
    cli(sys.argv[1:])
finally:
    builtins.open, os.replace = _open, _replace
    out, rank = Path(os.environ["PROBE_OUT"]), int(os.environ.get("RANK", "0"))
    out.mkdir(parents=True, exist_ok=True)
    if "unet" in captured:
        unet = getattr(captured["unet"], "module", captured["unet"])  # DDP wrapper -> the model
        save_tensors(unet.state_dict(), out / f"rank{rank}_unet.safetensors")
    (out / f"rank{rank}.json").write_text(json.dumps(record))
