"""User-facing errors: one clear line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

T = TypeVar("T")

EXIT_USER_ERROR = 2


class UserInputError(ValueError):
    """Bad input from the user (missing file, wrong model, bad flag value): reported in one line."""


def one_line(message: object) -> str:
    """Collapse a message to a single line (multi-line library errors would read like tracebacks)."""
    text = " ".join(str(message).split())
    return text or "unknown error"


def cli_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Wrap a CLI entry point so user errors print `error: ...` and exit 2 without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UserInputError, ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError) as err:
            print(f"error: {one_line(err)}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None
        except TrainingStopped as err:
            print(f"error: {one_line(err)}", file=sys.stderr)
            raise SystemExit(EXIT_TRAINING_STOPPED) from None
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper


class TrainingStopped(RuntimeError):
    """Training cannot go on (e.g. the loss stayed non-finite): reported in one line, exit code 1."""


EXIT_TRAINING_STOPPED = 1
