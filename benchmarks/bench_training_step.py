"""Time the paper's Config C network: one training step at batch 128, inference at batch 128 and 1.

Runs every available minimtl kernel backend and, when PyTorch is installed,
the same network in PyTorch (NCHW and channels-last), interleaved round by
round so that a busy machine slows all of them alike.  Prints images per
second (median over rounds), the ratios minimtl/PyTorch and fastest/numpy,
and the peak resident memory of a training step (each engine measured in a
fresh subprocess, since a process's peak never goes down).

    python benchmarks/bench_training_step.py                 # everything
    python benchmarks/bench_training_step.py --rounds 5 --engines minimtl-cython torch-channels-last
    python benchmarks/bench_training_step.py --threads 1     # every engine on one thread

Engines ``minimtl-<backend>-serial`` run the convolution chunks one after
another with threaded BLAS (``minimtl.parallel.set_threads(1)``) instead of
one chunk per core: the ratio between the two is what ``minimtl.parallel``
buys.

``--threads N`` caps every thread pool in the process (OpenBLAS and OpenMP
through threadpoolctl, PyTorch through ``torch.set_num_threads``, minimtl's
chunk workers through ``minimtl.parallel.set_threads``): on a
shared machine whose other core is busy, a second thread waits a time slice
at every synchronisation, and one thread can be faster.

The network (``minimtl.models.BKNet("C")``): input 1×48×48; four blocks of
2, 2, 2, 3 convolutions 3×3 "same" (32, 64, 128, 256 filters), each followed by
batch-norm and ReLU, 2×2 max-pool after each block → 256×3×3; the first block's
32×24×24 output max-pooled to 32×3×3 and concatenated (2592 features); three
heads FC 2592→256→256→N (N = 2, 2, 6) with batch-norm, ReLU, dropout 0.5.
Loss: the sum of the three heads' cross-entropies; optimiser: SGD with momentum.
"""
from __future__ import annotations

import os

# Every OpenMP runtime in this process (minimtl's kernels, Numba's, PyTorch's own
# libgomp) reads this once when loaded.  Left "active", threads that finish a
# parallel loop spin and steal the 2 cores from whichever engine runs next, so an
# interleaved run measures the interference.  minimtl sets the same default itself
# (minimtl/kernels/compiled.py); here it applies to PyTorch as well, before it loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np

from minimtl.data import CLASS_NAMES, TASKS

CLASSES = tuple(len(CLASS_NAMES[task]) for task in TASKS)  # each head's outputs, for the PyTorch network too


# ------------------------------------------------------------------ engines
CHUNK_WORKERS: int | None = None  # minimtl.parallel's workers for the non-serial engines, if --threads sets them


class MinimtlEngine:
    """BKNet Config C from minimtl, running on kernel backend ``backend``.

    ``serial``: the convolution chunks one after another, each using every core
    through threaded BLAS and OpenMP (``minimtl.parallel.set_threads(1)``),
    instead of one chunk per core: the layout before minimtl.parallel, kept
    for the side-by-side ratio.
    """

    def __init__(self, backend: str, batch: int, seed: int = 0, serial: bool = False):
        from minimtl import kernels, losses, memory, optim, parallel
        from minimtl.autograd import Tensor, no_grad
        from minimtl.models import BKNet

        memory.apply_default()  # as minimtl.train.fit does
        self.name, self.backend = f"minimtl-{backend}" + ("-serial" if serial else ""), backend
        self.parallel, self.serial, self.default_workers = parallel, serial, parallel.threads()
        self.kernels, self.losses, self.Tensor, self.no_grad = kernels, losses, Tensor, no_grad
        self.model = BKNet("C", tasks=TASKS, init="he", seed=seed)
        self.inference = None  # the model folded for inference, made at the first infer()
        self.optimizer = optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
        rng = np.random.default_rng(seed)
        self.images = rng.standard_normal((batch, 1, 48, 48)).astype(np.float32)
        self.labels = {task: rng.integers(0, n, batch) for task, n in zip(TASKS, CLASSES)}

    def _use(self):
        if self.kernels.set_backend(self.backend) != self.backend:
            raise RuntimeError(f"backend {self.backend} unavailable")
        self.parallel.set_threads(1 if self.serial else CHUNK_WORKERS or self.default_workers)

    def train_step(self) -> float:
        self._use()
        self.model.train()
        self.optimizer.zero_grad()
        logits = self.model(self.Tensor(self.images))
        loss = sum((self.losses.masked_cross_entropy(logits[t], self.labels[t]) for t in TASKS[1:]),
                   self.losses.masked_cross_entropy(logits[TASKS[0]], self.labels[TASKS[0]]))
        loss.backward()
        self.optimizer.step()
        return float(loss.item())

    def infer(self, batch: int) -> None:
        """Inference with the model folded for it (``BKNet.fuse_for_inference``), once, as a predictor is: the
        copy does not follow the training steps' updates, which change the weights' values, not the time."""
        self._use()
        if self.inference is None:
            self.inference = self.model.fuse_for_inference()
        with self.no_grad():
            self.inference(self.Tensor(self.images[:batch]))


