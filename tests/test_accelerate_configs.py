"""configs/accelerate/*.yaml: each parses with accelerate's own config loader and launch-argument validation; the
FSDP file yields a version-2 plugin whose auto-wrap policy finds blocks to shard in the stage-2 UNet and (after
sharding.fit_wrap_classes) the CLIP text encoder. DeepSpeed is parse-tested only (not installed, never run)."""
from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser, prepare_multi_gpu_env
from accelerate.utils import DistributedType

from edit_diffusion.scratch import build_text_encoder, build_unet
from edit_diffusion.sharding import fit_wrap_classes

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "accelerate"
EXPECTED = {"ddp.yaml": DistributedType.MULTI_GPU, "fsdp2.yaml": DistributedType.FSDP,
            "deepspeed_zero2.yaml": DistributedType.DEEPSPEED}


def launch_args(name: str):
    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / name), "train_edit.py"])
    return _validate_launch_command(args)[0]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_parses_with_accelerates_loader(name):
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)
    config = load_config_from_file(str(CONFIGS / name))  # refuses unknown keys
    assert config.distributed_type == EXPECTED[name]
    args = launch_args(name)
    assert (args.use_fsdp, args.use_deepspeed, args.multi_gpu) == (
        name == "fsdp2.yaml", name == "deepspeed_zero2.yaml", name == "ddp.yaml")
    if name == "deepspeed_zero2.yaml":
        assert config.deepspeed_config["zero_stage"] == 2


def test_fsdp2_plugin_shards_the_unet_and_the_text_encoder():
    from accelerate import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy

    with mock.patch.dict(os.environ, prepare_multi_gpu_env(launch_args("fsdp2.yaml"))):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    unet = build_unet("tiny")
    wrapped = {type(m).__name__ for m in unet.modules() if fsdp2_prepare_auto_wrap_policy(plugin, unet)(m)}
    assert {"ResnetBlock2D", "BasicTransformerBlock"} <= wrapped
    text_encoder = build_text_encoder("tiny")
    with pytest.raises(ValueError, match="CLIPVisionEmbeddings"):  # transformers' list as shipped
        fsdp2_prepare_auto_wrap_policy(plugin, text_encoder)
    fit_wrap_classes(text_encoder)
    policy = fsdp2_prepare_auto_wrap_policy(plugin, text_encoder)
    assert "CLIPEncoderLayer" in {type(m).__name__ for m in text_encoder.modules() if policy(m)}
