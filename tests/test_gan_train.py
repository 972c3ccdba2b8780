"""Few-step runs of train_gan.py in both modes: checkpoints, TensorBoard tags, exact resume, flag errors."""
import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from common.checkpoints import load_tensors, read_metadata
from common.training import RESULT_KEYS
from stylize_gan.checkpoint import load_generator, load_training_state, save_generator
from train_gan import cli, parse_args

from _gan_fixtures import TINY_TRAIN_FLAGS, make_animegan_dataset, make_paired_folders, single_thread  # noqa: F401


def _events(log_dir):
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def animegan_root(tmp_path_factory):
    return make_animegan_dataset(tmp_path_factory.mktemp("animegan") / "dataset", n=8)


def _unpaired(root, out, *extra):
    return ["--dataset", "Toy", "--data-dir", str(root), "--checkpoint-dir", str(out / "ckpt"),
            "--log-dir", str(out / "tb"), *TINY_TRAIN_FLAGS, *extra]


def test_unpaired_smoke_writes_checkpoints_and_tensorboard(animegan_root, tmp_path):
    result = cli(_unpaired(animegan_root, tmp_path, "--epochs", "2", "--initial-epochs", "1",
                           "--save-image-dir", str(tmp_path / "samples")))
    assert result["step"] == 8 and result["epoch"] == 2  # 8 photos / batch 2 = 4 steps per epoch
    assert tuple(result) == RESULT_KEYS and result["files"]["generator"].endswith("generator.safetensors")
    ckpt = tmp_path / "ckpt"
    for name in ("generator.safetensors", "discriminator.safetensors", "training_state.safetensors", "config.json"):
        assert (ckpt / name).is_file()
    assert not list(ckpt.glob("*.pt")) and not list(ckpt.glob("*.pkl"))
    assert (animegan_root / "Toy" / "smooth").is_dir()  # generated once from style/
    config = json.loads((ckpt / "config.json").read_text())
    assert config["adversarial_loss_gen_weight"] == 300 and config["gram_loss_weight"] == 3.0
    assert read_metadata(ckpt / "generator.safetensors")["architecture"] == "unet"
    gen = load_generator(ckpt / "generator.safetensors")
    assert gen(torch.zeros(1, 3, 17, 9)).shape == (1, 3, 17, 9)

    acc = _events(tmp_path / "tb")
    scalars = set(acc.Tags()["scalars"])
    assert {"loss/content", "loss/g_total", "lr/generator", "lr/discriminator"} <= scalars  # init phase
    assert {"loss/g_adv", "loss/d_real", "loss/d_fake", "loss/d_gray", "loss/d_smooth", "loss/gram", "loss/color",
            "loss/tv", "loss/d_total"} <= scalars  # adversarial phase
    assert {"images/train", "images/samples"} <= set(acc.Tags()["images"])
    lrs = {e.step: e.value for e in acc.Scalars("lr/generator")}
    assert lrs[1] == pytest.approx(2e-4) and lrs[8] == pytest.approx(2e-5)  # init LR, then the adversarial LR
    assert sorted(p.name for p in (tmp_path / "samples").iterdir())[0].startswith("images_samples_")


def test_paired_smoke(tmp_path):
    make_paired_folders(tmp_path / "pairs", n=4)
    result = cli(["--mode", "paired", "--data-dir", str(tmp_path / "pairs"), "--checkpoint-dir", str(tmp_path / "ck"),
                  *TINY_TRAIN_FLAGS, "--epochs", "2", "--save-interval", "1"])
    assert result["step"] == 4
    acc = _events(tmp_path / "ck" / "logs")
    assert {"loss/l1", "loss/g_adv", "loss/d_real", "loss/d_fake", "lr/generator"} <= set(acc.Tags()["scalars"])
    assert "images/train" in acc.Tags()["images"]
    disc = load_tensors(tmp_path / "ck" / "discriminator.safetensors")
    assert disc["net.0.parametrizations.weight.original"].shape[1] == 6  # conditional D sees cat(source, target)
    assert json.loads(read_metadata(tmp_path / "ck" / "discriminator.safetensors")["kwargs"])["spectral_norm"]


