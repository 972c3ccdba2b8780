"""Resumable training checkpoints `checkpoint-<step>/`: accelerate state in safetensors (models) plus
what accelerate does not hold: EMA weights (safetensors), the step count, and components that are
frozen but not reproducible from the base model (a pre-trained from-scratch VAE, a random text encoder)."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

import torch

from common.checkpoints import load_json, load_tensors, save_json, save_tensors
from common.errors import UserInputError

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
    if not (path / "trainer_state.json").is_file():
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


def save_checkpoint(accelerator, out_dir: Path, step: int, config, parts, ema) -> Path:
    """Write checkpoint-<step> and prune to --checkpoints_total_limit. Called on every rank (accelerate writes
    each rank's RNG state). The folder is filled under a temporary name and renamed when complete, so a run
    killed mid-save leaves the previous checkpoints as they were and `latest` never finds half a folder."""
    path = out_dir / f"checkpoint-{step}"
    tmp = out_dir / f".{path.name}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)  # left by a run killed while saving
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    if accelerator.is_main_process:
        for name in _frozen_to_save(config):
            getattr(parts, name).save_pretrained(str(tmp / name), safe_serialization=True)
        if ema is not None:
            tensors = {f"shadow.{i:05d}": p for i, p in enumerate(ema.shadow_params)}
            save_tensors(tensors, tmp / "ema.safetensors",
                         metadata={"optimization_step": str(ema.optimization_step), "decay": str(ema.decay)})
        save_json({"global_step": step, "config": config.to_dict()}, tmp / "trainer_state.json")
    accelerator.wait_for_everyone()  # every rank's files are in tmp
    if accelerator.is_main_process:
        if path.exists():  # the same step saved before (a resumed run stopped again at once)
            shutil.rmtree(path)
        os.replace(tmp, path)
        prune(out_dir, config.checkpoints_total_limit)
    accelerator.wait_for_everyone()
    return path


def restore_frozen_components(path: Path, parts) -> None:
    """Load the saved frozen components into the live modules (in place, config included)."""
    from transformers import CLIPTextModel
    if (path / "vae").is_dir():
        saved = type(parts.vae).from_pretrained(str(path / "vae"))  # AutoencoderKL or AutoencoderTiny
        parts.vae.load_state_dict(saved.state_dict())
        parts.vae.register_to_config(scaling_factor=saved.config.scaling_factor)
    if (path / "text_encoder").is_dir():
        parts.text_encoder.load_state_dict(CLIPTextModel.from_pretrained(str(path / "text_encoder")).state_dict())


def load_trainer_state(path: Path, ema) -> int:
    """The global step of a checkpoint; restores EMA shadow weights when the run uses EMA."""
    state = load_json(path / "trainer_state.json")
    if ema is not None:
        ema_file = path / "ema.safetensors"
        if not ema_file.is_file():
            raise UserInputError(f"{path}: has no EMA weights but --use_ema is set")
        from common.checkpoints import read_metadata
        tensors = load_tensors(ema_file)
        shadow = [tensors[k] for k in sorted(tensors)]
        for live, saved in zip(ema.shadow_params, shadow):
            live.data.copy_(saved.to(live.device, live.dtype))
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


def check_hub_reachable(repo_id: str) -> None:
    """Fail before training, in one line, when --push_to_hub cannot work (offline, no token)."""
    try:
        from huggingface_hub import HfApi
        HfApi().create_repo(repo_id, exist_ok=True)
    except Exception as err:  # noqa: BLE001 - network and auth errors come in many types
        raise UserInputError(f"--push_to_hub: cannot reach the Hugging Face hub for {repo_id} (no network or no "
                             f"login?): {type(err).__name__}") from None


def push_folder(folder: Path, repo_id: str) -> None:
    from huggingface_hub import HfApi
    HfApi().upload_folder(repo_id=repo_id, folder_path=str(folder), ignore_patterns=["checkpoint-*", "logs/*"])
