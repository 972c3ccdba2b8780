"""The latent cache (edit_diffusion/latent_cache.py): cached rows equal fresh encodes of the very views EditDataset
draws (both flips, both VAE kinds, cached text), a cached batch gives the uncached loss (conditioning dropout
included), the cache is reused for the same inputs and rebuilt when they change, memory-mapped rows equal in-memory
rows, and it stays off (saying why) for random crops or above its size cap."""
from __future__ import annotations

import logging
import shutil

import pytest
import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from PIL import Image

import edit_diffusion.latent_cache as lc
from edit_diffusion.data import EditDataset, read_triplets
from edit_diffusion.scratch import build_text_encoder, build_vae
from edit_diffusion.step import edit_loss, encode_text, sample_latents
from edit_diffusion.tokenizer import load_clip_tokenizer

from _edit_fixtures import TINY_TEXT, TINY_VAE, write_inverted_triplets
from test_edit_tiny_vae import TINY_TAESD

RES = 32


@pytest.fixture(scope="module")
def tokenizer():
    return load_clip_tokenizer()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Square images at the training resolution (fixed crops), two distinct instructions."""
    path = tmp_path_factory.mktemp("cache_triplets")
    write_inverted_triplets(path, ["astronaut", "chelsea", "coffee"], [RES] * 3)
    lines = (path / "metadata.jsonl").read_text().splitlines()
    lines[1] = lines[1].replace("invert the colors", "make it a negative")
    (path / "metadata.jsonl").write_text("\n".join(lines))
    return path


def dataset(folder, tokenizer, **kwargs) -> EditDataset:
    return EditDataset(read_triplets(train_data_dir=str(folder)), tokenizer, RES, random_flip=True, seed=3, **kwargs)


def models(vae_config=TINY_VAE):
    torch.manual_seed(0)
    return build_vae(vae_config).eval(), build_text_encoder(TINY_TEXT).eval()


def null_ids(tokenizer) -> torch.Tensor:
    return tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids[0]


def open_cache(ds, vae, text_encoder, tokenizer, folder, max_bytes=1e9):
    return lc.open_latent_cache(ds, vae, text_encoder, null_ids(tokenizer), folder, max_bytes, True, lambda: None)


@pytest.mark.parametrize("vae_config", [TINY_VAE, TINY_TAESD], ids=["kl", "tiny"])
def test_cached_rows_equal_fresh_encodes_of_the_drawn_views(folder, tokenizer, tmp_path, vae_config):
    vae, text_encoder = models(vae_config)
    base = dataset(folder, tokenizer)
    cached = open_cache(base, vae, text_encoder, tokenizer, tmp_path)
    flips_seen = set()
    with torch.no_grad():
        for epoch in range(4):  # several epochs: both flip orientations are drawn
            cached.set_epoch(epoch)
            for i in range(len(base)):
                fresh, item = base[i], cached[i]
                flips_seen.add(bool(torch.equal(fresh["input_pixels"], lc.view_pixels(base, i, True)[0])))
                encoded = vae.encode(torch.stack([fresh["input_pixels"], fresh["edited_pixels"]]))
                if hasattr(encoded, "latent_dist"):
                    dist = encoded.latent_dist
                    torch.testing.assert_close(item["image_latents"], dist.mode()[0], atol=1e-5, rtol=0)
                    torch.testing.assert_close(item["latent_mean"], dist.mean[1], atol=1e-5, rtol=0)
                    torch.testing.assert_close(item["latent_std"], dist.std[1], atol=1e-5, rtol=0)
                else:
                    assert "latent_std" not in item
                    torch.testing.assert_close(item["image_latents"], encoded.latents[0], atol=1e-5, rtol=0)
                    torch.testing.assert_close(item["latent_mean"], encoded.latents[1], atol=1e-5, rtol=0)
                hidden = encode_text(text_encoder, fresh["input_ids"][None])[0]
                torch.testing.assert_close(item["encoder_hidden_states"], hidden, atol=1e-5, rtol=0)
        torch.testing.assert_close(cached.null_text(), encode_text(text_encoder, null_ids(tokenizer)[None]),
                                   atol=1e-5, rtol=0)
    assert flips_seen == {False, True}


def test_sampling_from_the_cache_draws_as_the_posterior_does():
    """encode_pair samples the posterior of [input; edited] at once: the cache draws the same numbers."""
    params = torch.randn(6, 8, 4, 4)  # 3 inputs, then 3 edited images
    dist = DiagonalGaussianDistribution(params)
    expected = dist.sample(torch.Generator().manual_seed(5))[3:]
    got = sample_latents(dist.mean[3:], dist.std[3:], torch.Generator().manual_seed(5))
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    assert sample_latents(dist.mean, None) is dist.mean


@pytest.mark.parametrize("vae_config", [TINY_VAE, TINY_TAESD], ids=["kl", "tiny"])
@pytest.mark.parametrize("train_text", [False, True], ids=["text_cached", "text_trained"])
def test_a_cached_batch_gives_the_uncached_loss_with_dropout(folder, tokenizer, tmp_path, train_text, vae_config):
    """Both paths draw the same posterior sample, noise, timesteps and dropout masks from one seed, so the losses
    agree; dropout 1/3 drops text, image or both in every sample (null embedding vs null ids)."""
    from diffusers import UNet2DConditionModel

    from _edit_fixtures import TINY_UNET
    from edit_diffusion.scratch import build_noise_scheduler

    vae, text_encoder = models(vae_config)
    torch.manual_seed(1)
    unet = UNet2DConditionModel.from_config({**TINY_UNET, "in_channels": 8})
    scheduler = build_noise_scheduler("epsilon")
    base = dataset(folder, tokenizer)
    cached = open_cache(base, vae, None if train_text else text_encoder, tokenizer, tmp_path)
    assert ("input_ids" in cached[0]) == train_text
    collate = torch.utils.data.default_collate
    pixels, latents = collate([base[i] for i in range(3)]), collate([cached[i] for i in range(3)])
    null = null_ids(tokenizer) if train_text else cached.null_text()
    for prob, region_weight in ((0.0, 0.0), (1 / 3, 0.0), (1 / 3, 2.0)):  # and the edit-region weighted loss
        with torch.no_grad():
            fresh = edit_loss(unet, vae, text_encoder, scheduler, pixels, null_ids(tokenizer), prob,
                              torch.Generator().manual_seed(7), region_weight)[0]
            from_cache = edit_loss(unet, vae, text_encoder, scheduler, latents, null, prob,
                                   torch.Generator().manual_seed(7), region_weight)[0]
        torch.testing.assert_close(from_cache, fresh, atol=1e-5, rtol=1e-5)


def test_reused_for_the_same_inputs_rebuilt_when_weights_change(folder, tokenizer, tmp_path, monkeypatch):
    vae, text_encoder = models()
    builds = []
    real = lc.write_cache
    monkeypatch.setattr(lc, "write_cache", lambda *a, **k: (builds.append(1), real(*a, **k))[1])
    open_cache(dataset(folder, tokenizer), vae, text_encoder, tokenizer, tmp_path)
    first = sorted(tmp_path.glob("latents-*.safetensors"))
    open_cache(dataset(folder, tokenizer), vae, text_encoder, tokenizer, tmp_path)  # a resume
    assert len(builds) == 1 and sorted(tmp_path.glob("latents-*.safetensors")) == first
    with torch.no_grad():
        next(vae.parameters()).add_(0.01)
    cached = open_cache(dataset(folder, tokenizer), vae, text_encoder, tokenizer, tmp_path)
    files = sorted(tmp_path.glob("latents-*.safetensors"))
    assert len(builds) == 2 and len(files) == 1 and files != first  # the stale file is replaced
    open_cache(dataset(folder, tokenizer, center_crop=True), vae, text_encoder, tokenizer, tmp_path)
    assert len(builds) == 3  # crop settings are part of the hash
    changed = tmp_path / "changed"
    shutil.copytree(folder, changed)
    Image.open(changed / "1_out.png").transpose(Image.Transpose.ROTATE_90).save(changed / "1_out.png")
    open_cache(dataset(changed, tokenizer, center_crop=True), vae, text_encoder, tokenizer, tmp_path)
    assert len(builds) == 4 and cached is not None  # so are the pixels


def test_memory_mapped_rows_equal_in_memory_rows(folder, tokenizer, tmp_path, monkeypatch):
    vae, text_encoder = models()
    in_memory = open_cache(dataset(folder, tokenizer), vae, text_encoder, tokenizer, tmp_path)
    monkeypatch.setattr(lc, "MEMORY_BUDGET_BYTES", 0)
    mapped = open_cache(dataset(folder, tokenizer), vae, text_encoder, tokenizer, tmp_path)
    assert in_memory.store.tensors is not None and mapped.store.tensors is None
    for i in range(3):
        a, b = in_memory[i], mapped[i]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(in_memory.null_text(), mapped.null_text())


def test_off_for_random_crops_and_above_the_cap(tmp_path, tokenizer, caplog):
    vae, text_encoder = models()
    write_inverted_triplets(tmp_path, ["astronaut", "chelsea"], [40, 40])
    for name in ("0_in.png", "0_out.png", "1_in.png", "1_out.png"):  # 48 x 32: random 32 px windows
        Image.open(tmp_path / name).resize((48, 32)).save(tmp_path / name)
    with caplog.at_level(logging.WARNING):
        assert open_cache(dataset(tmp_path, tokenizer), vae, text_encoder, tokenizer, tmp_path / "c") is None
    assert "random crops: 2 of 2" in caplog.text
    centred = open_cache(dataset(tmp_path, tokenizer, center_crop=True), vae, text_encoder, tokenizer, tmp_path / "c")
    assert centred is not None
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert open_cache(dataset(tmp_path, tokenizer, center_crop=True), vae, text_encoder, tokenizer,
                          tmp_path / "d", max_bytes=1000) is None
    assert "above --latent_cache_max_gb" in caplog.text and not (tmp_path / "d").exists()


@pytest.mark.parametrize("vae_config", [TINY_VAE, TINY_TAESD], ids=["kl", "tiny"])
def test_kept_when_only_the_decoder_changes(folder, tokenizer, tmp_path, monkeypatch, vae_config):
    """A decoder-only fine-tune (--vae_train_decoder_only) leaves every cached latent as it was, so the cache
    stays; any change on the encoder side rebuilds it."""
    from edit_diffusion.scratch import decoder_modules

    vae, text_encoder = models(vae_config)
    builds = []
    real = lc.write_cache
    monkeypatch.setattr(lc, "write_cache", lambda *a, **k: (builds.append(1), real(*a, **k))[1])
    open_cache(dataset(folder, tokenizer), vae, text_encoder, tokenizer, tmp_path)
    with torch.no_grad():
        for module in decoder_modules(vae):
            for p in module.parameters():
                p.add_(0.01)
    open_cache(dataset(folder, tokenizer), vae, text_encoder, tokenizer, tmp_path)
    assert len(builds) == 1
    with torch.no_grad():
        list(vae.encoder.parameters())[-1].add_(0.01)  # the encoder's last layer
    open_cache(dataset(folder, tokenizer), vae, text_encoder, tokenizer, tmp_path)
    assert len(builds) == 2
