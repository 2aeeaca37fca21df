"""Helper of tests/test_distributed_training.py: a few data-parallel training steps, and their one-process reference.

    mpirun -np 2 python tests/mpi_train_steps.py run OUT       # under MPI: steps, then fit straight and fit stopped
    mpirun -np 2 python tests/mpi_train_steps.py resume OUT    # under MPI: the stopped fit resumed
    python tests/mpi_train_steps.py reference OUT 2            # one process: the same steps for 2 shards

Every rank writes its final weights and batch-norm buffers to ``OUT/<what>-rank<r>.npz``; the reference writes
``OUT/reference.npz``.  The reference is written from the definition (minimtl.distributed), not from
``distributed_train_step``: gradients ACCUMULATED over the shards of each global batch in one model, each shard
forwarded as a batch of its own (its own batch-norm statistics and running buffers, its own dropout generators),
every task's cross-entropy summed over the shard and divided by the task's count in the WHOLE batch, λ‖W‖² once.
"""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minimtl import ops  # noqa: E402
from minimtl.autograd import Tensor  # noqa: E402
from minimtl.data import MultiTaskDataset, SyntheticFaces  # noqa: E402
from minimtl.functional import log_softmax  # noqa: E402
from minimtl.losses import l2_penalty, masked_cross_entropy  # noqa: E402
from minimtl.nn import Dropout  # noqa: E402
from minimtl.train import (TrainConfig, batch_norm_buffers, build_model, build_optimizer, distributed_train_step,  # noqa: E402
                           dropout_seed, fit, fit_schedule, train_loader)

STEPS = 4


def data() -> tuple[MultiTaskDataset, MultiTaskDataset]:
    """48 drawn faces, smile on half and gender/age on the other, unbalanced batches: shards of unequal label mixes."""
    train = MultiTaskDataset([SyntheticFaces(24, 0, tasks=("smile",)), SyntheticFaces(24, 100, tasks=("gender", "age"))])
    test = MultiTaskDataset([SyntheticFaces(4, 1, tasks=("smile",)), SyntheticFaces(4, 101, tasks=("gender", "age"))])
    return train, test


def config(**changes) -> TrainConfig:
    values = dict(config="C", epochs=2, batch_size=12, lr=0.002, init="he", seed=3, balance=False,
                  batch_norm_batches=2, weight_average=0.9, task_weights={"age": 0.5})
    values.update(changes)
    return fit_schedule(TrainConfig(**values), STEPS)


def save(path: Path, model, **extra) -> None:
    np.savez(path, **model.state_dict(), **extra)


def steps(communicator, out: Path) -> None:
    """``STEPS`` distributed steps of epoch 0; the label counts of this rank's shards are saved beside the weights."""
    from minimtl.train import shard

    settings = config()
    train, _ = data()
    model = build_model(settings)
    optimizer = build_optimizer(model, settings)
    model.load_state_dict(communicator.broadcast_state(model.state_dict()))
    model.train()
    model.reseed_dropout(dropout_seed(settings, 0, communicator.rank))
    counts = []
    for batch in itertools.islice(iter(train_loader(train, settings, 0)), STEPS):
        mine = shard(batch, communicator.rank, communicator.size)
        counts.append([int(mine[2][task].sum()) for task in model.tasks])
        distributed_train_step(model, optimizer, batch, settings, communicator)
        if len(counts) == 1:  # after one step too, for the comparison with Eq. (1) written out
            first = model.state_dict()  # copies: average their batch-norm buffers, not the model's
            communicator.average_arrays([first[name] for name, _ in model.named_buffers()])
            np.savez(out / f"steps1-rank{communicator.rank}.npz", **first)
    communicator.average_arrays(batch_norm_buffers(model))
    save(out / f"steps-rank{communicator.rank}.npz", model, label_counts=np.array(counts))


