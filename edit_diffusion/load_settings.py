"""LoadSettings: how the editor is loaded (device, dtype, compile, channels_last, CPU offload, LoRA), declared
once and nested in AppConfig (app.py), InferConfig (infer.py) and EditCliConfig (python -m edit_diffusion);
common.cli flattens a nested dataclass into its flags, so the three CLIs keep the same flags."""
from __future__ import annotations

from dataclasses import dataclass

from common.cli import option
from common.devices import channels_last_option, compile_option, device_option, dtype_option


@dataclass
class LoadSettings:
    device: str = device_option()
    dtype: str = dtype_option()
    compile: bool = compile_option()
    channels_last: bool = channels_last_option()
    cpu_offload: bool = option(False, "SDXL-IP2P / Kontext / Qwen editors: keep the weights in RAM and move each "
                                      "model to --device only while it runs (diffusers' model CPU offload)")
    lora: str | None = option(None, "LoRA file or folder to fuse into the editor (train_edit.py's "
                                    "pytorch_lora_weights.safetensors)")

    def editor_kwargs(self) -> dict:
        """Keyword arguments of load_editor beyond the model and the device."""
        return {"compile_unet": self.compile, "channels_last": self.channels_last,
                "cpu_offload": self.cpu_offload, "lora": self.lora}
