"""train_edit.py on the modern editors (tiny offline repos of tests/hub_cache_modern.py): two LoRA steps per family,
saved with the pipeline's LoRA saver, loaded back by the stock pipeline's `load_lora_weights` and by
`--editor ... --lora`, and changing the edit; full SDXL-IP2P fine-tuning; flags the loop does not use refused."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from safetensors.torch import load_file

import hub_cache_modern as modern
import infer
import train_edit
from edit_diffusion.editor import EditSettings, load_editor
from test_modern_editors import WORK, one_thread_with_timeout, photo, small_qwen_condition  # noqa: F401 - fixtures

TRAINED = (modern.SDXL_IP2P, modern.KONTEXT, modern.QWEN_EDIT, modern.QWEN_EDIT_PLUS)


@pytest.fixture(scope="module")
def triplets(tmp_path_factory):
    """A metadata.jsonl folder of two (photo, inverted photo, "invert the colors") triplets."""
    folder = tmp_path_factory.mktemp("triplets")
    rows = []
    for i in range(2):
        picture = photo(40 + 8 * i, 40)
        picture.save(folder / f"in{i}.png")
        ImageOps.invert(picture).save(folder / f"out{i}.png")
        rows.append({"input_image": f"in{i}.png", "edit_prompt": "invert the colors", "edited_image": f"out{i}.png"})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return folder


def train(repo: str, data, out, *extra: str) -> dict:
    return train_edit.main(train_edit.parse_args([
        "--pretrained_model_name_or_path", repo, "--train_data_dir", str(data), "--resolution", "32",
        "--train_batch_size", "2", "--max_train_steps", "2", "--learning_rate", "1e-2", "--seed", "0",
        "--output_dir", str(out), *extra]))


@pytest.fixture(scope="module")
def lora_runs(triplets, tmp_path_factory):
    """repo -> train_edit.py's result of a 2-step rank-4 LoRA run, trained on first use (shared by tests)."""
    runs = {}

    def run(repo: str) -> dict:
        if repo not in runs:
            runs[repo] = train(repo, triplets, tmp_path_factory.mktemp("lora"), "--lora_rank", "4")
        return runs[repo]
    return run


def edit(editor) -> np.ndarray:
    outputs, _ = editor.edit(photo(), "invert the colors", EditSettings(seed=0, steps=2, resolution=WORK))
    return np.asarray(outputs[0], dtype=np.float32)


@pytest.mark.parametrize("repo", TRAINED)
def test_two_lora_steps_save_reload_and_change_the_edit(repo, modern_hub_cache, lora_runs, small_qwen_condition):
    result = lora_runs(repo)
    assert result["step"] == 2 and np.isfinite(result["losses"]["loss"])
    folder = Path(result["output_dir"])
    lora_file = folder / "pytorch_lora_weights.safetensors"
    assert result["files"] == {"lora": str(lora_file)}
    keys = list(load_file(str(lora_file)))
    prefix = "unet." if repo == modern.SDXL_IP2P else "transformer."
    assert keys and all(k.startswith(prefix) and ".lora" in k for k in keys)
    # the stock pipeline reads it with its own loader and then runs with the adapter
    stock = type(modern_hub_cache["pipes"][repo]).from_pretrained(str(modern_hub_cache[repo]), local_files_only=True)
    stock.load_lora_weights(str(folder))
    denoiser = stock.unet if repo == modern.SDXL_IP2P else stock.transformer
    assert denoiser.peft_config  # the adapter is attached
    # --editor plus --lora: the trained adapter changes the edit (B of the LoRA starts at zero)
    base = edit(load_editor(repo, "cpu", "fp32"))
    tuned = edit(load_editor(repo, "cpu", "fp32", lora=str(lora_file)))
    assert np.abs(base - tuned).mean() > 0.1  # of 255 (identical without the adapter; tiny Qwen moves least)


def test_infer_takes_lora_flag(modern_hub_cache, lora_runs, tmp_path):
    lora = lora_runs(modern.SDXL_IP2P)["output_dir"]
    source = tmp_path / "in.png"
    photo().save(source)
    args = ["--input", str(source), "--skip-stylize", "--editor", modern.SDXL_IP2P, "--edit", "invert the colors",
            "--steps", "2", "--resolution", str(WORK), "--seed", "0", "--device", "cpu", "--dtype", "fp32"]
    plain = infer.main(infer.parse_args(args + ["--output", str(tmp_path / "plain.png")]))[0]
    tuned = infer.main(infer.parse_args(args + ["--output", str(tmp_path / "tuned.png"), "--lora", lora]))[0]
    assert not np.array_equal(np.asarray(Image.open(plain)), np.asarray(Image.open(tuned)))


