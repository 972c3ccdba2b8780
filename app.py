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
from dataclasses import dataclass

import torch

from common.cli import OneLineErrorParser
from common.errors import UserInputError, cli_errors, one_line
from webapp.context import UploadLimits, load_context

LOOPBACK = "127.0.0.1"


@dataclass
class AppConfig:
    host: str = LOOPBACK             # bind address; 0.0.0.0 opens the app to the whole network
    port: int | None = None          # None: gradio's default, 7860 or the next free port
    share: bool = False              # a public gradio.live link: only when asked for
    editor: str | None = None        # pipeline folder, hub id or single file; default: the bundled editor
    gan_checkpoint: str | None = None  # extra generator .safetensors offered (and preselected) in the style menu
    device: str = "cpu"
    examples: str | None = None      # folder of example images shown under the upload; default: bundled examples/
    max_upload_mb: float = UploadLimits.max_megabytes   # uploads over this many MiB are refused
    max_upload_pixels: int = UploadLimits.max_pixels    # uploads over this many pixels are refused before decoding

    def __post_init__(self) -> None:
        if not self.host.strip():
            raise ValueError("--host is empty; use 127.0.0.1 (this machine only) or an interface address")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ValueError(f"--port must lie in 1..65535, got {self.port}")
        try:
            torch.device(self.device)
        except RuntimeError:
            raise ValueError(f"--device: unknown device {self.device!r} (e.g. cpu, cuda, cuda:1, mps)") from None
        self.upload_limits()  # checks both upload flags

    def upload_limits(self) -> UploadLimits:
        return UploadLimits(max_megabytes=self.max_upload_mb, max_pixels=self.max_upload_pixels)


def parse_args(argv: list[str] | None = None) -> AppConfig:
    p = OneLineErrorParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--host", default=LOOPBACK, help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, help="port (default: 7860 or the next free one)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--editor", help="stage-2 editor: pipeline folder, hub id or .safetensors/.ckpt (default: bundled)")
    p.add_argument("--gan-checkpoint", "--checkpoint_path", dest="gan_checkpoint",
                   help="stage-1 generator .safetensors, offered next to the bundled styles")
    p.add_argument("--device", default="cpu")
    p.add_argument("--examples", help="folder of example images to offer (default: the bundled examples/)")
    p.add_argument("--max-upload-mb", type=float, default=AppConfig.max_upload_mb,
                   help="largest accepted upload, in MiB (default %(default)s)")
    p.add_argument("--max-upload-pixels", type=int, default=AppConfig.max_upload_pixels,
                   help="largest accepted upload, in pixels (default %(default)s)")
    return AppConfig(**vars(p.parse_args(argv)))


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
    ctx = load_context(config.editor, config.gan_checkpoint, config.device, config.upload_limits(), config.examples)

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
