"""Importing the project keeps onnxruntime's telemetry out of the user's home (diffusers imports onnxruntime on
every pipeline load, and onnxruntime >= 1.32 writes ~/.cache/Microsoft/... on import); a user's own setting wins."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(code: str, home: Path, **env_extra) -> str:
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(HOME=str(home), PYTHONPATH=str(REPO), **env_extra)
    return subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout


def test_importing_the_project_then_onnxruntime_writes_nothing_to_home(tmp_path):
    pytest.importorskip("onnxruntime")
    _run("import common, onnxruntime", tmp_path)
    assert not any(tmp_path.iterdir()), list(tmp_path.rglob("*"))


def test_the_users_own_setting_is_kept(tmp_path):
    out = _run("import os, common; print(os.environ['ORT_DISABLE_TELEMETRY'])", tmp_path, ORT_DISABLE_TELEMETRY="0")
    assert out.strip() == "0"
