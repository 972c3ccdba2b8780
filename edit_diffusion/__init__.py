"""Stage 2: InstructPix2Pix fine-tuning and editing on diffusers + transformers + accelerate.

File by file (networks and samplers stay diffusers'; this package owns the editing-specific parts):
- config.py        EditTrainConfig, the typed flags of train_edit.py
- tokenizer.py     the SD 1.5 CLIP tokenizer rebuilt offline from open_clip's BPE file
- loading.py       components from a hub id, diffusers folder or single .ckpt/.safetensors file
- surgery.py       4 -> 8 UNet input channels, zero-initialised (§3.2)
- scratch.py       components from configs, noise schedule, VAE pre-training
- components.py    assembles the training components for a config
- data.py          triplet sources (datasets, metadata.jsonl, generated layout) and aligned transforms
- dropout.py       conditioning dropout (§3.2.1)
- step.py          the training loss (target from scheduler.config.prediction_type; optional edit-region weights)
- checkpointing.py resumable checkpoint-<step> folders, EMA in safetensors, pruning
- trainer.py       the accelerate training loop, validation edits, final pipeline folder
- lora.py          optional peft LoRA, saved in load_lora_weights format
- engine.py        our sampler: eq. 3 with only the needed UNet branches, chunked variants, sliced decode
- editor.py        editing API: SCHEDULERS, EditSettings, Editor (load_editor), edit_image
- fewstep.py       few-step adaptation W' = W_edit + w (W_distilled - W_base)
- __main__.py      editing CLI: python -m edit_diffusion --model M --input in.png --edit "..." --output out.png
"""
