"""Run entry points exactly as `python <script> ...` / `python -m <module> ...` would, each in its own
child process, but fork the children from one parent that has already imported torch / diffusers: a
table of 60 cases then costs one interpreter start-up instead of 60 (about 10 s each on a busy CPU).

    python tests/_entry_runner.py cases.json results.json

cases.json: [{"id", "target": "infer.py" | "-m demo.build", "argv": [...], "cwd", "watch": folder}].
For each case the child runs the target as `__main__` with stdout / stderr sent to files, the way the
interpreter does: SystemExit gives the exit code, any other exception a traceback and exit code 1.
The parent snapshots `watch` before and after, so tests can see every file the case created or changed.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import runpy
import sys
import tempfile
import traceback
from pathlib import Path

TIMEOUT_S = 600  # a hung case is killed by SIGALRM rather than hanging the test session


def snapshot(folder: str) -> dict[str, str]:
    """relative path -> sha1 of every file under `folder` (folders as "dir")."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            out[os.path.relpath(os.path.join(root, name), folder)] = "dir"
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, folder)] = hashlib.sha1(handle.read()).hexdigest()
    return out


def _child(case: dict, out_path: str, err_path: str) -> None:
    """Runs in the forked child; never returns."""
    code = 0
    atexit._clear()  # the parent's exit handlers (e.g. temp-folder cleanup) are not the child's to run
    try:
        out_fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        err_fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.chdir(case["cwd"])
        import signal
        signal.alarm(TIMEOUT_S)
        target = case["target"]
        if target.startswith("-m "):
            module = target[3:]
            sys.modules.pop(module, None)  # `python -m` executes a module that was not imported yet
            sys.argv = [module, *case["argv"]]
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            script = os.path.join(case["repo"], target)
            sys.argv = [script, *case["argv"]]
            sys.path[0] = os.path.dirname(script)
            runpy.run_path(script, run_name="__main__")
    except SystemExit as exit_:
        if exit_.code is None:
            code = 0
        elif isinstance(exit_.code, int):
            code = exit_.code
        else:
            print(exit_.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - what the interpreter would print for an uncaught exception
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_case(case: dict, scratch: str) -> dict:
    before = snapshot(case["watch"])
    out_path, err_path = os.path.join(scratch, "out.txt"), os.path.join(scratch, "err.txt")
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(case, out_path, err_path)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    after = snapshot(case["watch"])
    return {
        "id": case["id"], "returncode": code,
        "stdout": Path(out_path).read_text(errors="replace"), "stderr": Path(err_path).read_text(errors="replace"),
        "created": sorted(set(after) - set(before)),
        "deleted": sorted(set(before) - set(after)),
        "changed": sorted(k for k in set(before) & set(after) if before[k] != after[k]),
    }


def main() -> None:
    cases_file, results_file = sys.argv[1], sys.argv[2]
    cases = json.loads(Path(cases_file).read_text())
    repo = str(Path(__file__).resolve().parent.parent)
    sys.path.insert(0, repo)
    # The heavy imports every entry point shares, done once before forking.
    import diffusers  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import chain.pipeline  # noqa: F401
    import stylize_gan.trainer  # noqa: F401
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for case in cases:
            results.append(run_case(dict(case, repo=repo), scratch))
    Path(results_file).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