def test_full_sdxl_fine_tuning_writes_a_pipeline_folder(modern_hub_cache, triplets, tmp_path):
    result = train(modern.SDXL_IP2P, triplets, tmp_path / "full")
    assert result["files"] == {"pipeline": str(tmp_path / "full")}
    index = json.loads((tmp_path / "full" / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLInstructPix2PixPipeline"
    tuned = load_editor(str(tmp_path / "full"), "cpu", "fp32")
    before = modern_hub_cache["pipes"][modern.SDXL_IP2P].unet.state_dict()
    changed = [k for k, v in tuned.pipe.unet.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) > 10  # every UNet weight trains, not an adapter
    assert np.abs(edit(tuned) - edit(load_editor(modern.SDXL_IP2P, "cpu", "fp32"))).mean() > 0.5


@pytest.mark.parametrize("extra, message", [
    ((), "FLUX.1 Kontext is fine-tuned as a LoRA only; give --lora_rank"),
    (("--lora_rank", "4", "--gradient_checkpointing"), "--gradient_checkpointing is not used when fine-tuning FLUX.1 Kontext"),
])
def test_unused_flags_are_refused_in_one_line(modern_hub_cache, triplets, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        train_edit.cli(["--pretrained_model_name_or_path", modern.KONTEXT, "--train_data_dir", str(triplets),
                        "--output_dir", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err[-1].startswith(f"error: {message}")
    assert not (tmp_path / "out").exists()


def test_sdxl_text_to_image_base_gets_an_8_channel_conv_in(modern_hub_cache, triplets, tmp_path, capsys):
    """An SDXL text-to-image folder (4-channel UNet) trains into an SDXL InstructPix2Pix folder."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    editor = modern_hub_cache["pipes"][modern.SDXL_IP2P]
    unet = UNet2DConditionModel.from_config({**editor.unet.config, "in_channels": 4})
    unet.load_state_dict({k: v[:, :4] if k == "conv_in.weight" else v for k, v in editor.unet.state_dict().items()})
    base = StableDiffusionXLPipeline(vae=editor.vae, text_encoder=editor.text_encoder,
                                     text_encoder_2=editor.text_encoder_2, tokenizer=editor.tokenizer,
                                     tokenizer_2=editor.tokenizer_2, unet=unet, scheduler=editor.scheduler,
                                     add_watermarker=False)
    base.save_pretrained(str(tmp_path / "base"))
    with pytest.raises(SystemExit):
        train_edit.cli(["--pretrained_model_name_or_path", str(tmp_path / "base"), "--train_data_dir", str(triplets),
                        "--output_dir", str(tmp_path / "lora"), "--lora_rank", "4"])
    assert "error: --lora_rank:" in capsys.readouterr().err
    train(str(tmp_path / "base"), triplets, tmp_path / "full")
    index = json.loads((tmp_path / "full" / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLInstructPix2PixPipeline"
    tuned = load_editor(str(tmp_path / "full"), "cpu", "fp32")
    conv_in = tuned.pipe.unet.conv_in.weight
    assert tuned.pipe.unet.config.in_channels == 8 and conv_in.shape[1] == 8
    assert conv_in[:, 4:].abs().sum() > 0  # the input image's channels started at zero and trained


def test_resumed_run_continues_exactly_and_logs_to_tensorboard(modern_hub_cache, tmp_path, capsys):
    """2 steps, then a run resumed from checkpoint-2 for 1 more, end with the same LoRA as 3 straight steps: the
    trained weights, Adam's moments, the data position (mid-epoch), the loss's noise generator and the global RNG
    (augmentation) all come back from the checkpoint. The loop writes TensorBoard scalars like the SD trainer."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    data = tmp_path / "data"
    data.mkdir()
    rows = []
    for i in range(3):  # batch 1: three batches an epoch, so the resume lands mid-epoch
        photo(40 + 8 * i, 40).save(data / f"in{i}.png")
        ImageOps.invert(photo(40 + 8 * i, 40)).save(data / f"out{i}.png")
        rows.append({"input_image": f"in{i}.png", "edit_prompt": "invert the colors", "edited_image": f"out{i}.png"})
    (data / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))

    def run(out, steps: int, *extra: str) -> dict:
        return train_edit.main(train_edit.parse_args([
            "--pretrained_model_name_or_path", modern.KONTEXT, "--train_data_dir", str(data), "--resolution", "32",
            "--train_batch_size", "1", "--max_train_steps", str(steps), "--learning_rate", "1e-2", "--seed", "0",
            "--lora_rank", "4", "--checkpointing_steps", "2", "--random_flip", "--output_dir", str(out), *extra]))
    straight = run(tmp_path / "straight", 3)
    first = run(tmp_path / "resumed", 2)
    after_two = load_file(first["files"]["lora"])
    resumed = run(tmp_path / "resumed", 3, "--resume_from_checkpoint", "latest")
    assert "resumed from checkpoint-2 at step 2" in capsys.readouterr().out
    assert straight["step"] == resumed["step"] == 3 and set(straight["files"]) == {"lora", "checkpoint-2"}
    want, got = load_file(straight["files"]["lora"]), load_file(resumed["files"]["lora"])
    assert want.keys() == got.keys()
    for k in want:  # bit for bit on the CPU; CUDA's attention backward need not be deterministic run to run
        if torch.cuda.is_available():
            torch.testing.assert_close(got[k], want[k], rtol=1e-3, atol=1e-5)
        else:
            assert torch.equal(want[k], got[k]), k
    assert not all(torch.equal(after_two[k], got[k]) for k in got)  # the third step did train
    acc = EventAccumulator(str(tmp_path / "straight" / "logs"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss/train")] == [1, 2, 3] and acc.Scalars("lr/transformer")
    with pytest.raises(ValueError, match="not empty .* continues with --resume_from_checkpoint latest"):
        run(tmp_path / "resumed", 3)  # a finished run's folder is not silently trained over