def test_resume_gen_dis_continues_exactly(animegan_root, tmp_path):
    common = ["--epochs", "2", "--initial-epochs", "1"]
    cli(_unpaired(animegan_root, tmp_path / "a", *common, "--max-steps", "6"))  # stops mid-epoch, adversarial
    opt_states, _, info = load_training_state(tmp_path / "a" / "ckpt" / "training_state.safetensors")
    assert info == {"step": 6, "epoch": 1, "batch_in_epoch": 2}
    assert opt_states["discriminator"]["state"]  # D has Adam moments to resume
    resumed = cli(_unpaired(animegan_root, tmp_path / "a", *common, "--resume_cond", "gen_dis"))
    straight = cli(_unpaired(animegan_root, tmp_path / "b", *common))
    assert resumed["step"] == straight["step"] == 8
    for name in ("generator.safetensors", "discriminator.safetensors"):
        a, b = load_tensors(tmp_path / "a" / "ckpt" / name), load_tensors(tmp_path / "b" / "ckpt" / name)
        for key in b:
            torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5, msg=f"{name}:{key}")
    opt_a, _, _ = load_training_state(tmp_path / "a" / "ckpt" / "training_state.safetensors")
    opt_b, _, _ = load_training_state(tmp_path / "b" / "ckpt" / "training_state.safetensors")
    for net in ("generator", "discriminator"):
        for index, per_param in opt_b[net]["state"].items():
            for key, value in per_param.items():
                torch.testing.assert_close(opt_a[net]["state"][index][key], value, atol=1e-6, rtol=1e-5)
    # the resumed run logged from step 7 on, into the same TensorBoard folder
    steps = sorted(e.step for e in _events(tmp_path / "a" / "tb").Scalars("loss/g_total"))
    assert steps == list(range(1, 9))


def test_resume_gen_loads_generator_only(animegan_root, tmp_path):
    cli(_unpaired(animegan_root, tmp_path, "--epochs", "1", "--initial-epochs", "1", "--max-steps", "2"))
    saved = load_tensors(tmp_path / "ckpt" / "generator.safetensors")
    result = cli(_unpaired(animegan_root, tmp_path, "--epochs", "1", "--initial-epochs", "1", "--max-steps", "1",
                           "--initial-lr", "1e-12", "--resume_cond", "gen"))
    assert result["step"] == 1  # a fresh step counter
    after = load_tensors(tmp_path / "ckpt" / "generator.safetensors")
    for key in saved:
        torch.testing.assert_close(after[key], saved[key], atol=1e-8, rtol=0)


def test_known_flag_names_parse():
    config = parse_args(["--dataset", "Hayao", "--data-dir", "d", "--resume_cond", "gen_dis", "--use_spectral_norm",
                         "False", "--lr-discriminator", "1e-4", "--batch-size", "4", "--initial-epochs", "2",
                         "--initial-lr", "1e-3", "--save-interval", "5", "--lr-generator", "3e-5", "--checkpoint-dir",
                         "c", "--adversarial_loss_disc_weight", "10", "--save-image-dir", "s",
                         "--adversarial_loss_gen_weight", "20", "--content_loss_weight", "2", "--gram_loss_weight",
                         "4", "--chromatic_loss_weight", "30", "--mixed_precision", "bf16", "--max-steps", "9"])
    assert config.use_spectral_norm is False and config.adversarial_loss_gen_weight == 20
    assert config.tv_loss_weight == 1.0 and config.resume_cond == "gen_dis" and config.max_steps == 9
    assert parse_args(["--dataset", "H", "--data-dir", "d", "--use_spectral_norm"]).use_spectral_norm is True
    paired = parse_args(["--mode", "paired", "--paired-a", "a", "--paired-b", "b"])
    assert paired.l1_loss_weight == 100 and paired.adversarial_loss_gen_weight == 1 and paired.initial_epochs == 0


