"""train_edit.py under torchrun (or as one process), instrumented: each rank records the dataset items it drew
(epoch, index), every file it opened for writing, and dumps its UNet weights before the first update and at the
end, so a test can compare the ranks; PROBE_FIXED_NOISE=1 fixes the step's noise and timesteps.

    PROBE_OUT=dir torchrun --nproc_per_node 2 tests/_ddp_probe_edit.py <train_edit.py flags>
    PROBE_OUT=dir python tests/_ddp_probe_edit.py <train_edit.py flags>
"""
from __future__ import annotations

import builtins
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import edit_diffusion.data as data  # noqa: E402
import edit_diffusion.step as step  # noqa: E402
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
# every item, from pixels or from the latent cache, draws its crop / flip from EditDataset.rng once
_rng = data.EditDataset.rng
data.EditDataset.rng = lambda self, i: (record["items"].append([self.epoch, int(i)]), _rng(self, i))[1]
_loss = trainer.edit_loss


def _loss_capturing(unet, *args, **kwargs):
    if "unet" not in captured:  # the weights before the first update
        model = getattr(unet, "module", unet)
        captured["initial"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    captured["unet"] = unet
    return _loss(unet, *args, **kwargs)


trainer.edit_loss = _loss_capturing


class _FixedNoiseTorch:
    """`torch` as edit_diffusion.step sees it under PROBE_FIXED_NOISE: one fixed noise pattern for every sample
    (diffusion noise and posterior samples alike) and timestep 500, so the update depends on the data alone and
    runs that split a batch differently over processes can be compared."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def randn(shape, generator=None, device=None, dtype=None):
        pattern = torch.randn(1, *shape[1:], generator=torch.Generator().manual_seed(0))
        return pattern.expand(*shape).to(device=device, dtype=dtype)

    @staticmethod
    def randint(low, high, size, generator=None, device=None):
        return torch.full(size, 500, dtype=torch.long, device=device)


if os.environ.get("PROBE_FIXED_NOISE"):
    step.torch = _FixedNoiseTorch()

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
        save_tensors(captured["initial"], out / f"rank{rank}_unet_initial.safetensors")
    (out / f"rank{rank}.json").write_text(json.dumps(record))
