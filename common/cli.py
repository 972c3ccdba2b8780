"""One way to build a command line: every field of a config dataclass becomes a flag.

Per-field information lives in `dataclasses.field(metadata=...)` (or `option(...)`, which fills it):
  help     str    the flag's help text (the only place it is written)
  choices  tuple  closed set of values (argparse `choices`, and `check_fields` for configs built in Python)
  aliases  tuple  extra spellings users already know, e.g. ("--checkpoint_path",)
  flag     str    the spelling shown in help and error messages when it differs from the class default
  ge / gt / le / lt   numeric bounds (inclusive / exclusive); NaN and infinities are always refused
A field whose type is a dataclass (e.g. `settings: EditSettings`) contributes that dataclass's flags.
Every flag is accepted with `-` and with `_` between words. Bools accept `--flag` and `--flag True/False`.
Bad values exit 2 with one line naming the flag (`error: prog: --flag ...`).

    parser = build_parser(GanTrainConfig, prog="train_gan.py", description="...")
    config = parse_config(GanTrainConfig, argv, prog="train_gan.py", description="...")
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import types
import typing
from pathlib import Path
from typing import Any, Sequence

# The spelling a class's flags are shown with: "-" (--data-dir) unless the class sets FLAG_SEPARATOR = "_"
# (--pretrained_model_name_or_path, the diffusers recipe's names). Field metadata "flag" overrides one field.
DEFAULT_SEPARATOR = "-"
BOUNDS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
          "le": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}
_HELP_ONLY = object()  # sentinel for option(): "no default" (a required flag)


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


def option(default: Any = _HELP_ONLY, help: str = "", **metadata) -> Any:
    """`dataclasses.field` with the CLI metadata filled in: option(8, "batch size", ge=1)."""
    meta = {"help": help, **metadata}
    if default is _HELP_ONLY:
        return dataclasses.field(metadata=meta)
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# --- what a field is -----------------------------------------------------------------------------------

def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def base_type(annotation) -> Any:
    """`int | None` -> int, `Optional[str]` -> str, anything else unchanged."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return annotation


def flag_name(cls, f: dataclasses.Field) -> str:
    """The spelling of a field's flag shown in help and error messages."""
    if "flag" in f.metadata:
        return f.metadata["flag"]
    return "--" + f.name.replace("_", getattr(cls, "FLAG_SEPARATOR", DEFAULT_SEPARATOR))


def spellings(flag: str) -> set[str]:
    """--a_b and --a-b: both spellings of one flag."""
    body = flag[2:]
    return {"--" + body.replace("_", "-"), "--" + body.replace("-", "_")}


def flag_fields(cls) -> list[tuple[type, dataclasses.Field, Any]]:
    """(owning class, field, base type) of every flag of `cls`, nested dataclass fields flattened in place."""
    out, hints = [], _hints(cls)
    for f in dataclasses.fields(cls):
        kind = base_type(hints[f.name])
        if dataclasses.is_dataclass(kind):
            out.extend(flag_fields(kind))
        elif f.init:
            out.append((cls, f, kind))
    return out


def flags_of(cls) -> dict[str, list[str]]:
    """Field name -> every accepted spelling (shown flag first), for tests and docs."""
    out = {}
    for owner, f, _ in flag_fields(cls):
        shown = flag_name(owner, f)
        names = [shown, *sorted(spellings(shown) - {shown})]
        for extra in (f"--{f.name}", *f.metadata.get("aliases", ())):
            names += sorted(spellings(extra) - set(names))
        out[f.name] = names
    return out