@pytest.mark.parametrize("argv,message", [
    (["--dataset", "H", "--data-dir", "d", "--resume_cond", "maybe"], "--resume_cond"),
    (["--dataset", "H", "--data-dir", "d", "--use_spectral_norm", "perhaps"], "--use_spectral_norm"),
    (["--dataset", "H", "--data-dir", "d", "--image-size", "8"], "--image-size"),
    (["--dataset", "H", "--data-dir", "d", "--batch-size", "0"], "--batch-size"),
    (["--dataset", "H", "--data-dir", "d", "--initial-epochs", "5", "--epochs", "2"], "--initial-epochs"),
    (["--data-dir", "d"], "--dataset"),
    (["--mode", "paired", "--paired-a", "a"], "paired"),
    (["--dataset", "H", "--data-dir", "d", "--norm", "batch"], "--norm"),
    (["--dataset", "H", "--data-dir", "d", "--ink-lr-scale", "0"], "--ink-lr-scale"),
    (["--dataset", "H", "--data-dir", "d", "--ink-lr-scale", "nan"], "--ink-lr-scale"),
    (["--dataset", "H", "--data-dir", "d", "--ink-lr-scale", "5"], "--gen-ink"),
    (["--dataset", "H", "--data-dir", "/nonexistent/dataset"], "/nonexistent/dataset"),
])
def test_bad_flags_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_run_level_errors_exit_2(animegan_root, tmp_path, capsys):
    argv = _unpaired(animegan_root, tmp_path, "--epochs", "1", "--initial-epochs", "0", "--max-steps", "1")
    with pytest.raises(SystemExit):
        cli(argv + ["--resume_cond", "gen_dis"])  # nothing to resume
    assert "no generator.safetensors" in capsys.readouterr().err
    cli(argv)
    with pytest.raises(SystemExit):
        cli(argv)  # would replace the checkpoint of the previous run
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(argv + ["--resume_cond", "gen_dis", "--gen-width", "8"])  # flags differ from the checkpoint
    assert "built as unet" in capsys.readouterr().err
    vgg = [a for a in argv if a not in ("--content_backbone", "efficientnet_lite0")]
    with pytest.raises(SystemExit):
        cli(vgg + ["--overwrite", "--vgg_weights", str(tmp_path / "missing.pth")])
    err = capsys.readouterr().err
    assert "efficientnet_lite0" in err and len(err.strip().splitlines()) == 1


def test_resume_accepts_a_generator_saved_before_newer_options(animegan_root, tmp_path):
    """A file written before `residual` / `ink` existed has neither in its header: they were off."""
    cli(_unpaired(animegan_root, tmp_path, "--epochs", "1", "--initial-epochs", "1", "--max-steps", "2"))
    path = tmp_path / "ckpt" / "generator.safetensors"
    gen = load_generator(path)
    old_kwargs = dict(in_channels=3, out_channels=3, width=4, depth=2, res_blocks=1, norm="layer")  # TINY_TRAIN_FLAGS
    save_generator(gen, path, "unet", old_kwargs)
    result = cli(_unpaired(animegan_root, tmp_path, "--epochs", "1", "--initial-epochs", "1", "--max-steps", "1",
                           "--resume_cond", "gen"))
    assert result["step"] == 1


def test_ink_generator_trains_logs_and_resumes_exactly(animegan_root, tmp_path):
    """--gen-ink: the ink parameters get their own LR group (scaled), their values reach TensorBoard, and a
    resumed run ends where an uninterrupted one does."""
    common = ["--epochs", "2", "--initial-epochs", "1", "--gen-ink", "--ink-lr-scale", "5"]
    cli(_unpaired(animegan_root, tmp_path / "a", *common, "--max-steps", "6"))
    resumed = cli(_unpaired(animegan_root, tmp_path / "a", *common, "--resume_cond", "gen_dis"))
    straight = cli(_unpaired(animegan_root, tmp_path / "b", *common))
    assert resumed["step"] == straight["step"] == 8
    a = load_tensors(tmp_path / "a" / "ckpt" / "generator.safetensors")
    b = load_tensors(tmp_path / "b" / "ckpt" / "generator.safetensors")
    assert "ink.offset" in b
    for key in b:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5, msg=key)
    opt, _, _ = load_training_state(tmp_path / "b" / "ckpt" / "training_state.safetensors")
    convs, ink = opt["generator"]["param_groups"]
    assert len(ink["params"]) == 4 and ink["lr_scale"] == 5.0
    assert ink["lr"] == pytest.approx(5.0 * convs["lr"])
    events = _events(tmp_path / "b" / "tb")
    assert {"ink/offset", "ink/sharpness", "ink/weight_box9"} <= set(events.Tags()["scalars"])
