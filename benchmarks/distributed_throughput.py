"""Throughput of `sparring evaluate` on one machine: 1 process x T threads against P processes x 1 thread
(torchrun, gloo), same attack, same images; prints a Markdown table and writes it with --out.

    python benchmarks/distributed_throughput.py --out docs/distributed-throughput.md

Each setting runs `--repeats` times into a fresh folder and the fastest wall time counts (process
start, model load and the attack; the records are checked to be identical across settings).
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

from _doc import machine, publish, table_doc

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd: list[str], threads: int, folder: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    shutil.rmtree(folder, ignore_errors=True)
    tick = time.perf_counter()
    done = subprocess.run([*cmd, "--out", str(folder)], env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - tick
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return seconds


def _records(folder: Path) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--model", default="resnet20-akamaster")
    p.add_argument("--attack", default="pgd:steps=20")
    p.add_argument("--eps", default="8/255")
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sparring-throughput-"))
    base = ["evaluate", "--dataset", args.dataset, "--model", args.model, "--attack", args.attack, "--eps", args.eps,
            "--first", str(args.n), "--batch-size", str(args.batch_size)]
    settings = [
        (f"1 process x {args.processes} threads", [sys.executable, "-m", "sparring", *base], args.processes),
        (f"{args.processes} processes x 1 thread (torchrun, gloo)",
         [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.processes),
          "-m", "sparring", *base], 1),
        ("1 process x 1 thread", [sys.executable, "-m", "sparring", *base], 1),
    ]
    rows, reference = [], None
    for label, cmd, threads in settings:
        best = min(_run(cmd, threads, work / f"r{i}") for i in range(args.repeats))
        records = _records(work / f"r{args.repeats - 1}")
        reference = reference or records
        same = "yes" if records == reference else "NO"
        rows.append(f"| {label} | {best:.1f} | {args.n / best:.1f} | {same} |")
        print(rows[-1], flush=True)
    shutil.rmtree(work, ignore_errors=True)
    text = table_doc(
        "Distributed evaluation throughput on one machine",
        f"Command: `python benchmarks/distributed_throughput.py --dataset {args.dataset} --model {args.model} "
        f"--attack {args.attack} --eps {args.eps} --n {args.n} --batch-size {args.batch_size} --processes "
        f"{args.processes} --repeats {args.repeats}`; {machine('cpu')}.",
        f"`sparring evaluate` of {args.attack} at eps {args.eps} on the first {args.n} test images (batches of "
        f"{args.batch_size}); wall time of the whole command, fastest of {args.repeats}, process start and "
        "model load included.",
        "| setting | seconds | images/s | same records |", "|---|---:|---:|---|", rows)
    publish(text, args.out)


if __name__ == "__main__":
    main()
