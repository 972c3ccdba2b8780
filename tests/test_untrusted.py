"""Untrusted files: a malicious pickle given to every loader that accepts .pt / .pth / .ckpt / .bin is refused
with a one-line UserInputError and its payload never runs; our own files are safetensors only; and the source
tree never unpickles arbitrary objects or enables trust_remote_code."""
from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch

from common.checkpoints import load_weights_any
from common.errors import UserInputError

from _bad_input_workspace import Evil
from _webapp_models import build_tiny_editor, build_tiny_generator

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def evil(tmp_path):
    """(make(name) -> path of a malicious pickle, marker that exists iff a payload ran)."""
    marker = tmp_path / "PWNED"

    def make(name: str, legacy: bool = False) -> Path:
        path = tmp_path / name
        payload = {"state_dict": {"w": Evil(marker)}}
        if legacy:  # plain pickle stream, not torch's zip container
            with open(path, "wb") as handle:
                pickle.dump(payload, handle)
        else:
            torch.save(payload, path)
        return path
    return make, marker


def test_the_payload_really_runs_when_unpickled(evil):
    """Guard for the other tests: the file is genuinely malicious (full unpickling creates the marker)."""
    make, marker = evil
    torch.load(make("probe.ckpt"), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("name,legacy", [("a.ckpt", False), ("a.pt", False), ("a.pth", True), ("a.bin", False)])
def test_common_loader_refuses(evil, name, legacy):
    make, marker = evil
    with pytest.raises(UserInputError, match="refused"):
        load_weights_any(make(name, legacy))
    assert not marker.exists()


def test_gan_loader_refuses(evil):
    from stylize_gan.checkpoint import load_discriminator, load_generator
    make, marker = evil
    for name in ("gen.ckpt", "gen.safetensors"):  # a pickle under either name
        with pytest.raises(UserInputError, match="safetensors"):
            load_generator(make(name))
    with pytest.raises(UserInputError):
        load_discriminator(make("disc.pt"))
    assert not marker.exists()


def test_backbone_weight_loaders_refuse(evil):
    from stylize_gan.backbones import build_efficientnet_lite0, build_vgg19
    make, marker = evil
    with pytest.raises(UserInputError, match="refused"):
        build_vgg19(make("vgg19.pth"))
    with pytest.raises(UserInputError, match="refused"):
        build_efficientnet_lite0(make("lite0.pth", legacy=True))
    assert not marker.exists()


def test_editor_single_file_refuses(evil):
    from edit_diffusion.editor import load_editor
    from edit_diffusion.loading import load_pipeline
    make, marker = evil
    for name in ("sd.ckpt", "sd.pt", "sd.bin"):
        with pytest.raises(UserInputError, match="refused"):
            load_pipeline(str(make(name)))
    with pytest.raises(UserInputError, match="refused"):
        load_editor(str(make("editor.ckpt")))
    assert not marker.exists()


def test_editor_folder_with_pickled_weights_never_runs_them(evil, tmp_path):
    """A diffusers folder whose UNet weights are a malicious .bin: diffusers loads .bin with weights_only."""
    from edit_diffusion.editor import load_editor
    make, marker = evil
    folder = build_tiny_editor(tmp_path / "editor")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    shutil.move(make("diffusion_pytorch_model.bin"), folder / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(UserInputError, match="cannot load the diffusers folder"):
        load_editor(str(folder))
    assert not marker.exists()


def test_our_checkpoints_are_safetensors(tmp_path):
    """Files we write for weights parse as safetensors (no pickle container)."""
    from safetensors import safe_open
    gen = build_tiny_generator(tmp_path / "g.safetensors")
    with safe_open(str(gen), framework="pt") as handle:
        assert handle.metadata()["format"] == "stylize_gan.generator"
    with open(gen, "rb") as handle:
        assert not handle.read(2).startswith(b"PK")  # not a torch.save zip


def _call_args(text: str, start: int) -> str:
    """The argument text of the call whose "(" is at text[start - 1] (balanced parentheses)."""
    depth = 1
    for i in range(start, min(len(text), start + 2000)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    return text[start:]


UNSAFE = [
    (re.compile(r"torch\.load\("), "torch.load without weights_only=True"),
    (re.compile(r"\bpickle\.loads?\(|\bcloudpickle\b|\bdill\.load"), "unpickling"),
    (re.compile(r"trust_remote_code\s*=\s*True"), "trust_remote_code=True"),
    (re.compile(r"allow_pickle\s*=\s*True"), "numpy allow_pickle=True"),
]


def test_source_tree_never_unpickles():
    """Static guard over our code (tests excluded: they write malicious files on purpose)."""
    offenders = []
    for path in REPO.rglob("*.py"):
        rel = path.relative_to(REPO)
        if rel.parts[0] in ("tests", "work_data", "test-artifacts") or "egg-info" in rel.parts[0] or \
                rel.parts[0].startswith("."):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for pattern, what in UNSAFE:
            for match in pattern.finditer(text):
                if what.startswith("torch.load") and re.search(r"weights_only\s*=\s*True",
                                                               _call_args(text, match.end())):
                    continue
                line = text[: match.start()].count("\n") + 1
                offenders.append(f"{rel}:{line}: {what}")
    assert not offenders, "\n".join(offenders)


def test_accelerate_resume_reads_every_pickle_weights_only(evil, tmp_path):
    """Every file `accelerator.load_state` unpickles (recorded from a real save / load) is read with weights_only:
    a malicious pickle planted in its place is refused (or skipped) without running. Our resume refuses it in
    one line before accelerate sees it (tests/test_damaged_checkpoints.py)."""
    from accelerate import checkpointing as acc_ckpt
    make, marker = evil
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    folder = tmp_path / "state"
    folder.mkdir()
    acc_ckpt.save_accelerator_state(str(folder), [model.state_dict()], [opt], [sched], [], 0, 1,
                                    safe_serialization=False)
    read, real_load = [], acc_ckpt.load

    def recording_load(f, *args, **kwargs):
        read.append(Path(f).name)
        return real_load(f, *args, **kwargs)

    def load_all():
        acc_ckpt.load_accelerator_state(str(folder), [model], [opt], [sched], [], 0)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(acc_ckpt, "load", recording_load)
        load_all()
    assert {"pytorch_model.bin", "optimizer.bin", "scheduler.bin", "random_states_0.pkl"} <= set(read), read
    for name in read:
        original = (folder / name).read_bytes()
        shutil.copy(make(name), folder / name)
        try:
            load_all()
        except Exception:  # noqa: BLE001 - refused in any form is fine; running the payload is not
            pass
        finally:
            (folder / name).write_bytes(original)
        assert not marker.exists(), f"accelerate ran the pickle planted as {name}"


def test_generator_header_numbers_never_allocate_before_the_shapes_match(tmp_path, monkeypatch):
    """A generator file whose header asks for width 4000 (tens of GB) with small weights: refused from the shapes
    in the file's header, the network only ever built on the meta device (no memory)."""
    import json
    from safetensors import safe_open
    from safetensors.torch import save_file
    from stylize_gan import checkpoint as gan_ckpt
    from stylize_gan.networks import GENERATORS
    tiny = build_tiny_generator(tmp_path / "g.safetensors")
    with safe_open(str(tiny), framework="pt") as handle:
        meta, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
    meta["kwargs"] = json.dumps({**json.loads(meta["kwargs"]), "width": 4000})
    save_file(tensors, str(tmp_path / "huge.safetensors"), metadata=meta)
    devices, build = [], GENERATORS["unet"]

    def recording(**kwargs):
        devices.append(torch.empty(0).device.type)
        return build(**kwargs)
    monkeypatch.setitem(GENERATORS, "unet", recording)
    with pytest.raises(UserInputError, match="do not match the architecture"):
        gan_ckpt.load_generator(tmp_path / "huge.safetensors")
    assert devices == ["meta"]
    gan_ckpt.load_generator(tiny)  # a sound file: shapes checked on meta, then built for real
    assert devices == ["meta", "meta", "cpu"]
