"""Local web app: upload a photo, pick a style, type an instruction, press Edit.

    python app.py                                   # http://127.0.0.1:7860, bundled models
    python app.py --editor my-ip2p-folder --port 8000
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass, field, replace


from common.cli import check_fields, option, parse_config
from common.errors import UserInputError, cli_errors, one_line
from common.images import MAX_PIXELS
from common.devices import resolve_device
from edit_diffusion.load_settings import LoadSettings
from webapp.context import UploadLimits, load_context

LOOPBACK = "127.0.0.1"


@dataclass
class AppConfig:
    host: str = option(LOOPBACK, "bind address (127.0.0.1: this machine only; 0.0.0.0 opens the app to the "
                                 "whole network)")
    port: int | None = option(None, "port (default: 7860 or the next free one)", ge=1, le=65535)
    share: bool = option(False, "also open a public gradio.live link (off by default)")
    editor: str | None = option(None, "stage-2 editor: pipeline folder, hub id or .safetensors/.ckpt "
                                      "(default: bundled)")
    gan_checkpoint: str | None = option(None, "stage-1 generator (.safetensors, AnimeGAN .pt / .pth, .onnx), offered "
                                              "(and preselected) next to the bundled styles",
                                        aliases=("--checkpoint_path",))
    load: LoadSettings = field(default_factory=LoadSettings)  # --device, --dtype, ... --lora (LoadSettings' flags)
    examples: str | None = option(None, "folder of example images to offer (default: the bundled examples/)")
    edit_out_of_scope: bool = option(False, "run the editor even on instructions its instruction index calls out of "
                                            "scope (default: the picture is returned unchanged, with a warning)")
    max_upload_mb: float = option(UploadLimits.max_megabytes, "largest accepted upload, in MiB", gt=0)
    max_upload_pixels: int = option(UploadLimits.max_pixels, "largest accepted upload, in pixels (checked before "
                                                             "decoding)", ge=1, le=MAX_PIXELS)

    def __post_init__(self) -> None:
        if not self.host.strip():
            raise ValueError("--host is empty; use 127.0.0.1 (this machine only) or an interface address")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ValueError(f"--port must lie in 1..65535, got {self.port}")
        resolve_device(self.load.device)  # unknown, or absent on this machine: one line naming --device
        self.upload_limits()  # checks both upload flags
        check_fields(self)  # NaN/inf and the metadata bounds of the rest

    def upload_limits(self) -> UploadLimits:
        return UploadLimits(max_megabytes=self.max_upload_mb, max_pixels=self.max_upload_pixels)


def parse_args(argv: list[str] | None = None) -> AppConfig:
    return parse_config(AppConfig, argv, prog="app.py", description=__doc__.strip().splitlines()[0])


class Terminated(SystemExit):
    """Raised in the main thread by SIGTERM, so `kill` also deletes the temporary folder."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated(0)


def _exit_on_sigterm():
    """Install the SIGTERM handler (main thread only); returns the one it replaces."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def main(config: AppConfig) -> None:
    try:  # gradio is the optional `app` extra
        from webapp.ui import launch
    except ModuleNotFoundError as err:
        raise UserInputError(f"the web app needs {err.name}: pip install -e '.[app]'") from None

    # Setup: models first (slow, and a bad path should fail before anything is served)
    load = config.load
    ctx = load_context(config.editor, config.gan_checkpoint, load.device, config.upload_limits(), config.examples,
                       load.dtype, **load.editor_kwargs())
    ctx = replace(ctx, edit_out_of_scope=config.edit_out_of_scope)

    # Serve: uploads and results live in a fresh temporary folder, deleted on exit
    temp_dir = tempfile.mkdtemp(prefix="stylize-edit-app-")
    print(f"temporary files: {temp_dir} (deleted on exit)", flush=True)
    previous_handler = _exit_on_sigterm()
    try:
        launch(ctx, temp_dir, host=config.host, port=config.port, share=config.share, block=True)
    except Terminated:
        shutil.rmtree(temp_dir, ignore_errors=True)
        # An edit may still be running in a worker thread; interpreter shutdown under it aborts (exit -6).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    except OSError as err:  # the port is taken, the host is not an address of this machine, ...
        where = f"{config.host}:{config.port}" if config.port else config.host
        raise UserInputError(f"cannot serve on {where} ({one_line(err)})") from None
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


@cli_errors
def cli(argv: list[str] | None = None) -> None:
    main(parse_args(argv))


if __name__ == "__main__":
    cli()
