"""common/cli.py, the one command-line builder, and the rules it keeps for every entry point: each config field
is a flag reachable as --a-b and --a_b, its help text is written once (field metadata), bad numbers exit 2
with one line naming the flag, and no entry point builds flags by hand."""
from __future__ import annotations

import ast
import dataclasses
import importlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common.cli import (OneLineErrorParser, build_parser, check_fields, flag_fields, flags_of, option, parse_config,
                        spellings, to_argv)

ROOT = Path(__file__).resolve().parent.parent
# entry point module -> its config dataclass (module:Class); each module parses with parse_config(Class, ...)
ENTRY_POINTS = {
    "train_gan": "stylize_gan.config:GanTrainConfig",
    "train_edit": "edit_diffusion.config:EditTrainConfig",
    "infer": "infer:InferConfig",
    "app": "app:AppConfig",
    "edit_diffusion.__main__": "edit_diffusion.__main__:EditCliConfig",
    "edit_diffusion.fewstep": "edit_diffusion.fewstep:FewStepConfig",
    "stylize_gan.__main__": "stylize_gan.__main__:StylizeConfig",
    "stylize_gan.make_sketches": "stylize_gan.make_sketches:SketchConfig",
    "demo.train_defaults": "demo.train_defaults:DefaultsConfig",
    "demo.build": "demo.build:BuildConfig",
    "demo.evaluate": "demo.evaluate:EvalConfig",
    "demo.gallery": "demo.gallery:GalleryConfig",
}


def _config_class(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _sample_value(kind, f: dataclasses.Field) -> tuple[list[str], object]:
    """Command-line words for one field and the value argparse should store."""
    choices = f.metadata.get("choices")
    if choices:
        return [str(choices[-1])], choices[-1]  # a tuple field stores [choices[-1]]
    if kind is bool:
        return [], True
    if kind is int:
        return ["7"], 7
    if kind is float:
        return ["0.5"], 0.5
    if kind is Path:
        return ["some/path"], Path("some/path")
    return ["some-text"], "some-text"


def unreachable_spellings(parser, cls) -> list[str]:
    """Every spelling of every flag of `cls` that `parser` does not store into the field's own dest."""
    required = []
    for _, f, kind in flag_fields(cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required += [flags_of(cls)[f.name][0], *_sample_value(kind, f)[0]]
    problems = []
    for _, f, kind in flag_fields(cls):
        words, expected = _sample_value(kind, f)
        for spelling in flags_of(cls)[f.name]:
            try:
                stored = vars(parser.parse_args([*required, spelling, *words]))
            except SystemExit:
                problems.append(spelling)
                continue
            got = stored.get(f.name)
            if got != expected and not (isinstance(got, list) and tuple(got) == (expected,)):
                problems.append(f"{spelling} -> {got!r}")
    return problems


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_every_flag_is_reachable_under_both_spellings(module):
    cls = _config_class(ENTRY_POINTS[module])
    names = flags_of(cls)
    assert all(spellings(names[name][0]) <= set(names[name]) for name in names)
    assert unreachable_spellings(build_parser(cls), cls) == []


def test_spelling_check_fails_on_a_parser_with_one_spelling_only():
    """Mutation check: a hand-built parser that knows only --a-b (the old train_gan.py) is caught."""
    @dataclass
    class Small:
        data_dir: str = option("d", "a folder")
        batch_size: int = option(1, "images per step", ge=1)

    hand_built = OneLineErrorParser()
    hand_built.add_argument("--data-dir", dest="data_dir")
    hand_built.add_argument("--batch-size", dest="batch_size", type=int)
    assert set(unreachable_spellings(hand_built, Small)) == {"--data_dir", "--batch_size"}
    assert unreachable_spellings(build_parser(Small), Small) == []


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_help_text_has_one_source(module):
    """Every flag's help is its field's metadata, and the entry point adds no flag of its own."""
    cls = _config_class(ENTRY_POINTS[module])
    missing = [f.name for _, f, _ in flag_fields(cls) if not f.metadata.get("help", "").strip()]
    assert missing == [], f"{cls.__name__}: fields without help metadata: {missing}"
    source = Path(importlib.import_module(module).__file__).read_text(encoding="utf-8")
    calls = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)]
    assert not [c for c in calls if getattr(c.func, "attr", "") == "add_argument"], f"{module} adds flags by hand"
    assert any(getattr(c.func, "id", "") == "parse_config" and getattr(c.args[0], "id", "") == cls.__name__
               for c in calls if c.args), f"{module} does not parse with parse_config({cls.__name__}, ...)"


