"""A Hugging Face cache in which the hub ids a diffusers user types resolve offline, through the libraries'
own lookup (`hub/models--org--name/refs/<branch>` -> `snapshots/<commit>/...` -> `blobs/<sha256>`), the way
an earlier online download leaves them. Tiny dimensions, the real repos' file names, layouts and config keys:

- timbrooks/instruct-pix2pix             8-channel StableDiffusionInstructPix2PixPipeline, Euler ancestral
                                         scheduler, root `instruct-pix2pix-00-22000.safetensors` (LDM keys)
- stable-diffusion-v1-5/stable-diffusion-v1-5, runwayml/stable-diffusion-v1-5
                                         4-channel StableDiffusionPipeline (PNDM), safety_checker and
                                         feature_extractor, `*.fp16.safetensors` variants; the first also has
                                         an older commit whose UNet differs (--revision / --non_ema_revision)
- latent-consistency/lcm-lora-sdv1-5      `pytorch_lora_weights.safetensors`, kohya-style `lora_unet_*` keys
- openai/clip-vit-large-patch14           CLIPModel config + weights, tokenizer files
- datasets: fusing/instructpix2pix-1000-samples: parquet in the hub cache and the prepared Arrow cache that
  `datasets` falls back to offline (it never reads the hub cache for a hub dataset when offline)

Weights are seeded; the SD UNet, VAE and CLIP text tower are shared by all repos, as in the real ones (the
editor's UNet is the SD UNet after the 8-channel surgery plus a fine-tuning delta)."""
from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ldm_layout import ldm_state_dict, ldm_yaml

SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
RUNWAY = "runwayml/stable-diffusion-v1-5"
IP2P = "timbrooks/instruct-pix2pix"
LCM_LORA = "latent-consistency/lcm-lora-sdv1-5"
CLIP = "openai/clip-vit-large-patch14"
LCM_UNET = "tests-internal/lcm-unet-sdv1-5"  # a full distilled UNet repo (UNet-only layout, like lcm-sdxl)
DATASET = "fusing/instructpix2pix-1000-samples"
IP2P_SINGLE_FILE = "instruct-pix2pix-00-22000.safetensors"
# An older commit of SD15 with other UNet weights, reachable by its hash (for --revision / --non_ema_revision;
# a branch named "non-ema" or "fp16" would be taken by diffusers for a deprecated variant spelling).
OLD_REVISION = hashlib.sha1(b"stable-diffusion-v1-5@previous").hexdigest()
LORA_RANK, LORA_ALPHA = 4, 2.0  # scale alpha / rank = 0.5

# SD 1.5 in miniature. Group norms stay at 32 groups (the LDM yaml cannot express another count), so channels
# are multiples of 32; attention_head_dim 8 is SD's (a head count, the yaml's num_heads).
UNET = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=8)
VAE = dict(in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1, latent_channels=4,
           down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
           sample_size=32, scaling_factor=0.18215)
# openai/clip-vit-large-patch14's own token ids (bos 0 / eos 2 / pad 1 are what its config.json says)
TEXT = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
            max_position_embeddings=77, projection_dim=32, hidden_act="quick_gelu", bos_token_id=0,
            eos_token_id=2, pad_token_id=1)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, image_size=32,
              patch_size=16, projection_dim=32, hidden_act="quick_gelu")
BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
             steps_offset=1, trained_betas=None)
DATASET_ROWS = 4  # one batch of the README command (batch 4) per epoch
DATASET_SIZE = 40  # px; training tests crop 32


def commit_of(repo_id: str, label: str = "main") -> str:
    """A stable fake 40-hex commit hash per (repo, revision)."""
    return hashlib.sha1(f"{repo_id}@{label}".encode()).hexdigest()


# --- writing a cache --------------------------------------------------------------------------------------

def write_repo(hub: Path, repo_id: str, files: Path, branch: str | None = "main", repo_type: str = "model",
               commit: str | None = None) -> Path:
    """Move the files under `files` into a cache repo as snapshot `commit` (default `commit_of(repo_id, branch)`):
    content in blobs/<sha256>, relative symlinks in snapshots/<commit>/, refs/<branch> holding the commit (no
    branch: a commit reachable only by its hash, as an older revision is)."""
    repo = hub / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = commit or commit_of(repo_id, branch)
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    if branch is not None:
        (repo / "refs" / branch).write_text(commit)
    snapshot = repo / "snapshots" / commit
    for src in sorted(p for p in files.rglob("*") if p.is_file()):
        rel = src.relative_to(files)
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        if not blob.exists():
            shutil.move(str(src), blob)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


