"""train_gan.py with the AnimeGANv2 architecture (fresh and fine-tuned from a published file), options refused with
it, and VGG19 found the way users have it: torchvision's file in the torch hub cache (real name, full key layout,
random weights), downloaded through torchvision's weights API when online, one line when offline and absent."""
from __future__ import annotations

import json
import urllib.error

import pytest
import torch

from common.checkpoints import load_tensors, read_metadata
from common.errors import UserInputError
from stylize_gan.animegan import AnimeGANv2Generator
from stylize_gan.backbones import build_vgg19
from stylize_gan.checkpoint import load_generator
from train_gan import cli

from _gan_fixtures import TINY_TRAIN_FLAGS, make_animegan_dataset, single_thread  # noqa: F401


def torchvision_vgg19_name() -> str:
    """The file name torchvision's weights API caches VGG19 under (vgg19-dcbb9e9d.pth), from torchvision itself."""
    from torchvision.models import VGG19_Weights
    return VGG19_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]


@pytest.fixture(scope="module")
def animegan_root(tmp_path_factory):
    return make_animegan_dataset(tmp_path_factory.mktemp("animegan") / "dataset", n=4)


def _unpaired(root, out, *extra):
    return ["--dataset", "Toy", "--data-dir", str(root), "--checkpoint-dir", str(out / "ckpt"),
            "--log-dir", str(out / "tb"), *TINY_TRAIN_FLAGS, "--max-steps", "2", *extra]


def test_animegan_v2_fine_tunes_from_a_published_file(animegan_root, tmp_path):
    published = AnimeGANv2Generator().state_dict()
    torch.manual_seed(5)
    published = {k: v + torch.randn_like(v) * 0.01 for k, v in published.items()}  # not what a fresh init gives
    torch.save(published, tmp_path / "face_paint_512_v2.pt")
    result = cli(_unpaired(animegan_root, tmp_path, "--generator", "animegan_v2", "--init-generator",
                           str(tmp_path / "face_paint_512_v2.pt"), "--initial-lr", "1e-9"))
    assert result["step"] == 2
    path = tmp_path / "ckpt" / "generator.safetensors"
    meta = read_metadata(path)  # our self-describing safetensors
    assert meta["architecture"] == "animegan_v2" and json.loads(meta["kwargs"]) == {"align_corners": True}
    assert isinstance(load_generator(path), AnimeGANv2Generator)
    trained = load_tensors(path)
    assert trained.keys() == published.keys()
    # two Adam steps of 1e-9 from the published weights
    assert max(float((trained[k] - published[k]).abs().max()) for k in published) < 1e-6
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["norm"] is None


@pytest.mark.parametrize("extra,message", [
    (["--generator", "animegan_v2", "--gen-ink"], "--gen-ink"),
    (["--generator", "animegan_v2", "--gen-residual", "--norm", "layer"], "--gen-residual, --norm"),
    (["--align-corners", "False"], "--align-corners only applies"),
    (["--init-generator", "g.onnx"], "ONNX"),
    (["--init-generator", "g.pt", "--resume_cond", "gen"], "fresh run"),
])
def test_options_that_do_not_apply_are_refused(animegan_root, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        cli(_unpaired(animegan_root, tmp_path, *extra))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and message in err and "\n" not in err


def test_init_generator_of_another_architecture_is_one_line(animegan_root, tmp_path, capsys):
    torch.save(AnimeGANv2Generator().state_dict(), tmp_path / "paprika.pt")
    with pytest.raises(SystemExit) as exit_info:
        cli(_unpaired(animegan_root, tmp_path, "--init-generator", str(tmp_path / "paprika.pt")))  # unet run
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "paprika.pt" in err and "do not match" in err and "\n" not in err


# --- VGG19 as users have it

def write_fake_torchvision_vgg19(path) -> None:
    """torchvision's vgg19 state dict layout, every key and shape; random conv weights, and the 120 M classifier
    weights (never read: the content loss stops at conv4_4) as one random value broadcast, so the file stays small."""
    from torchvision.models import vgg19
    with torch.device("meta"):
        layout = vgg19().state_dict()
    g = torch.Generator().manual_seed(0)
    state = {k: (torch.randn(v.shape, generator=g) * 0.05 if k.startswith("features.")
                 else torch.randn(1, generator=g).expand(v.shape)) for k, v in layout.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


def test_vgg19_from_the_torch_hub_cache_runs_train_gan(animegan_root, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    write_fake_torchvision_vgg19(tmp_path / "torch_home" / "hub" / "checkpoints" / torchvision_vgg19_name())
    monkeypatch.setattr(torch.hub, "download_url_to_file", pytest.fail)  # found, not downloaded
    result = cli(_unpaired(animegan_root, tmp_path, "--content_backbone", "vgg19"))
    assert result["step"] == 2 and (tmp_path / "ckpt" / "generator.safetensors").is_file()


def test_vgg19_download_through_torchvision_and_offline_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cached = tmp_path / "torch_home" / "hub" / "checkpoints" / torchvision_vgg19_name()

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(UserInputError) as err:
        build_vgg19()
    message = str(err.value)
    assert "\n" not in message and str(cached) in message and "--content_backbone efficientnet_lite0" in message

    urls = []

    def online(url, dst, *args, **kwargs):  # stands in for the network: the file torchvision asked for
        urls.append(url)
        write_fake_torchvision_vgg19(cached.parent / "fake.pth")
        (cached.parent / "fake.pth").rename(dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", online)
    backbone = build_vgg19()
    assert urls == ["https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"] and cached.is_file()
    assert backbone(torch.zeros(1, 3, 16, 16)).shape == (1, 512, 2, 2)  # conv4_4 at stride 8
