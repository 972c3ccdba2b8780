"""Stage-2 training speed options (bench/bench_train_edit.py measures each against the diffusers recipe's step):
the latent cache swapped in for the pixel dataset, the AdamW kernel, channels_last / torch.compile of the UNet,
and loader workers that persist across epochs."""
from __future__ import annotations

import torch

from .latent_cache import CACHE_FOLDER, open_latent_cache

# --adam_implementation -> torch.optim.AdamW keyword ("default": PyTorch's own choice for the device)
ADAM_KERNELS = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}, "loop": {"foreach": False}}
WEIGHT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def make_loader(config, dataset) -> torch.utils.data.DataLoader:
    """Shuffled training batches. Own generator: creating a loader iterator draws a base seed from it instead of
    from the global RNG, so a resumed run (one more iterator) keeps the noise / timestep / dropout stream."""
    workers = config.dataloader_num_workers
    return torch.utils.data.DataLoader(dataset, batch_size=config.train_batch_size, shuffle=True,
                                       num_workers=workers, drop_last=False, persistent_workers=workers > 0,
                                       pin_memory=workers > 0 and torch.cuda.is_available(),
                                       generator=torch.Generator().manual_seed(dataset.seed))


def adam_kernel(config, optimizer_class) -> dict:
    """The --adam_implementation keyword for torch's AdamW (other optimizers, e.g. 8-bit AdamW, take none)."""
    return ADAM_KERNELS[config.adam_implementation] if optimizer_class is torch.optim.AdamW else {}


def apply_unet_options(config, unet: torch.nn.Module) -> None:
    """channels_last weights (convolutions then keep activations in that layout); in-place torch.compile (the
    module keeps its class and state-dict keys, so checkpoints and save_pretrained are unchanged)."""
    if config.channels_last:
        unet.to(memory_format=torch.channels_last)
    if config.torch_compile:
        unet.compile()


def batch_size_of(batch: dict[str, torch.Tensor]) -> int:
    return len(next(iter(batch.values())))


def to_device(batch: dict[str, torch.Tensor], device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Pixels / latents / embeddings in the mixed-precision dtype; token ids stay integers."""
    return {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in batch.items()}


def use_latent_cache(run) -> bool:
    """Swap run.dataset / run.loader (and run.null_ids, for cached text) for the latent cache when it applies;
    the frozen modules move to the device in the training dtype first, so the cache encodes as a step would."""
    config, accelerator = run.config, run.accelerator
    if config.cache_latents == "never":
        return False
    cast = {"dtype": WEIGHT_DTYPES[accelerator.mixed_precision]} if accelerator.mixed_precision in WEIGHT_DTYPES \
        else {}
    vae = run.parts.vae.to(accelerator.device, **cast)
    text_encoder = None if config.train_text_encoder else run.parts.text_encoder.to(accelerator.device, **cast)
    cached = open_latent_cache(run.dataset, vae, text_encoder, run.null_ids, run.out_dir / CACHE_FOLDER,
                               config.latent_cache_max_gb * 1e9, accelerator.is_main_process,
                               accelerator.wait_for_everyone)
    if cached is None:
        return False
    run.dataset, run.loader = cached, make_loader(config, cached)
    if text_encoder is not None:
        run.null_ids = cached.null_text()  # (1, L, D) empty-prompt embedding for text dropout
    return True
