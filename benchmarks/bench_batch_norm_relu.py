"""How long training-mode batch-norm + ReLU take, forward and backward, at each of BKNet's activation sizes.

For each trunk layer's activation (batch 128, float32, channels-last as the
convolutions produce it), times ``relu(batch_norm(x))`` followed by its
backward with a random upstream gradient, the way a training step runs them
after every convolution, as two ops and as one (``batch_norm(..., relu=True)``,
``minimtl.batch_norm.BatchNormReLUFunction``), in turns, and adds the layers up.  Set beside a training step
from ``bench_training_step.py`` it tells how much of the step these
memory-bound passes take.

    python benchmarks/bench_batch_norm_relu.py --rounds 5
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from minimtl import functional as F
from minimtl import kernels, parallel
from minimtl.autograd import Tensor

# (channels, side, how many convolutions of BKNet's trunk produce this size)
ACTIVATIONS = [(32, 48, 2), (64, 24, 2), (128, 12, 2), (256, 6, 3)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"{parallel.threads()} worker threads, kernel backend {kernels.backend_name()}, batch {args.batch}, float32, "
          f"median of {args.rounds} rounds; two ops = relu(batch_norm(x)), one op = batch_norm(x, relu=True)")
    rng = np.random.default_rng(0)
    totals = {False: 0.0, True: 0.0}
    for channels, side, layers in ACTIVATIONS:
        shape = (args.batch, side, side, channels)
        x = rng.standard_normal(shape).astype(np.float32).transpose(0, 3, 1, 2)
        upstream = rng.standard_normal(shape).astype(np.float32).transpose(0, 3, 1, 2)
        shift = Tensor(np.zeros(channels, np.float32), requires_grad=True)
        running_mean, running_var = np.zeros(channels, np.float32), np.ones(channels, np.float32)
        inputs = Tensor(x, requires_grad=True)

        def step(fused: bool) -> float:
            inputs.grad, shift.grad = None, None  # noqa: B023  (step runs only in the iteration that defines it)
            start = time.perf_counter()
            if fused:
                out = F.batch_norm(inputs, running_mean, running_var, None, shift, training=True, relu=True)  # noqa: B023
            else:
                out = F.relu(F.batch_norm(inputs, running_mean, running_var, None, shift, training=True))  # noqa: B023
            out.backward(upstream)  # noqa: B023
            return time.perf_counter() - start

        samples = {False: [], True: []}
        for fused in (False, True):  # warm-up: Numba compiles, memory is faulted in
            step(fused)
        for _ in range(args.rounds):
            for fused in (False, True):
                samples[fused].append(step(fused))
        medians = {fused: statistics.median(values) * 1000 for fused, values in samples.items()}
        for fused in (False, True):
            totals[fused] += medians[fused] * layers
        print(f"{channels:>4} channels {side:>2}×{side:<2} ({x.nbytes / 2**20:5.1f} MiB): two ops {medians[False]:6.1f} ms, "
              f"one op {medians[True]:6.1f} ms (×{medians[False] / medians[True]:.2f})  × {layers} layers")
    print(f"the trunk's batch-norm + ReLU, forward and backward, per training step: two ops {totals[False]:.0f} ms, "
          f"one op {totals[True]:.0f} ms")


if __name__ == "__main__":
    main()
