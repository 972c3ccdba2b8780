"""House rules that code review keeps forgetting, checked on the source: no function over 80 lines in the
trainers and entry points, and the trainers build their shared concepts (non-finite guard, TensorBoard writer,
seeding, stop report, result) from common/training.py instead of their own copies."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_FUNCTION_LINES = 80
TRAINERS = ("stylize_gan/trainer.py", "edit_diffusion/trainer.py", "edit_diffusion/family_training.py")
ENTRY_POINTS = ("train_gan.py", "train_edit.py", "infer.py", "app.py", "edit_diffusion/__main__.py",
                "edit_diffusion/fewstep.py", "stylize_gan/__main__.py", "stylize_gan/make_sketches.py",
                "demo/train_defaults.py", "demo/build.py", "demo/evaluate.py")


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    """(name, lines) of every function or method longer than `limit` lines, nested ones included."""
    return [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > limit]


@pytest.mark.parametrize("path", TRAINERS + ENTRY_POINTS)
def test_no_function_over_80_lines(path):
    assert long_functions((ROOT / path).read_text(encoding="utf-8")) == []


def test_the_length_check_catches_a_long_function():
    """Mutation check: an 81-line function (and a long nested one) is reported, an 80-line one is not."""
    body = "".join(f"    x{i} = {i}\n" for i in range(78))
    ok = f"def fine():\n{body}    return 0\n"
    long = f"def too_long():\n{body}    x = 1\n    return 0\n"
    nested = "def outer():\n" + "".join("    " + line + "\n" for line in long.splitlines()) + "    return 1\n"
    assert long_functions(ok) == []
    assert long_functions(long) == [("too_long", 81)]
    assert ("too_long", 81) in long_functions(nested)


def _imported_names(tree: ast.Module, module: str) -> set[str]:
    return {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == module
            for alias in node.names}


def _message_strings(tree: ast.Module) -> list[str]:
    """String constants that are not docstrings (messages, f-string parts)."""
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)
                  and isinstance(node.value, ast.Constant)}
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in docstrings]


def _used_names(tree: ast.Module) -> set[str]:
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)} | {
        node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}


@pytest.mark.parametrize("path", TRAINERS)
def test_trainers_share_common_training(path):
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    assert {"NonFiniteGuard", "open_writer", "seed_rank", "train_result"} <= _imported_names(tree, "common.training")
    assert not {"SummaryWriter", "set_seed", "seed_everything", "all_finite"} & _used_names(tree)
    # their own warning / stop messages would drift again: the texts live in common/training.py
    assert not [s for s in _message_strings(tree) if "non-finite" in s or "stopped by" in s]


@pytest.mark.parametrize("ci, outcome", [("1", "error"), ("", "skipped")])  # a failing fixture reports "error"
def test_browser_tests_fail_instead_of_skipping_under_ci(tmp_path, ci, outcome):
    """tests/test_webapp_e2e.py with no browser: every test fails when CI is set, and is skipped otherwise."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, CI=ci, CHROMIUM=str(tmp_path / "no-chromium"), PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rN",
                           str(ROOT / "tests" / "test_webapp_e2e.py")], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    summary = proc.stdout.strip().splitlines()[-1]
    assert (proc.returncode != 0) == (outcome == "error"), proc.stdout[-2000:]
    assert outcome in summary and ("passed" not in summary), summary


def test_ci_runs_the_readme_test_command_verbatim():
    """.ci/run's last command is the README's second opening command, character for character (CI must run
    what the README tells a newcomer to run, parallel workers included)."""
    root = Path(__file__).resolve().parent.parent
    second_block = (root / "README.md").read_text().split("```bash\n")[2].split("```")[0].strip()
    ci_lines = [line for line in (root / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert "pytest" in second_block and ci_lines[-1] == second_block
