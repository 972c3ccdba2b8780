"""Every numeric field of every config dataclass declares its range (ge / gt / le / lt metadata), and the config
refuses NaN, both infinities and a value just outside each bound with a ValueError naming the flag. The configs
are found automatically (every dataclass of our modules with CLI metadata), so a new flag is covered without
touching this file."""
from __future__ import annotations

import dataclasses
import importlib
import math
import pkgutil
import typing
from pathlib import Path

import pytest

from common.cli import base_type, flag_fields, flag_name

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "chain", "stylize_gan", "edit_diffusion", "webapp", "demo")  # bench/ scripts: no configs
SCRIPTS = ("infer", "app", "train_gan", "train_edit")


def _modules():
    names = list(SCRIPTS)
    for package in PACKAGES:
        names.append(package)
        names += [f"{package}.{m.name}" for m in pkgutil.iter_modules([str(REPO / package)])]
    return names


def config_classes() -> list[type]:
    """Dataclasses defined in our modules whose fields carry CLI metadata (help), i.e. flags of an entry point."""
    found = {}
    for name in _modules():
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == name and \
                    any("help" in f.metadata for f in dataclasses.fields(obj)):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


CONFIGS = config_classes()


def numeric_fields() -> list[tuple[type, dataclasses.Field, type]]:
    out = []
    for cls in CONFIGS:
        hints = typing.get_type_hints(cls)
        out += [(cls, f, base_type(hints[f.name])) for f in dataclasses.fields(cls)
                if f.init and base_type(hints[f.name]) in (int, float)]
    return out


NUMERIC = numeric_fields()


def test_the_configs_are_found():
    names = {cls.__name__ for cls in CONFIGS}
    assert {"GanTrainConfig", "EditTrainConfig", "InferConfig", "EditSettings", "AppConfig"} <= names, names
    assert len(NUMERIC) > 80


@pytest.mark.parametrize("cls,f,kind", NUMERIC, ids=[f"{c.__name__}.{f.name}" for c, f, _ in NUMERIC])
def test_every_numeric_field_declares_a_range(cls, f, kind):
    assert {"ge", "gt", "le", "lt"} & f.metadata.keys(), f"{cls.__name__}.{f.name}: no ge/gt/le/lt"


def _bad_values(f, kind) -> list:
    values = [math.nan, math.inf, -math.inf] if kind is float else []
    meta = f.metadata
    step = 1 if kind is int else 1e-6
    for key, outside in (("ge", lambda b: b - step), ("gt", lambda b: b), ("le", lambda b: b + step),
                         ("lt", lambda b: b)):
        if key in meta:
            value = outside(meta[key])
            values.append(int(math.floor(value)) if kind is int and key in ("ge", "gt") else
                          int(math.ceil(value)) if kind is int else float(value))
    return values


def _instance(cls):
    """An instance with every field at its default (or a placeholder for required ones), __post_init__ not run."""
    obj = object.__new__(cls)
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            value = "placeholder"
        object.__setattr__(obj, f.name, value)
    return obj


@pytest.mark.parametrize("cls,f,kind", NUMERIC, ids=[f"{c.__name__}.{f.name}" for c, f, _ in NUMERIC])
def test_nan_inf_and_out_of_range_are_refused_naming_the_flag(cls, f, kind):
    """The config's own check (its __post_init__) refuses each bad value, naming the flag."""
    flag = flag_name(cls, f)
    for bad in _bad_values(f, kind):
        obj = _instance(cls)
        object.__setattr__(obj, f.name, bad)
        with pytest.raises(ValueError) as err:
            obj.__post_init__()
        assert flag in str(err.value) or f"--{f.name}" in str(err.value), (bad, str(err.value))


def test_flags_of_nested_settings_are_numeric_fields_too():
    """infer.py's --steps / --cfg-image come from EditSettings (nested): enumerated through its own class."""
    import infer
    nested = {f.name for owner, f, kind in flag_fields(infer.InferConfig) if owner.__name__ == "EditSettings"}
    assert {"steps", "cfg_image", "num_variants"} <= nested