def save_with_fp16_variants(pipe, folder: Path) -> None:
    """save_pretrained plus a `<name>.fp16.safetensors` half-precision copy of every weights file."""
    from safetensors.torch import load_file, save_file

    pipe.save_pretrained(str(folder), safe_serialization=True)
    for name in ("unet", "vae", "text_encoder", "safety_checker"):
        for weights in sorted((folder / name).glob("*.safetensors")):
            half = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(weights)).items()}
            save_file(half, str(weights.with_suffix(".fp16.safetensors")), metadata={"format": "pt"})


def _token(content: str) -> dict:
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True, "rstrip": False,
            "single_word": False}


def write_tokenizer_folder(folder: Path, vocab_files: Path) -> None:
    """The SD 1.5 / CLIP tokenizer folder as the hub has it: vocab.json, merges.txt, special_tokens_map.json,
    tokenizer_config.json (no tokenizer.json), replacing what save_pretrained wrote."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy2(vocab_files / name, folder / name)
    special = {"bos_token": _token("<|startoftext|>"), "eos_token": _token("<|endoftext|>"),
               "pad_token": "<|endoftext|>", "unk_token": _token("<|endoftext|>")}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = {"add_prefix_space": False, **special, "do_lower_case": True, "errors": "replace",
              "model_max_length": 77, "name_or_path": CLIP, "special_tokens_map_file": "./special_tokens_map.json",
              "tokenizer_class": "CLIPTokenizer"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def _model_card(folder: Path, text: str) -> None:
    (folder / "README.md").write_text(f"---\nlicense: other\n---\n# {text} (tiny offline test copy)\n")


# --- components ------------------------------------------------------------------------------------------

def build_parts(seed: int = 0) -> dict:
    """Seeded tiny SD 1.5 components (UNet 4-ch, VAE, CLIP text + vision towers, tokenizer)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTextModel

    from edit_diffusion.tokenizer import load_clip_tokenizer

    torch.manual_seed(seed)
    clip_config = CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=32)
    clip = CLIPModel(clip_config).eval()
    text_encoder = CLIPTextModel(clip_config.text_config).eval()
    text_encoder.load_state_dict({k.removeprefix("text_model."): v for k, v in clip.state_dict().items()
                                  if k.startswith("text_model.")}, strict=False)
    return {"unet": UNet2DConditionModel(**UNET).eval(), "vae": AutoencoderKL(**VAE).eval(),
            "text_encoder": text_encoder, "clip": clip, "tokenizer": load_clip_tokenizer(),
            # transformers has no SDPA path for the safety checker's vision tower
            "safety_checker": StableDiffusionSafetyChecker(
                CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=32,
                           attn_implementation="eager")).eval(),
            "feature_extractor": CLIPImageProcessor(crop_size=224, size=224, do_center_crop=True,
                                                    image_mean=[0.48145466, 0.4578275, 0.40821073],
                                                    image_std=[0.26862954, 0.26130258, 0.27577711])}


def perturbed(module, scale: float, seed: int):
    """A copy of `module` with seeded noise added to every weight (a fine-tuned / other-revision stand-in)."""
    out = copy.deepcopy(module)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return out


def sd_pipeline(parts: dict, unet):
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    return StableDiffusionPipeline(
        vae=parts["vae"], text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"], unet=unet,
        scheduler=PNDMScheduler(**BETAS, skip_prk_steps=True, set_alpha_to_one=False),
        safety_checker=parts["safety_checker"], feature_extractor=parts["feature_extractor"])


def ip2p_pipeline(parts: dict, unet):
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline
    return StableDiffusionInstructPix2PixPipeline(
        vae=parts["vae"], text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"], unet=unet,
        scheduler=EulerAncestralDiscreteScheduler(**BETAS, prediction_type="epsilon"),
        safety_checker=parts["safety_checker"], feature_extractor=parts["feature_extractor"])


