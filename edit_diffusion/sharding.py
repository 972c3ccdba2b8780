"""What sharded training (accelerate + FSDP version 2, configs/accelerate/fsdp2.yaml) asks of the trainer: FSDP2
replaces each parameter by a DTensor shard when the model is prepared, so everything that holds parameters
(gradient clipping, EMA, checkpoints of the EMA, the final save) must take them from the prepared model, and
gather full tensors where a file needs them. Without sharding every helper here is the identity."""
from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor, distribute_tensor


def fit_wrap_classes(model: torch.nn.Module) -> None:
    """Drop `_no_split_modules` names the model does not contain: FSDP2's auto-wrap refuses unknown names, and
    transformers' CLIPTextModel lists CLIPVisionEmbeddings (shared with the vision tower)."""
    names = getattr(model, "_no_split_modules", None)
    if names:
        present = {type(m).__name__ for m in model.modules()}
        model._no_split_modules = [n for n in names if n in present]


def trainable_parameters(*models: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters an optimizer step changes, from the prepared (possibly sharded) models."""
    return [p for model in models for p in model.parameters() if p.requires_grad]


def full_tensors(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Plain full tensors (a collective for DTensor shards: every rank must call it)."""
    return [t.full_tensor() if isinstance(t, DTensor) else t for t in tensors]


def copy_full_into(live: torch.Tensor, full: torch.Tensor) -> None:
    """Load a full tensor into `live`, re-sharded like `live` when it is a DTensor."""
    full = full.to(device=live.device, dtype=live.dtype)
    if isinstance(live, DTensor):
        full = distribute_tensor(full, live.device_mesh, live.placements)
    live.data.copy_(full)


def full_model(accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """The prepared model as a plain module with full weights (for save_pretrained / the pipeline). Under FSDP a
    fresh copy built from the model's config (every rank must call this: it gathers); else the unwrapped model."""
    bare = accelerator.unwrap_model(model)
    if not any(isinstance(p, DTensor) for p in bare.parameters()):
        return bare
    state = accelerator.get_state_dict(model)  # full tensors (gathered to rank 0 and CPU)
    base = next(c for c in type(bare).__mro__ if "FSDP" not in c.__name__)  # fully_shard's FSDP<Name> subclass
    copy = base.from_config(bare.config) if hasattr(base, "from_config") else base(bare.config)
    if state:  # empty on ranks other than the main one
        copy.load_state_dict(state)
    return copy
