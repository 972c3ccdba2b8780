"""GPU check of sharded stage-2 training: a few train_edit.py steps of the SD-shaped tiny pipeline under each
configs/accelerate file that can run here (FSDP v2, DDP; DeepSpeed when installed), with EMA and gradient clipping
on, a checkpoint, a resume and the final pipeline folder, all inside a time budget. Without CUDA it says so and
exits 0. `sharded_training_section(budget_s)` is the piece a larger GPU check can call.

    python bench/gpu_train_check.py --budget 240
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train_edit import base_flags, write_data  # noqa: E402

STEPS = 4


def launch(config: str, flags: dict, data: Path, out: Path, steps: int, timeout: float, *extra: str):
    """accelerate launch train_edit.py under `config` on every visible GPU; (returncode, seconds, stderr tail)."""
    argv = [f"--{k}" if v is True else f"--{k}={v}" for k, v in flags.items() if v is not False]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "configs" / "accelerate" / config), "--num_processes", str(torch.cuda.device_count()),
           "--main_process_port", "29517", str(REPO / "train_edit.py"), *argv, f"--train_data_dir={data}",
           f"--output_dir={out}", f"--max_train_steps={steps}", "--checkpointing_steps=2", "--use_ema",
           "--max_grad_norm=1.0", "--seed=0", "--default_steps=2", *extra]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=max(timeout, 1),
                              env=dict(os.environ, HF_HUB_OFFLINE="1"))
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]  # our one-line errors
        return proc.returncode, time.perf_counter() - start, "\n".join(errors[:3] + [proc.stderr[-800:]])
    except subprocess.TimeoutExpired:
        return 124, time.perf_counter() - start, "timed out"


def sharded_training_section(budget_s: float) -> list[dict]:
    """Rows {config, result, seconds, detail}; configs that do not fit the remaining budget are reported skipped."""
    if not torch.cuda.is_available():
        return [{"config": "-", "result": "skipped (no CUDA)", "seconds": 0.0, "detail": ""}]
    configs = ["fsdp2.yaml", "ddp.yaml"]
    if importlib.util.find_spec("deepspeed") is not None:
        configs.append("deepspeed_zero2.yaml")
    rows, deadline = [], time.perf_counter() + budget_s
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        flags = {**base_flags("sd_tiny", work), "resolution": 64, "train_batch_size": 4}
        data = work / "data"
        data.mkdir()
        write_data(data, 16, 64)
        for config in configs:
            left = deadline - time.perf_counter()
            if left < 30:
                rows.append({"config": config, "result": "skipped (budget)", "seconds": 0.0, "detail": ""})
                continue
            out = work / config.split(".")[0]
            code, seconds, tail = launch(config, flags, data, out, STEPS // 2, left / 2)
            if code == 0:  # resume from checkpoint-2 (sharded state + EMA) and finish
                code, more, tail = launch(config, flags, data, out, STEPS, deadline - time.perf_counter(),
                                          "--resume_from_checkpoint=latest")
                seconds += more
            ok = code == 0 and (out / "unet" / "config.json").is_file() and (out / "model_index.json").is_file()
            rows.append({"config": config, "result": "ok" if ok else f"FAILED (exit {code})", "seconds": seconds,
                         "detail": "" if ok else tail})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=240, help="seconds for the whole section")
    args = parser.parse_args(argv)
    rows = sharded_training_section(args.budget)
    print(f"| accelerate config | result | seconds |\n|---|---|---|")
    for row in rows:
        print(f"| {row['config']} | {row['result']} | {row['seconds']:.0f} |")
    for row in rows:
        if row["detail"]:
            print(f"--- {row['config']}:\n{row['detail']}")
    return 0 if all(not r["result"].startswith("FAILED") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
