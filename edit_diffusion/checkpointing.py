"""Resumable training checkpoints `checkpoint-<step>/`: accelerate state in safetensors (models) plus
what accelerate does not hold: EMA weights (safetensors), the step count, and components that are
frozen but not reproducible from the base model (a pre-trained from-scratch VAE, a random text encoder)."""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from pathlib import Path

import torch

from common.checkpoints import load_json, load_tensors, read_metadata, save_json, save_tensors
from common.errors import UserInputError, one_line

from .sharding import copy_full_into, full_tensors

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(out_dir: Path) -> list[Path]:
    """checkpoint-<step> folders of a run, oldest first."""
    if not out_dir.is_dir():
        return []
    found = [p for p in out_dir.iterdir() if p.is_dir() and CHECKPOINT.match(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT.match(p.name).group(1)))


def find_resume_dir(out_dir: Path, spec: str | None) -> Path | None:
    """`latest` -> newest checkpoint (None with a notice when there is none); a name or path -> that folder."""
    if spec is None:
        return None
    if spec == "latest":
        found = list_checkpoints(out_dir)
        if not found:
            print(f"--resume_from_checkpoint latest: no checkpoint in {out_dir}; starting a new run")
            return None
        return found[-1]
    path = Path(spec) if Path(spec).is_dir() else out_dir / spec
    if not ((path / "trainer_state.json").is_file() or is_diffusers_run_checkpoint(path)):
        raise UserInputError(f"--resume_from_checkpoint {spec}: no such checkpoint (looked for {path})")
    return path


def prune(out_dir: Path, keep: int | None) -> None:
    if keep is None:
        return
    for old in list_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old)


def _frozen_to_save(config) -> list[str]:
    names = []
    if config.vae_config or config.vae_pretrain_steps:
        names.append("vae")
    if config.text_encoder_config and not config.train_text_encoder:
        names.append("text_encoder")
    return names


def save_checkpoint(accelerator, out_dir: Path, step: int, config, parts, ema,
                    extra: dict[str, tuple[dict, dict]] | None = None) -> Path:
    """Write checkpoint-<step> and prune to --checkpoints_total_limit. Called on every rank (accelerate writes
    each rank's RNG state). The folder is filled under a temporary name and renamed when complete, so a run
    killed mid-save leaves the previous checkpoints as they were and `latest` never finds half a folder.
    `extra`: file name -> (tensors, string metadata) written beside accelerate's state (the modern families'
    loop keeps its trained weights there: accelerate would save the whole frozen base with them)."""
    path = out_dir / f"checkpoint-{step}"
    tmp = out_dir / f".{path.name}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)  # left by a run killed while saving
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    shadow = full_tensors(ema.shadow_params) if ema is not None else None  # every rank: gathers FSDP shards
    if accelerator.is_main_process:
        for name in _frozen_to_save(config):
            getattr(parts, name).save_pretrained(str(tmp / name), safe_serialization=True)
        if ema is not None:
            tensors = {f"shadow.{i:05d}": p for i, p in enumerate(shadow)}
            save_tensors(tensors, tmp / "ema.safetensors",
                         metadata={"optimization_step": str(ema.optimization_step), "decay": str(ema.decay)})
        for name, (tensors, metadata) in (extra or {}).items():
            save_tensors(tensors, tmp / name, metadata=metadata)
    accelerator.wait_for_everyone()  # every rank's files are in tmp
    if accelerator.is_main_process:
        # written last: marks a complete save, and its manifest lets a resume refuse damaged or swapped files
        save_json({"global_step": step, "config": config.to_dict(), "files": file_manifest(tmp)},
                  tmp / "trainer_state.json")
        if path.exists():  # the same step saved before (a resumed run stopped again at once)
            shutil.rmtree(path)
        os.replace(tmp, path)
        prune(out_dir, config.checkpoints_total_limit)
    accelerator.wait_for_everyone()
    return path


