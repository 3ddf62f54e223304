"""Attack throughput of `sparring evaluate` on one device (GPU vs CPU): test images per second of the attack
and of the whole command; prints a Markdown table and writes it with --out.

    python benchmarks/attack_throughput.py --run cuda:10000:1000 --run cpu:10000:256 --out docs/gpu-throughput.md

Each `--run DEVICE:N:BATCH` evaluates the attack on the first N test images in batches of BATCH (DEVICE is
cpu, cuda or cuda:K). "attack s" is the attack's own time from the result record (the runner waits for each
batch's result, so GPU time is counted in full); "command s" is the wall time of the whole command, process
start, data and model load, clean pass, metrics and report included.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _doc import device_name, machine, publish, table_doc

ROOT = Path(__file__).resolve().parent.parent


def _device_name(device: str) -> str:
    """The table's device column: the GPU's name, or the CPU with its cores and threads."""
    if device.startswith("cuda"):
        return device_name(device)
    threads = os.environ.get("OMP_NUM_THREADS") or str(torch.get_num_threads())
    return f"CPU ({os.cpu_count()} cores, {threads} threads)"


def _parse_run(text: str) -> tuple[str, int, int]:
    try:
        device, n, batch = text.rsplit(":", 2)
        return device, int(n), int(batch)
    except ValueError:
        raise SystemExit(f"expected --run DEVICE:N:BATCH such as cuda:10000:1000, got {text!r}") from None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--model", default="resnet20-akamaster")
    p.add_argument("--attack", default="pgd:steps=20,early_stop=false")
    p.add_argument("--eps", default="8/255")
    p.add_argument("--run", action="append", default=[], help="DEVICE:N:BATCH, repeatable")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    runs = [_parse_run(r) for r in args.run or ["cpu:512:256"]]
    work = Path(tempfile.mkdtemp(prefix="sparring-attack-throughput-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    rows = []
    for i, (device, n, batch) in enumerate(runs):
        folder = work / f"r{i}"
        cmd = [sys.executable, "-m", "sparring", "evaluate", "--dataset", args.dataset, "--model", args.model,
               "--attack", args.attack, "--eps", args.eps, "--first", str(n), "--batch-size", str(batch),
               "--device", device, "--out", str(folder)]
        tick = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - tick
        if done.returncode != 0:
            raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
        records = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
        clean = next(r for r in records if r["kind"] == "clean")
        attack = next(r for r in records if r["kind"] == "attack")
        rows.append(f"| {_device_name(device)} | {n} | {batch} | {100 * clean['accuracy']:.2f} | "
                    f"{100 * attack['robust_accuracy']:.2f} | {attack['time_s']:.1f} | {n / attack['time_s']:.1f} | "
                    f"{wall:.1f} | {n / wall:.1f} |")
        print(rows[-1], flush=True)
    shutil.rmtree(work, ignore_errors=True)
    runs_text = " ".join(f"--run {d}:{n}:{b}" for d, n, b in runs)
    text = table_doc(
        "Attack throughput by device",
        f"Command: `python benchmarks/attack_throughput.py --dataset {args.dataset} --model {args.model} --attack "
        f"{args.attack} --eps {args.eps} {runs_text}`; {machine(', '.join(sorted({d for d, _, _ in runs})))}.",
        f"`sparring evaluate` of {args.attack} (Linf unless the attack says otherwise) at eps {args.eps} on the "
        "first N test images. The attack runs on the correctly classified ones; images/s counts all N. "
        "\"attack\" is the attack's own time from its record, \"command\" the wall time of the whole command "
        "(process start, loading, clean pass, metrics and report).",
        "| device | N | batch | clean % | robust % | attack s | attack images/s | command s | command images/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|", rows)
    publish(text, args.out)


if __name__ == "__main__":
    main()