def shard_loss(outputs, labels, masks, batch_masks, settings, regularise, model, formula):
    """A shard's share of the global batch's Eq. (2) loss: per task, the shard's summed cross-entropy over the
    task's count in the WHOLE batch (``batch_masks``); ``λ‖W‖²`` only if ``regularise``.

    ``formula="direct"`` writes Eq. (1) out (log-softmax, one-hot, sum, divide); ``"rescaled"`` takes the shard's
    own Eq. (1) mean (``masked_cross_entropy``) times its count over the batch's, as the training loop does (the
    same float32 operations, so the same bits).
    """
    loss = None
    for task in model.tasks:
        weight = settings.task_weights.get(task, 1.0)
        batch_count = max(float(batch_masks[task].sum()), 1.0)
        if formula == "direct":
            one_hot = np.zeros(outputs[task].shape, dtype=np.float32)
            rows = np.flatnonzero(masks[task] == 1)
            one_hot[rows, labels[task][rows]] = 1
            term = ops.sum(log_softmax(outputs[task], axis=1) * Tensor(one_hot)) * (-weight / batch_count)
        else:
            shard_count = max(float(masks[task].sum()), 1.0)
            term = masked_cross_entropy(outputs[task], labels[task], masks[task]) * float(shard_count / batch_count)
            term = term * float(weight)
        loss = term if loss is None else loss + term
    if regularise:
        loss = loss + l2_penalty(model.decay_parameters()) * float(settings.weight_decay)
    return loss


def reference(out: Path, size: int, steps: int, formula: str) -> None:
    """The same steps in one process, by the definition in the module docstring."""
    settings = config()
    train, _ = data()
    model = build_model(settings)
    optimizer = build_optimizer(model, settings)
    model.train()
    dropouts = [m for m in model.modules() if isinstance(m, Dropout)]
    generators, buffers = [], []
    for rank in range(size):
        model.reseed_dropout(dropout_seed(settings, 0, rank))
        generators.append([layer.generator for layer in dropouts])
        buffers.append([b.copy() for b in batch_norm_buffers(model)])
    for images, labels, masks in itertools.islice(iter(train_loader(train, settings, 0)), steps):
        optimizer.zero_grad()
        bounds = [len(images) * rank // size for rank in range(size + 1)]
        for rank, (start, stop) in enumerate(zip(bounds, bounds[1:])):
            for array, value in zip(batch_norm_buffers(model), buffers[rank]):
                array[...] = value
            for layer, generator in zip(dropouts, generators[rank]):
                layer.generator = generator
            outputs = model(Tensor(images[start:stop]))
            loss = shard_loss(outputs, {t: v[start:stop] for t, v in labels.items()},
                              {t: v[start:stop] for t, v in masks.items()}, masks, settings, rank == 0, model, formula)
            loss.backward()  # .grad accumulates over the shards
            buffers[rank] = [b.copy() for b in batch_norm_buffers(model)]
        optimizer.step()
    for index, array in enumerate(batch_norm_buffers(model)):
        array[...] = sum(b[index].astype(np.float64) for b in buffers) / size
    save(out / f"reference-{formula}-{steps}.npz", model)


def fits(communicator, out: Path, resume: bool) -> None:
    settings = config()
    train, test = data()
    if not resume:
        model, _ = fit(settings, train, test, out / "straight", progress=False, communicator=communicator)
        save(out / f"straight-rank{communicator.rank}.npz", model)
        fit(settings, train, test, out / "resumed", progress=False, stop_after_epoch=1, communicator=communicator)
    else:
        model, _ = fit(settings, train, test, out / "resumed", progress=False, resume=True, communicator=communicator)
        save(out / f"resumed-rank{communicator.rank}.npz", model)


def main(argv: list[str]) -> None:
    what, out = argv[0], Path(argv[1])
    if what == "reference":
        size = int(argv[2])
        reference(out, size, STEPS, "rescaled")
        reference(out, size, 1, "direct")
        return
    from minimtl.distributed import world

    communicator = world()
    if what == "run":
        steps(communicator, out)
        fits(communicator, out, resume=False)
    elif what == "resume":
        fits(communicator, out, resume=True)
    else:
        raise SystemExit(f"unknown mode {what!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
