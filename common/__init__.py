"""Helpers shared by both stages: image I/O, checkpoint I/O, TensorBoard grids, seeding, CLI errors."""
import os

# onnxruntime (>= 1.32 on Linux) writes a device id and an event database under ~/.cache/Microsoft on import,
# and diffusers imports it on every pipeline load when it is installed. A local image tool has no business
# writing telemetry into the user's home: off unless the user sets the variable themselves.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
