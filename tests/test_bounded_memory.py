"""Requests whose memory grows with a user number run in bounded chunks: the worst accepted values, at tiny model
sizes, each in a fresh process (tests/_memory_probe.py), with the growth of the peak resident memory checked.
(Numbers beyond the caps are refused before any work: tests/test_numeric_fields.py and the bad-input table.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = Path(__file__).resolve().parent / "_memory_probe.py"
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
           PYTHONWARNINGS="ignore")


def _probe_all(tmp_path, *cases: str) -> dict[str, dict]:
    """Each case in its own fresh process, run side by side."""
    procs = {}
    for case in cases:
        (tmp_path / case).mkdir()
        procs[case] = subprocess.Popen([sys.executable, str(PROBE), case, str(tmp_path / case)], env=ENV,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for case, proc in procs.items():
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        results[case] = json.loads(out.strip().splitlines()[-1])
    return results


def test_worst_accepted_values_stay_bounded(tmp_path):
    results = _probe_all(tmp_path, "variants", "stylize")
    # 64 variants (the cap) edited in chunks: a few MB of results, not 64 batches of activations (~100 MB at
    # this tiny size when run as one batch)
    variants = results["variants"]
    assert variants["growth_mb"] < 40, variants
    # full-size stylization in tiles: the per-pixel figure PROCESS_MAX_PIXELS is computed from
    stylize = results["stylize"]
    per_pixel = stylize["growth_mb"] * 2**20 / stylize["pixels"]
    assert per_pixel < stylize["limit_bytes_per_pixel"], stylize
