"""im2col against shifted products, layer by layer of BKNet, side by side in one run.

For each 3×3 "same" convolution of the Config C trunk at batch 128 (float32,
channels-last input as the network produces it), times the forward pass under
``no_grad`` and a forward + backward pass, once with
``functional.CONV_METHOD = "im2col"`` and once with ``"shifted"``, in turns,
``--rounds`` times, and prints the medians and the ratio im2col / shifted
(above 1: shifted products are faster).  ``functional.conv_method``'s "auto"
rule is read off this table.

    python benchmarks/bench_conv_methods.py --rounds 5
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from minimtl import functional as F
from minimtl import kernels, parallel
from minimtl.autograd import Tensor, no_grad

# (input channels, filters, side) of the nine convolutions of BKNet's trunk
BKNET_LAYERS = [(1, 32, 48), (32, 32, 48), (32, 64, 24), (64, 64, 24), (64, 128, 12), (128, 128, 12),
                (128, 256, 6), (256, 256, 6), (256, 256, 6)]
METHODS = ["im2col", "shifted"]


def time_layer(x: np.ndarray, weight: np.ndarray, upstream: np.ndarray, method: str) -> tuple[float, float]:
    """Seconds for one forward pass without autograd, and for one forward + backward pass, with ``method``."""
    F.CONV_METHOD = method
    start = time.perf_counter()
    with no_grad():
        F.conv2d(Tensor(x), Tensor(weight), None, 1, 1)
    forward = time.perf_counter() - start
    x_t, w_t = Tensor(x, requires_grad=True), Tensor(weight, requires_grad=True)
    start = time.perf_counter()
    F.conv2d(x_t, w_t, None, 1, 1).backward(upstream)
    return forward, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", default=None, help="kernel backend (default: the fastest available)")
    args = parser.parse_args(argv)
    if args.backend:
        kernels.set_backend(args.backend)
    print(f"backend {kernels.backend_name()}, {parallel.threads()} worker threads, batch {args.batch}, float32, "
          f"median of {args.rounds} rounds; auto = what conv_method picks")
    print(f"{'layer':>22}  {'forward ms':>21}  {'ratio':>5}  {'forward+backward ms':>21}  {'ratio':>5}  auto")
    rng = np.random.default_rng(0)
    totals = {(m, part): 0.0 for m in METHODS for part in (0, 1)}
    for channels, filters, side in BKNET_LAYERS:
        x = rng.standard_normal((args.batch, side, side, channels)).astype(np.float32).transpose(0, 3, 1, 2)
        weight = (rng.standard_normal((filters, channels, 3, 3)) / np.sqrt(9 * channels)).astype(np.float32)
        upstream = rng.standard_normal((args.batch, side, side, filters)).astype(np.float32).transpose(0, 3, 1, 2)
        for method in METHODS:  # warm up: first calls compile (Numba) and fault in memory
            time_layer(x, weight, upstream, method)
        samples = {m: [] for m in METHODS}
        for _ in range(args.rounds):
            for method in METHODS:
                samples[method].append(time_layer(x, weight, upstream, method))
        medians = {m: [statistics.median(s[part] for s in samples[m]) * 1000 for part in (0, 1)] for m in METHODS}
        for m in METHODS:
            for part in (0, 1):
                totals[(m, part)] += medians[m][part]
        F.CONV_METHOD = "auto"
        auto = F.conv_method(channels, (3, 3), (1, 1), ((1, 1), (1, 1)), (side, side))
        (fi, bi), (fs, bs) = medians["im2col"], medians["shifted"]
        print(f"{channels:>4} → {filters:<4} {side:>2}×{side:<2}     {fi:7.1f} vs {fs:7.1f}      ×{fi / fs:4.2f}  "
              f"{bi:8.1f} vs {bs:8.1f}    ×{bi / bs:4.2f}  {auto}")
    fi, fs, bi, bs = (totals[("im2col", 0)], totals[("shifted", 0)], totals[("im2col", 1)], totals[("shifted", 1)])
    print(f"{'all nine':>22}     {fi:7.1f} vs {fs:7.1f}      ×{fi / fs:4.2f}  {bi:8.1f} vs {bs:8.1f}    ×{bi / bs:4.2f}")
    F.CONV_METHOD = "auto"


if __name__ == "__main__":
    main()
