"""Where a Config C training step spends its time: GEMM, shifted products, copying, batch-norm, element-wise, autograd.

Profiles training steps of ``minimtl.models.BKNet("C")`` at batch 128 with
cProfile and groups the self time ("tottime") of each function:

* the chunk functions of ``Conv2dFunction`` (``forward_chunk``,
  ``backward_chunk``) own the im2col and Winograd GEMMs (NumPy's ``@`` runs
  inside the calling function) and the small copies around them,
* ``winograd_*`` are the Winograd tile and filter transforms,
* ``shifted_matmul*`` are the BLAS products of the shifted-product convolutions,
* the kernel functions (``im2col``, ``col2im``, pooling) are copying,
* everything else by function name.

cProfile sees only its own thread, so the chunks run one after another here
(``parallel.set_threads(1)``): the shares are those of a serial step.  With
``--one-core`` BLAS and the compiled loops run on one thread as well, which
is how each worker runs its chunks in a real step; without it they use every
core inside each call.

    python benchmarks/profile_training_step.py --backend cython --steps 3 --one-core
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_training_step  # noqa: E402
from bench_training_step import MinimtlEngine, cap_threads  # noqa: E402

GROUPS = [  # (group, substrings of "file:function"), first match wins
    ("shifted products (BLAS)", ("shifted_matmul",)),
    # before the next two: the chunk methods live in minimtl/conv/winograd.py and im2col.py
    ("GEMM in the conv chunks, linear", ("Conv2dFunction", "forward_chunk", "backward_chunk", "MatMul")),
    ("Winograd transforms", ("winograd",)),
    ("im2col / col2im (copying)", ("im2col", "col2im")),
    ("padded-grid copies", ("shifted.py:rows", "shifted.py:output_gradient_rows")),
    ("max-pool kernels", ("max_pool",)),
    ("batch-norm", ("BatchNorm", "batch_norm", "normalise", "combine", "squares", "channel_mean_var")),
    ("ReLU and other element-wise", ("ReLU", "Add.", "Mul.", "Sub.", "Div.", "Dropout", "Exp.", "Log.")),
    ("autograd bookkeeping", ("autograd.py",)),
    ("optimiser", ("optim.py",)),
]


def function_owners() -> dict[tuple[str, int], str]:
    """``(file, first line) → "ClassName.method"`` for the Functions of minimtl, so profiles name the class."""
    import inspect

    from minimtl import autograd, functional, ops
    from minimtl.conv import function as conv_function

    owners = {}
    for module in (functional, conv_function, ops, autograd):
        for class_name, cls in inspect.getmembers(module, inspect.isclass):
            for method in ("forward", "backward"):
                code = getattr(cls.__dict__.get(method), "__func__", cls.__dict__.get(method))
                code = getattr(code, "__code__", None)
                if code is not None:
                    owners[(code.co_filename, code.co_firstlineno)] = f"{class_name}.{method}"
    return owners


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="cython")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=20, help="also print the top functions by self time")
    parser.add_argument("--one-core", action="store_true",
                        help="cap BLAS and OpenMP at one thread too: the shares of a step on one core, as each worker runs it")
    args = parser.parse_args(argv)

    # cProfile sees only the thread it runs in, so the chunks run here, one after another.
    from minimtl import parallel

    parallel.set_threads(1)
    engine = MinimtlEngine(args.backend, args.batch)
    import numba

    numba_threads, chunk_workers = numba.get_num_threads(), bench_training_step.CHUNK_WORKERS
    limits = cap_threads(1) if args.one_core else None  # (it also sets the engines' CHUNK_WORKERS to 1)
    try:
        engine.train_step()  # warm-up: Numba compiles, memory is allocated once
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.enable()
        for _ in range(args.steps):
            engine.train_step()
        profiler.disable()
        wall = (time.perf_counter() - start) / args.steps
    finally:  # a caller's process (the smoke test) gets its thread pools back
        if limits is not None:
            limits.restore_original_limits()
            numba.set_num_threads(numba_threads)
            bench_training_step.CHUNK_WORKERS = chunk_workers

    stats = pstats.Stats(profiler)
    owners = function_owners()
    totals: dict[str, float] = {}
    for (filename, line, function), (_, _, tottime, _, _) in stats.stats.items():
        label = owners.get((filename, line), f"{Path(filename).name}:{function}")
        group = next((g for g, keys in GROUPS if any(k in label for k in keys)), "other (NumPy reductions, copies, ...)")
        totals[group] = totals.get(group, 0.0) + tottime / args.steps
    print(f"backend {args.backend}, batch {args.batch}: {wall:.3f} s per step (profiled), {args.batch / wall:.1f} images/s")
    for group, seconds in sorted(totals.items(), key=lambda item: -item[1]):
        print(f"  {group:<40} {seconds:7.3f} s  {100 * seconds / sum(totals.values()):5.1f} %")
    print(f"\ntop {args.top} functions by self time per step:")
    stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