def test_help_text_is_shown_once_per_flag(capsys):
    import train_gan
    with pytest.raises(SystemExit):
        train_gan.parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("D judges luminance less its mean") == 1
    assert "--lr-generator LR_GENERATOR" in out and "--lr_generator" not in out  # one spelling shown


# --- the builder -----------------------------------------------------------------------------------------------

@dataclass
class Toy:
    FLAG_SEPARATOR = "-"
    name: str = option(help="required text", aliases=("--source_file_path",))
    count: int = option(2, "a count", ge=1, le=10)
    rate: float | None = option(None, "a rate", gt=0)
    mode: str = option("a", "a mode", choices=("a", "b"))
    flag_on: bool = option(True, "on unless --flag-on False")
    tags: tuple[str, ...] = option(("x",), "tags", choices=("x", "y", "z"))


@pytest.mark.parametrize("argv, wanted", [
    (["--name", "n"], dict(name="n", count=2, rate=None, mode="a", flag_on=True, tags=("x",))),
    (["--source_file_path", "n", "--source-file-path", "m"], dict(name="m")),
    (["--name=n", "--count=3", "--rate", "1e-3"], dict(count=3, rate=1e-3)),
    (["--name", "n", "--flag_on", "False"], dict(flag_on=False)),
    (["--name", "n", "--flag-on"], dict(flag_on=True)),
    (["--name", "n", "--flag-on", "no"], dict(flag_on=False)),
    (["--name", "n", "--tags", "y", "z"], dict(tags=("y", "z"))),
])
def test_parse_config_values(argv, wanted):
    config = parse_config(Toy, argv)
    assert {k: getattr(config, k) for k in wanted} == wanted