def editor_unet(sd_unet):
    """The SD UNet after the 8-channel surgery, then 'fine-tuned' (seeded delta)."""
    from edit_diffusion.surgery import expand_conv_in
    unet = copy.deepcopy(sd_unet)
    expand_conv_in(unet)
    return perturbed(unet, 0.01, seed=11)


def lcm_lora_state(unet, seed: int = 5) -> dict[str, torch.Tensor]:
    """Kohya-style LoRA keys over the SD UNet's attention and resnet layers, as LCM-LoRA ships them
    (`lora_unet_<diffusers module path with _>.lora_down.weight / .lora_up.weight / .alpha`)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in unet.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        wanted = (name.endswith(("to_q", "to_k", "to_v", "to_out.0", "ff.net.2", "proj_in", "proj_out"))
                  or leaf in ("conv1", "conv2", "time_emb_proj"))
        if not wanted or name == "conv_in" or not hasattr(module, "weight"):
            continue
        w = module.weight
        key = "lora_unet_" + name.replace(".", "_")
        if w.ndim == 4:  # conv: down (r, in, k, k), up (out, r, 1, 1)
            down = torch.randn(LORA_RANK, w.shape[1], *w.shape[2:], generator=gen) * 0.1
            up = torch.randn(w.shape[0], LORA_RANK, 1, 1, generator=gen) * 0.1
        else:
            down = torch.randn(LORA_RANK, w.shape[1], generator=gen) * 0.1
            up = torch.randn(w.shape[0], LORA_RANK, generator=gen) * 0.1
        state[f"{key}.lora_down.weight"], state[f"{key}.lora_up.weight"] = down, up
        state[f"{key}.alpha"] = torch.tensor(LORA_ALPHA)
    return state


def lora_delta(state: dict, module_name: str) -> torch.Tensor:
    """The weight change a kohya LoRA entry makes: (alpha / rank) up @ down (convs: over the flattened kernel)."""
    key = "lora_unet_" + module_name.replace(".", "_")
    down, up = state[f"{key}.lora_down.weight"], state[f"{key}.lora_up.weight"]
    scale = float(state[f"{key}.alpha"]) / down.shape[0]
    delta = up.flatten(1) @ down.flatten(1)
    return scale * delta.reshape(up.shape[0], *down.shape[1:])


# --- the dataset ---------------------------------------------------------------------------------------------

def dataset_rows() -> dict[str, list]:
    """Real photos (skimage) and their colour inversions, PNG-encoded as the parquet export stores them."""
    from PIL import Image, ImageOps
    from skimage import data

    names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry", "hubble_deep_field", "retina"]
    rows = {"input_image": [], "edit_prompt": [], "edited_image": []}
    for name in names[:DATASET_ROWS]:
        img = Image.fromarray(getattr(data, name)()).convert("RGB").resize((DATASET_SIZE, DATASET_SIZE))
        for column, picture in (("input_image", img), ("edited_image", ImageOps.invert(img))):
            buf = io.BytesIO()
            picture.save(buf, format="PNG")
            rows[column].append({"bytes": buf.getvalue(), "path": None})
        rows["edit_prompt"].append("invert the colors")
    return rows


def write_dataset(hf_home: Path, work: Path) -> Path:
    """The hub copy (data/train-*.parquet) and the prepared cache `datasets` loads offline; returns the parquet."""
    import datasets

    features = datasets.Features({"input_image": datasets.Image(), "edit_prompt": datasets.Value("string"),
                                  "edited_image": datasets.Image()})
    table = datasets.Dataset.from_dict(dataset_rows(), features=features)
    files = work / "dataset"
    (files / "data").mkdir(parents=True)
    parquet = files / "data" / "train-00000-of-00001-tiny.parquet"
    table.to_parquet(str(parquet))
    _model_card(files, DATASET)
    snapshot = write_repo(hf_home / "hub", DATASET, files, repo_type="dataset")
    # What an online load_dataset leaves in HF_DATASETS_CACHE: the parquet builder's Arrow output, named by
    # repo and commit. Offline, `load_dataset(DATASET)` finds it there (CachedDatasetModuleFactory).
    from datasets.packaged_modules.parquet.parquet import Parquet
    # (Built from the local copy, then moved to the repo's cache name: a builder given the repo id insists on
    # hf:// data files, which need the network.)
    namespace, name = DATASET.split("/")
    builder = Parquet(cache_dir=str(work / "datasets"), dataset_name=name, hash=commit_of(DATASET),
                      data_files={"train": [str(snapshot / "data" / parquet.name)]}, features=features)
    builder.download_and_prepare()
    (hf_home / "datasets").mkdir(exist_ok=True)
    target = hf_home / "datasets" / f"{namespace}___{name}" / "default"  # the config an online load names
    target.parent.mkdir()
    built = next(p for p in (work / "datasets" / name).iterdir() if p.is_dir())
    shutil.move(str(built), target)
    for lock in target.rglob("*.lock"):
        lock.unlink()
    return snapshot / "data" / parquet.name


# --- the whole cache -------------------------------------------------------------------------------------------

def build_hub_cache(hf_home: Path) -> dict:
    """Write every repo into `hf_home` (an HF_HOME); returns paths and objects the tests compare against."""
    from safetensors.torch import save_file

    hf_home = Path(hf_home)
    hub = hf_home / "hub"
    work = Path(tempfile.mkdtemp(prefix="hub-build-", dir=hf_home))
    parts = build_parts()
    sd_unet = parts["unet"]
    from edit_diffusion.tokenizer import write_tokenizer_files
    vocab = write_tokenizer_files(work / "vocab")
    info = {"hf_home": hf_home, "parts": parts, "sd_unet": sd_unet}

    for repo in (SD15, RUNWAY):
        folder = work / repo.replace("/", "--")
        save_with_fp16_variants(sd_pipeline(parts, sd_unet), folder)
        write_tokenizer_folder(folder / "tokenizer", vocab)
        _model_card(folder, repo)
        info[repo] = write_repo(hub, repo, folder)
    # an older commit: same files, other UNet weights
    old_unet = perturbed(sd_unet, 0.02, seed=7)
    folder = work / "sd15-non-ema"
    save_with_fp16_variants(sd_pipeline(parts, old_unet), folder)
    write_tokenizer_folder(folder / "tokenizer", vocab)
    _model_card(folder, SD15)
    info["old_snapshot"] = write_repo(hub, SD15, folder, branch=None, commit=OLD_REVISION)
    info["old_unet"] = old_unet

    edit_unet = editor_unet(sd_unet)
    folder = work / "ip2p"
    save_with_fp16_variants(ip2p_pipeline(parts, edit_unet), folder)
    write_tokenizer_folder(folder / "tokenizer", vocab)
    save_file(ldm_state_dict(edit_unet, parts["vae"], parts["text_encoder"]), str(folder / IP2P_SINGLE_FILE))
    _model_card(folder, IP2P)
    info[IP2P] = write_repo(hub, IP2P, folder)
    info["editor_unet"] = edit_unet
    info["ldm_yaml"] = hf_home / "files" / "generate.yaml"  # ships in the release's GitHub repo, not on the hub
    info["ldm_yaml"].parent.mkdir(exist_ok=True)
    info["ldm_yaml"].write_text(ldm_yaml(edit_unet, parts["vae"]))

    folder = work / "lcm-lora"
    folder.mkdir()
    lora = lcm_lora_state(sd_unet)
    save_file(lora, str(folder / "pytorch_lora_weights.safetensors"))
    _model_card(folder, LCM_LORA)
    info[LCM_LORA] = write_repo(hub, LCM_LORA, folder)
    info["lora_state"] = lora

    folder = work / "lcm-unet"
    lcm_unet = perturbed(sd_unet, 0.01, seed=9)
    lcm_unet.save_pretrained(str(folder), safe_serialization=True)
    info[LCM_UNET] = write_repo(hub, LCM_UNET, folder)
    info["lcm_unet"] = lcm_unet

    folder = work / "clip"
    parts["clip"].save_pretrained(str(folder), safe_serialization=True)
    write_tokenizer_folder(folder / "tok", vocab)
    for f in (folder / "tok").iterdir():
        f.rename(folder / f.name)
    (folder / "tok").rmdir()
    parts["feature_extractor"].save_pretrained(str(folder))
    _model_card(folder, CLIP)
    info[CLIP] = write_repo(hub, CLIP, folder)

    info["dataset_parquet"] = write_dataset(hf_home, work)
    shutil.rmtree(work)
    return info