class TorchEngine:
    """The same network in PyTorch, NCHW or channels-last."""

    def __init__(self, channels_last: bool, batch: int, seed: int = 0):
        import torch
        from torch import nn

        torch.manual_seed(seed)
        self.torch, self.name = torch, "torch-channels-last" if channels_last else "torch-nchw"
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

        def block(cin, cout, layers):
            modules = []
            for index in range(layers):
                modules += [nn.Conv2d(cin if index == 0 else cout, cout, 3, padding=1, bias=False),
                            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            return nn.Sequential(*modules, nn.MaxPool2d(2))

        def head(n):
            return nn.Sequential(nn.Linear(2592, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.5),
                                 nn.Linear(256, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.5),
                                 nn.Linear(256, n))

        class ConfigC(nn.Module):
            def __init__(self):
                super().__init__()
                self.block1, self.block2, self.block3, self.block4 = (block(1, 32, 2), block(32, 64, 2), block(64, 128, 2),
                                                                      block(128, 256, 3))
                self.heads = nn.ModuleList(head(n) for n in CLASSES)

            def forward(self, x):
                first = self.block1(x)
                last = self.block4(self.block3(self.block2(first)))
                shared = torch.cat([last.flatten(1), nn.functional.max_pool2d(first, 8).flatten(1)], dim=1)
                return [h(shared) for h in self.heads]

        self.model = ConfigC().to(memory_format=self.memory_format)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
        rng = np.random.default_rng(seed)
        self.images = torch.from_numpy(rng.standard_normal((batch, 1, 48, 48)).astype(np.float32)).contiguous(
            memory_format=self.memory_format)
        self.labels = [torch.from_numpy(rng.integers(0, n, batch)) for n in CLASSES]

    def train_step(self) -> float:
        self.model.train()
        self.optimizer.zero_grad()
        outputs = self.model(self.images)
        loss = sum(self.torch.nn.functional.cross_entropy(o, y) for o, y in zip(outputs, self.labels))
        loss.backward()
        self.optimizer.step()
        return float(loss.item())

    def infer(self, batch: int) -> None:
        self.model.eval()
        with self.torch.no_grad():
            self.model(self.images[:batch])


def make_engine(name: str, batch: int):
    if name.startswith("minimtl-"):
        backend = name.removeprefix("minimtl-")
        return MinimtlEngine(backend.removesuffix("-serial"), batch, serial=backend.endswith("-serial"))
    if name in ("torch-nchw", "torch-channels-last"):
        return TorchEngine(name == "torch-channels-last", batch)
    raise ValueError(f"unknown engine {name!r}: engines are minimtl-<backend> and minimtl-<backend>-serial for the "
                     f"backends numpy, numba, cython, and torch-nchw, torch-channels-last")


def available_engines() -> list[str]:
    from minimtl import kernels

    names = [f"minimtl-{b}" for b in kernels.available_backends()]
    for serial in (f"{names[0]}-serial", "minimtl-numpy-serial"):  # chunks one at a time: the old layout
        if serial not in names:
            names.append(serial)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("PyTorch not installed: comparing minimtl backends only (pip install torch==2.13.0 for the comparison)")
    else:
        names += ["torch-nchw", "torch-channels-last"]
    return names


# ------------------------------------------------------------------ timing
def timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def _status_mib(field: str) -> float:
    """A memory figure of this process from /proc/self/status (Linux), in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def cap_threads(threads: int | None):
    """Cap every thread pool loaded so far (OpenBLAS, OpenMP, Numba, PyTorch) at ``threads``; None leaves them.

    Call it after the engines are made, so their libraries are loaded.  Returns
    the threadpoolctl limiter, whose caps hold while it is referenced.
    """
    if threads is None:
        return None
    import numba
    from threadpoolctl import threadpool_limits

    from minimtl import kernels

    global CHUNK_WORKERS
    CHUNK_WORKERS = threads
    for backend in kernels.available_backends():  # loads the Cython extension's OpenMP runtime
        kernels.set_backend(backend)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
    return threadpool_limits(threads)


def measure_memory(name: str, batch: int, threads: int | None = None) -> dict:
    """Run in a fresh process: resident memory before a training step and its peak during one.

    One step runs first (allocations that stay: momentum buffers, Numba's code).
    Then the kernel's high-water mark is reset (``/proc/self/clear_refs``) and
    ``VmHWM`` after the next step is that step's peak.  ``ru_maxrss`` would not
    do: Linux carries the parent's peak into a child across ``exec``.
    """
    engine = make_engine(name, batch)
    limits = cap_threads(threads)  # noqa: F841
    engine.train_step()
    before = _status_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset VmHWM to the current RSS
    engine.train_step()
    return {"engine": name, "before_MiB": round(before), "peak_MiB": round(_status_mib("VmHWM"))}


def environment_report() -> list[str]:
    from threadpoolctl import threadpool_info

    import numba

    lines = [f"python {sys.version.split()[0]}, numpy {np.__version__}, numba {numba.__version__} "
             f"(threads {numba.get_num_threads()}, "
             f"layer {numba.threading_layer() if hasattr(numba, 'threading_layer') else '?'})",
             f"cores: {os.cpu_count()}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
             f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', '(unset)')}, "
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')}, "
             f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}"]
    for pool in threadpool_info():
        lines.append(f"  {pool['user_api']}: {pool['internal_api']} {pool.get('version')} "
                     f"{pool.get('architecture', '')} threads={pool['num_threads']} ({os.path.basename(pool['filepath'])})")
    try:
        import torch

        lines.append(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    except ImportError:
        pass
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up round")
    parser.add_argument("--engines", nargs="*", help="default: every minimtl backend and both PyTorch layouts")
    parser.add_argument("--skip-memory", action="store_true", help="do not measure peak memory in subprocesses")
    parser.add_argument("--threads", type=int, help="cap every thread pool (BLAS, OpenMP, PyTorch) at this many threads")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)  # internal: the subprocess that measures memory
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.memory_of:
        print(json.dumps(measure_memory(args.memory_of, args.batch, args.threads)))
        return

    names = args.engines or available_engines()
    try:
        engines = [make_engine(name, args.batch) for name in names]
    except ValueError as error:  # a mistyped engine: the usage line and the names, not a traceback
        parser.error(str(error))
    limits = cap_threads(args.threads)  # noqa: F841  (the caps hold while it lives)
    print("\n".join(environment_report()))
    tests = {"train": lambda e: e.train_step(), f"infer{args.batch}": lambda e: e.infer(args.batch),
             "infer1": lambda e: e.infer(1)}
    times = {(e.name, test): [] for e in engines for test in tests}
    from tqdm import tqdm

    for round_index in tqdm(range(args.rounds + 1), desc="rounds", file=sys.stderr):
        for test, run in tests.items():
            for engine in engines:
                repeat = 20 if test == "infer1" else 1  # batch 1 is short: time 20 in a row
                seconds = timed(lambda: [run(engine) for _ in range(repeat)]) / repeat  # noqa: B023  (called right here)
                if round_index > 0:  # round 0 warms up (Numba compiles, caches fill)
                    times[(engine.name, test)].append(seconds)

    def images_per_second(name, test):
        batch = 1 if test == "infer1" else args.batch
        return batch / statistics.median(times[(name, test)])

    print(f"\nimages/s (median of {args.rounds} rounds, batch {args.batch}; infer1 = batch 1)")
    header = f"{'engine':<22}" + "".join(f"{t:>12}" for t in tests)
    print(header)
    for engine in engines:
        print(f"{engine.name:<22}" + "".join(f"{images_per_second(engine.name, t):>12.1f}" for t in tests))

    ours = [e.name for e in engines if e.name.startswith("minimtl-")]
    theirs = [e.name for e in engines if e.name.startswith("torch-")]
    if ours:
        print("\nratios")
        for test in tests:
            best_ours = max(ours, key=lambda n: images_per_second(n, test))
            line = f"  {test:<9} fastest minimtl = {best_ours} ({images_per_second(best_ours, test):.1f}/s)"
            if "minimtl-numpy" in ours:
                line += (f"; ×{images_per_second(best_ours, test) / images_per_second('minimtl-numpy', test):.2f} "
                         "the numpy backend")
            if theirs:
                best_theirs = max(theirs, key=lambda n: images_per_second(n, test))
                line += (f"; ×{images_per_second(best_ours, test) / images_per_second(best_theirs, test):.2f} "
                         f"PyTorch ({best_theirs}, {images_per_second(best_theirs, test):.1f}/s)")
            print(line)

    if not args.skip_memory:
        print(f"\npeak resident memory of a training step at batch {args.batch} (fresh process each)")
        for name in names:
            command = [sys.executable, __file__, "--memory-of", name, "--batch", str(args.batch)]
            command += ["--threads", str(args.threads)] if args.threads is not None else []
            result = subprocess.run(command,
                                    capture_output=True, text=True, check=True)
            report = json.loads(result.stdout.strip().splitlines()[-1])
            print(f"  {name:<22} peak {report['peak_MiB']:>6} MiB (resident before the step: {report['before_MiB']} MiB)")


if __name__ == "__main__":
    main()