@pytest.mark.parametrize("argv, words", [
    (["--name", "n", "--count", "0"], "--count must be >= 1 and <= 10, got 0"),
    (["--name", "n", "--count", "11"], "--count must be >= 1 and <= 10, got 11"),
    (["--name", "n", "--count", "2.5"], "invalid int value"),
    (["--name", "n", "--rate", "nan"], "--rate must be a finite number, got nan"),
    (["--name", "n", "--rate", "inf"], "--rate must be a finite number, got inf"),
    (["--name", "n", "--rate=-inf"], "--rate must be a finite number, got -inf"),
    (["--name", "n", "--rate", "0"], "--rate must be > 0, got 0.0"),
    (["--name", "n", "--mode", "c"], "invalid choice: 'c'"),
    (["--name", "n", "--tags", "w"], "invalid choice: 'w'"),
    (["--name", "n", "--flag-on", "maybe"], "expected a boolean"),
    (["--count", "3"], "--name"),
    (["--name", "n", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_values_exit_2_with_one_line_naming_the_flag(capsys, argv, words):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(Toy, argv, prog="toy")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and words in err and err.startswith("error: toy: ") and err.count("\n") == 1


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_every_numeric_field_refuses_nan_and_infinity(module):
    """check_fields (called by parse_config and the configs' __post_init__) refuses NaN and inf everywhere."""
    cls = _config_class(ENTRY_POINTS[module])
    numeric = [f for owner, f, kind in flag_fields(cls) if kind is float]
    for f in numeric:
        for bad in (math.nan, math.inf, -math.inf):
            target = _field_owner_instance(cls, f.name, bad)
            with pytest.raises(ValueError, match=flags_of(cls)[f.name][0]):
                check_fields(target)


def _field_owner_instance(cls, name: str, value):
    """An instance of the dataclass that owns `name` (cls or a nested one) with only that field changed,
    built without __post_init__ so the shared check alone decides."""
    for owner, f, _ in flag_fields(cls):
        if f.name == name:
            obj = object.__new__(owner)
            for g in dataclasses.fields(owner):
                default = g.default if g.default is not dataclasses.MISSING else (
                    g.default_factory() if g.default_factory is not dataclasses.MISSING else "x")
                object.__setattr__(obj, g.name, default)
            object.__setattr__(obj, name, value)
            return obj
    raise KeyError(name)


def test_configs_built_in_python_are_checked_too():
    from edit_diffusion.config import EditTrainConfig
    from stylize_gan.config import GanTrainConfig
    with pytest.raises(ValueError, match="--lr-generator must be > 0"):
        GanTrainConfig(data_dir="d", dataset="x", lr_generator=0.0)
    with pytest.raises(ValueError, match="--tv_loss_weight must be a finite number"):
        GanTrainConfig(data_dir="d", dataset="x", tv_loss_weight=float("nan"))
    with pytest.raises(ValueError, match="--adam_beta1 must be >= 0 and < 1"):
        EditTrainConfig(unet_config="a", vae_config="b", text_encoder_config="c", train_data_dir="d", adam_beta1=1.0)
    with pytest.raises(ValueError, match="--epochs must be a whole number"):
        GanTrainConfig(data_dir="d", dataset="x", epochs=2.5)


def test_old_spellings_and_aliases_still_work():
    import app
    import infer
    import train_edit
    import train_gan
    c = infer.parse_args(["--source_file_path", "a.png", "--destination_file_path", "b.png", "--edit_condition", "x",
                          "--checkpoint_path", "g.safetensors", "--cfg-text", "3", "--cfg_image", "1.2", "--variants",
                          "2", "--max_side", "0", "--skip-stylize"])
    assert (c.input, c.output, c.edit, c.gan_checkpoint, c.max_side, c.skip_stylize) == (
        "a.png", "b.png", "x", "g.safetensors", 0, True)
    assert (c.settings.cfg_text, c.settings.cfg_image, c.settings.num_variants) == (3.0, 1.2, 2)
    g = train_gan.parse_args(["--data-dir", "d", "--dataset", "H", "--use_spectral_norm", "False", "--batch_size", "2",
                              "--content-backbone", "efficientnet_lite0"])
    assert (g.use_spectral_norm, g.batch_size, g.content_backbone) == (False, 2, "efficientnet_lite0")
    e = train_edit.parse_args(["--unet_config", "tiny", "--vae-config", "tiny", "--text_encoder_config", "tiny",
                               "--train_data_dir", "d", "--use_ema", "--max-train-steps", "3"])
    assert e.use_ema and e.max_train_steps == 3
    assert app.parse_args(["--checkpoint_path", "g", "--max_upload_mb", "2"]).gan_checkpoint == "g"


def test_edit_flags_are_defined_once():
    """infer.py and `python -m edit_diffusion` take the edit flags from EditSettings, with the same help."""
    from edit_diffusion.__main__ import EditCliConfig
    from edit_diffusion.editor import EditSettings
    from infer import InferConfig
    shared = [f.name for f in dataclasses.fields(EditSettings)]
    for cls in (InferConfig, EditCliConfig):
        owners = {f.name: owner for owner, f, _ in flag_fields(cls)}
        assert all(owners[name] is EditSettings for name in shared), cls.__name__
    assert build_parser(InferConfig).format_help().count("denoising steps") == 1


def test_to_argv_round_trips_through_the_parser():
    values = dict(name="n", count=4, rate=0.25, mode="b", flag_on=False, tags=("y",))
    argv = to_argv(Toy, {k: v for k, v in values.items() if k != "tags"})
    assert argv[:2] == ["--name", "n"] and "--flag-on" in argv
    config = parse_config(Toy, argv)
    assert (config.count, config.rate, config.mode, config.flag_on) == (4, 0.25, "b", False)
    with pytest.raises(ValueError, match="no field"):
        to_argv(Toy, {"nope": 1})


@dataclass
class Inner:
    steps: int | None = option(None, "steps", ge=1)


@dataclass
class Outer:
    path: str = option("p", "a path")
    inner: Inner = field(default_factory=Inner)


def test_nested_settings_are_built_and_checked(capsys):
    assert parse_config(Outer, ["--steps", "3"]).inner.steps == 3
    with pytest.raises(SystemExit):
        parse_config(Outer, ["--steps", "0"], prog="outer")
    assert "--steps must be >= 1" in capsys.readouterr().err