def to_argv(cls, values: dict[str, Any]) -> list[str]:
    """{field name: value} -> command-line flags of `cls` in their shown spelling (a recipe written once as
    data, e.g. demo/train_defaults.py). True is a bare flag, False `--flag False`, None is left out."""
    known = {f.name: (owner, f) for owner, f, _ in flag_fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    argv = []
    for name, value in values.items():
        flag = flag_name(*known[name])
        if value is True:
            argv.append(flag)
        elif value is not None:
            argv += [flag, str(value)]
    return argv


# --- checks shared by the parser and by configs built in Python ----------------------------------------

def check_numeric_fields(config) -> None:
    """Raise ValueError naming the flag of the first numeric field that is NaN, infinite, of the wrong type
    or outside its metadata bounds (ge/gt/le/lt). Configs call this from `__post_init__`."""
    cls, hints = type(config), _hints(type(config))
    for f in dataclasses.fields(config):
        kind, value = base_type(hints[f.name]), getattr(config, f.name)
        if kind not in (int, float) or value is None:
            continue
        flag = flag_name(cls, f)
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{flag} must be a whole number, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{flag} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{flag} must be a finite number, got {value}")
        failed = [f"{word} {f.metadata[key]}" for key, (word, ok) in BOUNDS.items()
                  if key in f.metadata and not ok(value, f.metadata[key])]
        if failed:
            wanted = " and ".join(f"{word} {f.metadata[key]}" for key, (word, _) in BOUNDS.items()
                                  if key in f.metadata)
            raise ValueError(f"{flag} must be {wanted}, got {value}")


def check_choices(config) -> None:
    """Raise ValueError naming the flag of a field whose value is not one of its metadata `choices`."""
    for f in dataclasses.fields(config):
        value, valid = getattr(config, f.name), f.metadata.get("choices")
        items = value if isinstance(value, (tuple, list)) else (value,)  # --families a b: each item
        bad = [v for v in items if v is not None and v not in valid] if valid is not None else []
        if bad:
            raise ValueError(f"{flag_name(type(config), f)}: unknown value {bad[0]!r} "
                             f"(valid: {', '.join(map(str, valid))})")


def check_fields(config) -> None:
    """Both shared checks (numeric bounds and choices), nested dataclass fields included."""
    check_numeric_fields(config)
    check_choices(config)
    for f in dataclasses.fields(config):
        if dataclasses.is_dataclass(getattr(config, f.name)):
            check_fields(getattr(config, f.name))


# --- the parser -----------------------------------------------------------------------------------------

class ConfigParser(OneLineErrorParser):
    """OneLineErrorParser that accepts the `-` and `_` spelling of every flag (normalised before parsing)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.canonical: dict[str, str] = {}  # every accepted spelling -> the registered one

    def add_flag(self, names: Sequence[str], **kwargs) -> argparse.Action:
        for name in names:
            for spelling in spellings(name):
                self.canonical.setdefault(spelling, name)
        return self.add_argument(*names, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args([self._normalise(a) for a in args], namespace)

    def _normalise(self, arg: str) -> str:
        if not arg.startswith("--"):
            return arg
        name, eq, value = arg.partition("=")
        return self.canonical.get(name, name) + eq + value


def _help(f: dataclasses.Field) -> str:
    """The metadata help, `%`-escaped for argparse, with the dataclass default appended."""
    text = f.metadata.get("help", "").replace("%", "%%")
    if f.default is dataclasses.MISSING or f.default is None or f.default is False:
        return text
    shown = " ".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
    default = f"(default: {shown})".replace("%", "%%")
    return f"{text} {default}" if text else default


def add_config_flags(parser: ConfigParser, cls, exclude: Sequence[str] = ()) -> None:
    """One flag per field of `cls` (nested dataclasses included); defaults stay in the dataclass."""
    for owner, f, kind in flag_fields(cls):
        if f.name in exclude:
            continue
        shown = flag_name(owner, f)
        names = [shown]
        for extra in (f"--{f.name}", *f.metadata.get("aliases", ())):
            if not any(extra in spellings(n) for n in names):
                names.append(extra)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        choices = f.metadata.get("choices")
        kwargs = dict(dest=f.name, help=_help(f), choices=choices,  # argparse shows {a,b,c} for choices
                      metavar=None if choices else shown.lstrip("-").replace("-", "_").upper())
        if required:
            kwargs["required"] = True
        else:
            kwargs["default"] = argparse.SUPPRESS  # an absent flag keeps the dataclass default
        if typing.get_origin(kind) in (tuple, list):  # families: tuple[str, ...] -> --families a b c
            kwargs.update(type=str, nargs="+")
        elif kind is bool:
            kwargs.update(type=str2bool, nargs="?", const=True, metavar="BOOL")
        else:
            kwargs["type"] = kind if kind in (int, float, Path) else str
        parser.add_flag(names, **kwargs)


def build_parser(cls, prog: str | None = None, description: str | None = None,
                 exclude: Sequence[str] = ()) -> ConfigParser:
    """An argparse parser with one flag per field of the dataclass `cls` (see the module docstring)."""
    parser = ConfigParser(prog=prog, description=description)
    add_config_flags(parser, cls, exclude)
    return parser


def config_from_args(cls, values: dict) -> Any:
    """Build `cls` from flat parsed values; nested dataclass fields are built from their own flags."""
    kwargs, hints = {}, _hints(cls)
    for f in dataclasses.fields(cls):
        kind = base_type(hints[f.name])
        if dataclasses.is_dataclass(kind):
            kwargs[f.name] = config_from_args(kind, values)
        elif f.name in values:
            value = values[f.name]
            kwargs[f.name] = tuple(value) if typing.get_origin(kind) is tuple else value
    return cls(**kwargs)


def parse_config(cls, argv: Sequence[str] | None = None, prog: str | None = None,
                 description: str | None = None, parser: ConfigParser | None = None) -> Any:
    """Command line -> validated `cls`; a bad value (parse or config check) exits 2 with one line."""
    parser = parser or build_parser(cls, prog, description)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(cls, vars(args))
        check_fields(config)
    except ValueError as err:
        from .errors import one_line
        parser.error(one_line(err))
    return config