def file_manifest(folder: Path) -> dict[str, dict]:
    """relative path -> {bytes, sha256} of every file under `folder` (trainer_state.json aside)."""
    manifest = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "trainer_state.json"):
        with open(file, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        manifest[file.relative_to(folder).as_posix()] = {"bytes": file.stat().st_size, "sha256": digest}
    return manifest


def _read_pickled(path: Path):
    """A torch file the way accelerate reads it (weights_only: tensors and plain containers, never code)."""
    from accelerate.utils import load
    try:
        return load(path, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - the unpickler raises many types; all mean "refused"
        raise UserInputError(f"{path}: damaged or not a training-state file, refused "
                             f"({type(err).__name__}: {one_line(err)[:120]})") from None


def verify_resume_folder(path: Path, process_index: int) -> None:
    """Before anything is loaded: every file of the save is there, unchanged (manifest), and each file
    accelerate will unpickle holds what it should. One line naming the first bad file; never a silent
    inexact resume (accelerate skips unreadable RNG states without a word)."""
    state = load_json(path / "trainer_state.json")
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        raise UserInputError(f"{path / 'trainer_state.json'}: not a trainer state (no global_step)")
    for name, want in (state.get("files") or {}).items():  # saves made before the manifest have none
        file = path / name
        if not file.is_file():
            raise UserInputError(f"{file}: missing from the checkpoint")
        with open(file, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if file.stat().st_size != want.get("bytes") or digest != want.get("sha256"):
            raise UserInputError(f"{file}: damaged or replaced since the save (size or checksum differs)")
    for file in [path / "model.safetensors", path / "ema.safetensors",
                 *path.glob("vae/*.safetensors"), *path.glob("text_encoder/*.safetensors")]:
        if file.exists():
            read_metadata(file)  # header and declared size: a truncated file fails here
    _verify_optimizer_state(path)
    rng_file = path / f"random_states_{process_index}.pkl"
    if not rng_file.is_file():  # accelerate would go on with fresh random streams without a word
        raise UserInputError(f"{rng_file}: missing (saved by fewer processes?); the run could not continue exactly")
    rng = _read_pickled(rng_file)
    if not isinstance(rng, dict) or not torch.is_tensor(rng.get("torch_manual_seed")) or \
            not {"random_state", "numpy_random_seed"} <= rng.keys():
        raise UserInputError(f"{rng_file}: not a random-state file")


def _verify_optimizer_state(path: Path) -> None:
    """optimizer.bin (one pickled state), or FSDP's SHARDED_STATE_DICT layout: accelerate writes the optimizer as a
    torch.distributed.checkpoint folder optimizer_0/ (.distcp shards plus a .metadata index written last), which
    is never unpickled whole; its files' checksums are the manifest's, and the index must be there."""
    sharded = path / "optimizer_0"
    if not (path / "optimizer.bin").exists() and sharded.is_dir():
        if not (sharded / ".metadata").is_file():
            raise UserInputError(f"{sharded}: sharded optimizer state without its .metadata index (an unfinished save)")
        return
    optimizer = _read_pickled(path / "optimizer.bin")
    if not isinstance(optimizer, dict) or not {"state", "param_groups"} <= optimizer.keys():
        raise UserInputError(f"{path / 'optimizer.bin'}: not an optimizer state")


def load_accelerator_state(accelerator, path: Path, lr_scheduler) -> None:
    """`accelerator.load_state` of a folder `verify_resume_folder` passed; a state that does not fit the live
    model, optimizer or scheduler (another run's checkpoint) is reported in one line."""
    scheduler = _read_pickled(path / "scheduler.bin")  # accelerate would take any dict without a word
    if not isinstance(scheduler, dict) or scheduler.keys() != lr_scheduler.state_dict().keys():
        raise UserInputError(f"{path / 'scheduler.bin'}: not a state of this run's --lr_scheduler")
    try:
        accelerator.load_state(str(path))
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        raise UserInputError(f"{path}: does not fit this run (other flags or model?): "
                             f"{type(err).__name__}: {one_line(err)[:200]}") from None


def is_diffusers_run_checkpoint(path: Path) -> bool:
    """A checkpoint-N of diffusers' train_instruct_pix2pix.py: its save hook writes the UNet as a save_pretrained
    folder unet/ (and the EMA as unet_ema/) instead of accelerate's model file; it has no trainer_state.json."""
    return (path / "unet" / "config.json").is_file() and not (path / "trainer_state.json").is_file()


def resume_diffusers_run(accelerator, path: Path, unet, optimizer, lr_scheduler, ema) -> int:
    """Continue a diffusers-recipe checkpoint: UNet from unet/, EMA from unet_ema/ (EMAModel.save_pretrained:
    weights plus decay / optimization_step in its config), optimizer, LR scheduler and RNG states from
    accelerate's files; the step from the folder name, as that script reads it. Returns the step."""
    from diffusers import UNet2DConditionModel
    from diffusers.training_utils import EMAModel
    match = CHECKPOINT.match(path.name)
    if match is None:
        raise UserInputError(f"{path}: a diffusers checkpoint folder is named checkpoint-<step>")
    model = accelerator.unwrap_model(unet)
    try:
        saved = UNet2DConditionModel.from_pretrained(str(path / "unet"))
        model.load_state_dict(saved.state_dict())
        if ema is not None:
            if not (path / "unet_ema" / "config.json").is_file():
                raise UserInputError(f"{path}: has no unet_ema/ (EMA weights) but --use_ema is set")
            ema.load_state_dict(EMAModel.from_pretrained(str(path / "unet_ema"), UNet2DConditionModel).state_dict())
            ema.to(accelerator.device)
        optimizer.load_state_dict(_read_pickled(path / "optimizer.bin"))
    except (OSError, RuntimeError, ValueError, KeyError, TypeError) as err:
        if isinstance(err, UserInputError):
            raise
        raise UserInputError(f"{path}: does not fit this run (other model or flags?): "
                             f"{type(err).__name__}: {one_line(err)[:200]}") from None
    scheduler = _read_pickled(path / "scheduler.bin")
    if not isinstance(scheduler, dict) or scheduler.keys() != lr_scheduler.state_dict().keys():
        raise UserInputError(f"{path / 'scheduler.bin'}: not a state of this run's --lr_scheduler")
    lr_scheduler.load_state_dict(scheduler)
    rng_file = path / f"random_states_{accelerator.process_index}.pkl"
    if rng_file.is_file():
        _restore_rng(_read_pickled(rng_file))
    return int(match.group(1))


def _restore_rng(states: dict) -> None:
    """accelerate's random_states_<rank>.pkl: Python, NumPy and torch (CPU / CUDA) generator states."""
    import random

    import numpy as np
    random.setstate(states["random_state"])
    np.random.set_state(states["numpy_random_seed"])
    torch.set_rng_state(states["torch_manual_seed"])
    if torch.cuda.is_available() and "torch_cuda_manual_seed" in states:
        torch.cuda.set_rng_state_all(states["torch_cuda_manual_seed"])


def restore_frozen_components(path: Path, parts) -> None:
    """Load the saved frozen components into the live modules (in place, config included)."""
    from transformers import CLIPTextModel
    try:
        if (path / "vae").is_dir():
            saved = type(parts.vae).from_pretrained(str(path / "vae"))  # AutoencoderKL or AutoencoderTiny
            parts.vae.load_state_dict(saved.state_dict())
            parts.vae.register_to_config(scaling_factor=saved.config.scaling_factor)
        if (path / "text_encoder").is_dir():
            parts.text_encoder.load_state_dict(CLIPTextModel.from_pretrained(str(path / "text_encoder")).state_dict())
    except (OSError, RuntimeError, ValueError, KeyError, TypeError) as err:
        raise UserInputError(f"{path}: saved vae / text_encoder cannot be restored "
                             f"({type(err).__name__}: {one_line(err)[:200]})") from None


def load_trainer_state(path: Path, ema) -> int:
    """The global step of a checkpoint; restores EMA shadow weights when the run uses EMA."""
    state = load_json(path / "trainer_state.json")
    if ema is not None:
        ema_file = path / "ema.safetensors"
        if not ema_file.is_file():
            raise UserInputError(f"{path}: has no EMA weights but --use_ema is set")
        tensors = load_tensors(ema_file)
        shadow = [tensors[k] for k in sorted(tensors)]
        if [t.shape for t in shadow] != [p.shape for p in ema.shadow_params]:
            raise UserInputError(f"{ema_file}: EMA weights of another model (shapes differ)")
        for live, saved in zip(ema.shadow_params, shadow):
            copy_full_into(live, saved)  # re-sharded under FSDP
        ema.optimization_step = int(read_metadata(ema_file)["optimization_step"])
    return int(state["global_step"])


@contextlib.contextmanager
def ema_weights(ema, model: torch.nn.Module):
    """Temporarily swap the EMA weights into `model` (validation edits use them)."""
    if ema is None:
        yield
        return
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    try:
        yield
    finally:
        ema.restore(model.parameters())


def edit_defaults(config, scheduler_name: str) -> dict:
    """edit_defaults.json of the final folder (None fields fall back to the global defaults)."""
    return {"steps": config.default_steps, "cfg_text": config.default_cfg_text,
            "cfg_image": config.default_cfg_image, "scheduler": scheduler_name}


def check_hub_reachable(repo_id: str, token: str | None = None) -> None:
    """Fail before training, in one line, when --push_to_hub cannot work (offline, no token)."""
    try:
        from huggingface_hub import HfApi
        HfApi(token=token).create_repo(repo_id, exist_ok=True)
    except Exception as err:  # noqa: BLE001 - network and auth errors come in many types
        raise UserInputError(f"--push_to_hub: cannot reach the Hugging Face hub for {repo_id} (no network or no "
                             f"login?): {type(err).__name__}") from None


def push_folder(folder: Path, repo_id: str, token: str | None = None) -> None:
    from huggingface_hub import HfApi
    HfApi(token=token).upload_folder(repo_id=repo_id, folder_path=str(folder), ignore_patterns=["checkpoint-*", "logs/*"])
