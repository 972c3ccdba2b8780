"""Tiny stage-2 component configs shared by the editor tests (built on CPU in milliseconds)."""

# 4-channel UNet (the SD layout in miniature), so tests can apply the 8-channel surgery themselves.
TINY_UNET = {"sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
             "block_out_channels": [16, 32], "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
             "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "cross_attention_dim": 32,
             "attention_head_dim": 4, "norm_num_groups": 8}
TINY_VAE = {"block_out_channels": [8, 16], "down_block_types": ["DownEncoderBlock2D"] * 2,
            "up_block_types": ["UpDecoderBlock2D"] * 2, "latent_channels": 4, "norm_num_groups": 8,
            "layers_per_block": 1, "mid_block_add_attention": False}
# CLIP vocabulary size so the real tokenizer's ids fit; hidden size = the UNet's cross_attention_dim.
TINY_TEXT = {"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
             "num_attention_heads": 4, "max_position_embeddings": 77, "bos_token_id": 49406, "eos_token_id": 49407}


def write_inverted_triplets(folder, names, sizes) -> None:
    """An InstructPix2Pix metadata.jsonl folder: skimage photos (one size per name, square) paired with
    their exact colour inversion under the prompt "invert the colors"."""
    import json

    from PIL import Image, ImageOps
    from skimage import data

    rows = []
    for i, (name, size) in enumerate(zip(names, sizes)):
        img = Image.fromarray(getattr(data, name)()).convert("RGB").resize((size, size))
        img.save(folder / f"{i}_in.png")
        ImageOps.invert(img).save(folder / f"{i}_out.png")
        rows.append({"input_image": f"{i}_in.png", "edit_prompt": "invert the colors", "edited_image": f"{i}_out.png"})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
