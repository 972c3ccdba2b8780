"""Two gloo processes shard a tiny stage-2 UNet with FSDP2 (`fully_shard`, as accelerate's fsdp2.yaml does) and
compare, against an unsharded copy fed the same global batch: the clipped gradient norm over the prepared model's
parameters, one AdamW + EMA step, the EMA's gathered full tensors, and a re-sharded load. Writes rank<r>.json.

    PROBE_OUT=dir torchrun --nproc_per_node 2 tests/_fsdp_probe_edit.py
"""
from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from diffusers.training_utils import EMAModel  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402

from edit_diffusion.scratch import build_unet  # noqa: E402
from edit_diffusion.sharding import copy_full_into, full_tensors, trainable_parameters  # noqa: E402

from _edit_fixtures import TINY_UNET  # noqa: E402


def loss_of(unet, latents, hidden):
    return unet(latents, torch.full((latents.shape[0],), 500), hidden).sample.pow(2).mean()


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    plain = build_unet({**TINY_UNET, "in_channels": 8})
    sharded = copy.deepcopy(plain)
    for block in [*sharded.down_blocks, *sharded.up_blocks]:
        fully_shard(block)
    fully_shard(sharded)
    latents, hidden = torch.randn(2 * world, 8, 8, 8), torch.randn(2 * world, 77, 32)
    mine = slice(2 * rank, 2 * rank + 2)  # each rank's half of the global batch

    params = trainable_parameters(sharded)
    optimizers = [torch.optim.AdamW(plain.parameters(), lr=1e-2), torch.optim.AdamW(params, lr=1e-2)]
    emas = [EMAModel(plain.parameters(), decay=0.5), EMAModel(params, decay=0.5)]
    norms = []
    for step in range(3):
        loss_of(plain, latents, hidden).backward()
        loss_of(sharded, latents[mine], hidden[mine]).backward()  # FSDP averages gradients over ranks
        norms.append([float(torch.nn.utils.clip_grad_norm_(plain.parameters(), 0.01)),
                      float(full_tensors([torch.nn.utils.clip_grad_norm_(params, 0.01)])[0])])
        for model, optimizer, ema in zip((plain, sharded), optimizers, emas):
            optimizer.step()
            optimizer.zero_grad()
            ema.step(model.parameters())
    weights = [[p.detach() for p in plain.parameters()], full_tensors([p.detach() for p in params])]
    shadows = [emas[0].shadow_params, full_tensors(emas[1].shadow_params)]
    worst = lambda a, b: max(float((x - y).abs().max()) for x, y in zip(a, b))  # noqa: E731
    live = params[0]
    copy_full_into(live, torch.ones(live.shape))
    result = {"norms": norms, "sharded": all(type(p).__name__ == "DTensor" for p in params),
              "weights_differ": worst(*weights), "ema_differs": worst(*shadows),
              "ema_lags": worst(shadows[0], weights[0]),
              "reloaded": bool(torch.equal(full_tensors([live.detach()])[0], torch.ones(live.shape)))}
    out = Path(os.environ["PROBE_OUT"])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
