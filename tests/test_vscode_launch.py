"""`.vscode/launch.json`: every configuration names a program that exists and whose own parser accepts
its arguments (the file may hold comments and trailing commas, as VS Code allows)."""
import importlib
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / ".vscode" / "launch.json"


def parse_jsonc(text: str):
    """JSON with // and /* */ comments and trailing commas (strings are left untouched)."""
    token = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|/\*.*?\*/', re.S)
    text = token.sub(lambda m: m.group(0) if m.group(0).startswith('"') else "", text)
    text = re.sub(r",(\s*[}\]])", r"\1", text)
    return json.loads(text)


def test_parse_jsonc_handles_comments_and_commas():
    assert parse_jsonc('{"a": "x // not a comment", // c\n "b": [1, 2,], /* d */}') == {
        "a": "x // not a comment", "b": [1, 2]}


CONFIGS = parse_jsonc(LAUNCH.read_text())["configurations"]


def test_expected_configurations_present():
    programs = [_program(c)[0].relative_to(ROOT).as_posix() for c in CONFIGS]
    for script in ("train_gan.py", "train_edit.py", "infer.py", "demo/evaluate.py"):
        assert any(p.endswith(script) for p in programs), script
    assert len(CONFIGS) >= 6


LAUNCHER = "accelerate.commands.launch"  # `accelerate launch` run as a module: the script is one of its args


def _launched(config) -> tuple[list[str], str, list[str]]:
    """(launcher args, script, script args) of an accelerate-launch configuration."""
    args = config["args"]
    script = next(i for i, a in enumerate(args) if a.endswith(".py"))
    return args[:script], args[script], args[script + 1:]


def _program(config) -> tuple[Path, str]:
    """(source file, module name) of a `program` (script path) or `module` (python -m) configuration."""
    if config.get("module") == LAUNCHER:
        config = {"program": "${workspaceFolder}/" + _launched(config)[1]}
    if "module" in config:
        name = config["module"]
        path = ROOT.joinpath(*name.split("."))
        return (path / "__main__.py" if path.is_dir() else path.with_suffix(".py")), name
    path = Path(config["program"].replace("${workspaceFolder}", str(ROOT)))
    return path, ".".join(path.relative_to(ROOT).with_suffix("").parts)


@pytest.mark.parametrize("config", CONFIGS, ids=[c["name"] for c in CONFIGS])
def test_configuration_program_and_arguments(config, monkeypatch):
    program, module_name = _program(config)
    assert program.is_file(), program
    assert config.get("cwd", "${workspaceFolder}") == "${workspaceFolder}"
    if "program" in config:  # run as a script: its imports must not be package-relative
        assert "from ." not in program.read_text(), f"{program} uses relative imports; use \"module\""
    module = importlib.import_module(module_name)
    monkeypatch.chdir(ROOT)
    args = config["args"]
    if config.get("module") == LAUNCHER:  # the launcher accepts its own options, the script the rest
        from accelerate.commands.launch import launch_command_parser
        launcher_args, script, args = _launched(config)
        launch_command_parser().parse_args([*launcher_args, script])
    for arg in args:  # bundled files the configuration reads must exist on a fresh checkout
        if arg.startswith(("examples/", "checkpoints/")):
            assert (ROOT / arg).exists(), arg
    module.parse_args(args)  # argparse exits (code 2) on anything it does not accept
