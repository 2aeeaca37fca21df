"""Each kernel of each backend on BKNet's shapes, one thread, side by side with the NumPy reference.

For the pooling layers and the Winograd layers of the Config C trunk at batch
128 (float32, channels-last as the network holds its activations), times
every backend's ``max_pool2d_forward``, ``max_pool2d_backward`` and the four
Winograd tile transforms with 2×2 and with 4×4 output tiles (on one chunk of images, the size
``minimtl.conv.Conv2dFunction`` hands each worker), in turns, ``--rounds``
times, and prints the median milliseconds and each compiled backend's
speed-up over the reference.  Everything runs on one thread (the compiled
loops' OpenMP cut-off is lifted, BLAS is held to one thread), which is how
the training step runs these kernels inside its workers.

    python benchmarks/bench_kernels.py --rounds 7
"""
from __future__ import annotations

import argparse
import importlib
import statistics
import time

import numpy as np

from minimtl import conv, kernels
from minimtl.kernels import compiled

POOLED = [(32, 48), (64, 24), (128, 12), (256, 6)]  # (channels, side) before each 2×2 pooling
WINOGRAD = [(32, 32, 48), (64, 64, 24), (128, 128, 12), (256, 256, 6)]  # (C, F, side)


def cases(batch: int, rng: np.random.Generator) -> list[tuple[str, callable]]:
    """``(label, run(backend_module))`` for every kernel and shape."""
    out = []
    for channels, side in POOLED:
        x = rng.standard_normal((batch, side, side, channels)).astype(np.float32).transpose(0, 3, 1, 2)
        pooled, indices = kernels.numpy_backend.max_pool2d_forward(x, (2, 2), (2, 2), ((0, 0), (0, 0)))
        indices = np.ascontiguousarray(indices.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)  # channels-last, as computed
        grad = rng.standard_normal(pooled.shape).astype(np.float32)
        grad = np.ascontiguousarray(grad.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        out.append((f"max-pool forward {channels}×{side}²",
                    lambda b, x=x: b.max_pool2d_forward(x, (2, 2), (2, 2), ((0, 0), (0, 0)))))
        out.append((f"max-pool backward {channels}×{side}²",
                    lambda b, g=grad, i=indices, s=x.shape: b.max_pool2d_backward(g, i, s)))
    for channels, features, side in WINOGRAD:
        for tile in kernels.numpy_backend.WINOGRAD_TILES:
            algorithm = conv.WINOGRAD_4X4 if tile == 4 else conv.WINOGRAD_2X2
            plan = algorithm.plan((batch, channels, side, side), (features, channels, 3, 3), (1, 1), ((1, 1), (1, 1)),
                                  np.float32)
            tiles = plan.tiling
            images = min(batch, plan.images_per_chunk(conv.current_settings().chunk_bytes_for(algorithm)))
            x = rng.standard_normal((images, channels, side, side)).astype(np.float32)
            padded = tiles.padded(x, np.float32)
            positions = tiles.alpha**2
            products = rng.standard_normal((positions, tiles.count(images), features)).astype(np.float32)
            grad = rng.standard_normal((images, tile * tiles.tiles_hw[0], tile * tiles.tiles_hw[1], features)).astype(np.float32)
            grad_tiles = rng.standard_normal((positions, tiles.count(images), channels)).astype(np.float32)
            shape = f"{tile}×{tile} {channels}→{features} {side}², {images} image{'s' if images > 1 else ''}"
            out.append((f"winograd input {shape}", lambda b, p=padded, m=tile: b.winograd_input_transform(p, m)))
            out.append((f"winograd output {shape}",
                        lambda b, v=products, t=tiles.tiles_hw, m=tile: b.winograd_output_transform(v, t, tile=m)))
            out.append((f"winograd output grad {shape}", lambda b, g=grad, m=tile: b.winograd_output_transform_grad(g, m)))
            out.append((f"winograd input grad {shape}",
                        lambda b, v=grad_tiles, t=tiles.tiles_hw, m=tile: b.winograd_input_transform_grad(v, t, m)))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    names = kernels.available_backends()[::-1]  # numpy first: the reference every ratio is against
    modules = {name: importlib.import_module(kernels.BACKEND_MODULES[name]) for name in names}
    previous = compiled.PARALLEL_MIN_VALUES
    compiled.PARALLEL_MIN_VALUES = 1 << 62  # every compiled loop on one thread
    try:
        with threadpool_limits(1):
            rows = cases(args.batch, np.random.default_rng(0))
            print(f"one thread, batch {args.batch}, float32, median of {args.rounds} rounds (ms); "
                  f"×: speed-up over numpy")
            print(f"{'kernel':<50}" + "".join(f"{n:>10}" for n in names) + "".join(f"{'×' + n:>10}" for n in names[1:]))
            for label, run in rows:
                for module in modules.values():
                    run(module)  # warm up: Numba compiles, memory is touched
                samples = {name: [] for name in names}
                for _ in range(args.rounds):
                    for name, module in modules.items():
                        start = time.perf_counter()
                        run(module)
                        samples[name].append(time.perf_counter() - start)
                medians = {name: statistics.median(s) * 1000 for name, s in samples.items()}
                print(f"{label:<50}" + "".join(f"{medians[n]:10.2f}" for n in names)
                      + "".join(f"{medians['numpy'] / medians[n]:10.1f}" for n in names[1:]))
    finally:
        compiled.PARALLEL_MIN_VALUES = previous


if __name__ == "__main__":
    main()
