"""What ``minimtl.memory.keep_freed_memory`` buys: two processes, with and without it, timed in turns.

The setting is process-wide, so the two variants cannot share a process.
This script starts two worker processes (``MINIMTL_KEEP_FREED_MEMORY=1`` and
``=0``), each with a Config C model at batch 128 (``bench_training_step.py``'s
engine), and asks them in turn, round after round, to time one piece of work:
``relu`` (``np.maximum`` of a fresh ``(128, 32, 48, 48)`` float32 array,
against writing into one that exists), and ``train`` (one training step).
Only one worker runs at a time, so a busy machine slows both alike.  (``relu``
repeats one size, which glibc's own adaptive threshold already handles; the
training step's many sizes are what the setting is for.)  Prints
the median milliseconds and the ratio, and each worker's peak resident memory.

    python benchmarks/bench_malloc.py --rounds 5
    python benchmarks/bench_malloc.py --backend numba
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def worker(backend: str) -> None:
    """Answer each line on stdin ("relu", "relu-existing", "train") with the milliseconds it took."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import numpy as np

    from bench_training_step import MinimtlEngine

    engine = MinimtlEngine(backend, 128)
    x = np.random.default_rng(0).standard_normal((128, 48, 48, 32)).astype(np.float32)
    existing = np.empty_like(x)
    jobs = {"relu": lambda: np.maximum(x, 0), "relu-existing": lambda: np.maximum(x, 0, out=existing),
            "train": engine.train_step}
    for job in jobs.values():
        job()  # warm up
    for line in sys.stdin:
        name = line.strip()
        if name == "peak":
            with open("/proc/self/status") as status:
                peak = next(int(row.split()[1]) for row in status if row.startswith("VmHWM:"))
            print(json.dumps(peak // 1024), flush=True)
            continue
        start = time.perf_counter()
        jobs[name]()
        print(json.dumps((time.perf_counter() - start) * 1e3), flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", default="cython")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.backend)
        return
    variants = {"keep freed memory": "1", "glibc default": "0"}
    processes = {}
    for label, value in variants.items():
        environment = dict(os.environ, MINIMTL_KEEP_FREED_MEMORY=value)
        processes[label] = subprocess.Popen([sys.executable, __file__, "--worker", "--backend", args.backend],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=environment)

    def ask(label: str, job: str):
        process = processes[label]
        process.stdin.write(job + "\n")
        process.stdin.flush()
        return json.loads(process.stdout.readline())

    jobs = ["relu", "relu-existing", "train"]
    times = {(label, job): [] for label in variants for job in jobs}
    for _ in range(args.rounds):
        for job in jobs:
            for label in variants:
                times[(label, job)].append(ask(label, job))
    print(f"milliseconds, median of {args.rounds} rounds taken in turns (backend {args.backend})")
    print(f"{'':<16}" + "".join(f"{label:>20}" for label in variants) + f"{'ratio':>10}")
    for job in jobs:
        medians = [statistics.median(times[(label, job)]) for label in variants]
        print(f"{job:<16}" + "".join(f"{m:>20.1f}" for m in medians) + f"{medians[1] / medians[0]:>10.2f}")
    print("peak resident memory (MiB): " + ", ".join(f"{label} {ask(label, 'peak')}" for label in variants))
    for process in processes.values():
        process.stdin.close()
        process.wait()


if __name__ == "__main__":
    main()
