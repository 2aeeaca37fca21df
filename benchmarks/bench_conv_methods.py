"""im2col, shifted products and Winograd tiles, layer by layer of BKNet, side by side in one run.

For each 3×3 "same" convolution of the Config C trunk at batch 128 (float32,
channels-last input as the network produces it), times the forward pass under
``no_grad`` and a forward + backward pass with each of
``minimtl.conv.settings(method="im2col")``, ``"shifted"``, ``"winograd"`` (2×2
output tiles) and ``"winograd4"`` (4×4), in turns, ``--rounds`` times, and prints the medians and each method's speed-up
over im2col (above 1: faster).  The "auto" rule of ``minimtl.conv.conv_method``
(``minimtl/conv/choose.py``) is read off this table.

    python benchmarks/bench_conv_methods.py --rounds 5
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from minimtl import conv, kernels, parallel
from minimtl.autograd import Tensor, no_grad

# (input channels, filters, side) of the nine convolutions of BKNet's trunk
BKNET_LAYERS = [(1, 32, 48), (32, 32, 48), (32, 64, 24), (64, 64, 24), (64, 128, 12), (128, 128, 12),
                (128, 256, 6), (256, 256, 6), (256, 256, 6)]
METHODS = ["im2col", "shifted", "winograd", "winograd4"]


def time_layer(x: np.ndarray, weight: np.ndarray, upstream: np.ndarray, method: str) -> tuple[float, float]:
    """Seconds for one forward pass without autograd, and for one forward + backward pass, with ``method``."""
    with conv.settings(method=method):
        start = time.perf_counter()
        with no_grad():
            conv.conv2d(Tensor(x), Tensor(weight), None, 1, 1)
        forward = time.perf_counter() - start
        x_t, w_t = Tensor(x, requires_grad=True), Tensor(weight, requires_grad=True)
        start = time.perf_counter()
        conv.conv2d(x_t, w_t, None, 1, 1).backward(upstream)
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
    width = 10 * len(METHODS) - 2
    print(f"{'':>15}  {'forward ms':^{width}}  {'forward + backward ms':^{width}}  "
          f"{'speed-up over im2col':^{14 * len(METHODS) - 16}}")
    print(f"{'layer':>15}  " + "  ".join(f"{m:>8}" for m in METHODS) + "  " + "  ".join(f"{m:>8}" for m in METHODS)
          + "  " + "  ".join(f"{m + ' f/fb':>12}" for m in METHODS[1:]) + "  auto")
    rng = np.random.default_rng(0)
    totals = {m: [0.0, 0.0] for m in METHODS}

    def row(label: str, medians: dict, auto: str) -> str:
        base = medians["im2col"]
        return (f"{label:>15}  " + "  ".join(f"{medians[m][0]:8.1f}" for m in METHODS) + "  "
                + "  ".join(f"{medians[m][1]:8.1f}" for m in METHODS) + "  "
                + "  ".join(f"×{base[0] / medians[m][0]:4.2f}/×{base[1] / medians[m][1]:4.2f}" for m in METHODS[1:])
                + f"  {auto}")

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
            totals[m][0] += medians[m][0]
            totals[m][1] += medians[m][1]
        auto = conv.conv_method(channels, (3, 3), (1, 1), ((1, 1), (1, 1)), (side, side), method="auto")
        print(row(f"{channels} → {filters} {side}×{side}", medians, auto))
    print(row("all nine", totals, ""))


if __name__ == "__main__":
    main()
