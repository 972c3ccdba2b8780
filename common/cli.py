"""Small argparse helpers shared by the entry points."""
from __future__ import annotations

import argparse


class OneLineErrorParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (`error: ...`) with exit code 2, no usage dump."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"error: {self.prog}: {message}\n")


def str2bool(value: str | bool) -> bool:
    """Accept true/false/1/0/yes/no for flags users pass as `--flag True` (AnimeGAN habit)."""
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")
