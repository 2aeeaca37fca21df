"""Training and evaluation of a ``BKNet``: the loop of Section 4.3, with checkpoints that survive interruption.

One step: forward a batch, Eq. (1) loss per task over the samples that carry
it, Eq. (2) total loss with ``λ‖W‖²``, backward, SGD with momentum at the
Eq. (4) learning rate.  After every epoch: recompute batch-norm's running
statistics over a few training batches, evaluate on the held-out split
(Eq. (3) accuracy per task), append to the history, and write a checkpoint
atomically, so ``resume=True`` continues exactly where an interrupted run
stopped — to the same result as an uninterrupted run, because every epoch's
shuffling, augmentation and dropout masks are drawn from generators seeded by
``(seed, epoch)`` alone.

With ``communicator=`` (``minimtl.distributed``) the same loop trains one
model data-parallel over MPI processes: each takes a shard of every global
batch and the gradients are summed (``distributed_train_step``; the
semantics, batch-norm's included, are in ``minimtl.distributed``).

Data come in as ``minimtl.data.MultiTaskDataset``: 48×48 uint8 faces with,
per task, ``labels (N,)`` (−1 where absent) and ``masks (N,)`` (β of Eq. 1),
read in batches by ``minimtl.data.DataLoader``.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from minimtl import memory, serialization
from minimtl.autograd import Tensor, no_grad
from minimtl.data import TASKS, Augment, DataLoader, MultiTaskDataset, normalize
from minimtl.losses import masked_cross_entropy, total_loss
from minimtl.metrics import accuracy, majority_share
from minimtl.models import BKNet
from minimtl.optim import SGD, ExponentialDecay, WeightAverage


@dataclass
class TrainConfig:
    """Every hyper-parameter of a run; defaults are Section 4.3's unless said otherwise.

    A field is defined once, here: ``examples/train_mtl.py`` makes each into an option
    (``batch_size`` -> ``--batch-size``, a bool -> ``--flag`` / ``--no-flag``) with
    :func:`minimtl.cli.add_config_options`, its type from the annotation and its help, group
    and choices from ``metadata``; ``metadata={"command_line": False}`` keeps a field off the
    command line.
    """

    config: str = field(default="C", metadata={
        "group": "model", "choices": ("A", "B", "C"),
        "help": "A single task, B multi-task, C multi-task with fused features"})
    tasks: Sequence[str] = field(default=TASKS, metadata={
        "group": "model", "help": "comma-separated: smile,gender,age (Config A: one)"})
    # The paper ran 500; 12 balanced epochs of GENKI-4K + WIKI (477 steps each, ~5,700 steps) fit the 60-minute
    # budget on 2 cores (docs/results.md).
    epochs: int = 12
    batch_size: int = 128
    lr: float = field(default=0.01, metadata={"help": "initial learning rate of Eq. (4)"})
    decay_rate: float = field(default=0.8, metadata={"help": "Eq. (4)"})
    # Eq. (4) with Section 4.3's 2000 steps spans the paper's 500 epochs; in a run of ~2,400 steps it would leave the
    # rate at 0.89 of its start, and test accuracy swings by several points between epochs. None fits the schedule to
    # the run instead: DECAYS_PER_RUN periods of decay_rate, so the rate ends at 0.8^10 ≈ 0.11 of its start.
    # --decay-steps 2000 restores the paper's.
    decay_steps: int | None = field(default=None, metadata={
        "help": "Eq. (4); default: fitted to the run (ten periods), 2000 is Section 4.3's"})
    staircase: bool = field(default=False, metadata={"help": "decay in steps rather than continuously"})
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = field(default=0.01, metadata={"help": "λ of Eq. (2)"})
    task_weights: dict[str, float] = field(default_factory=dict, metadata={
        "help": "μ_t of Eq. (2), e.g. smile=2,age=1 (default 1 each)"})
    dropout: float = field(default=0.5, metadata={"group": "model"})
    # Section 4.3 draws every weight from N(0, 0.01). Behind batch-norm a layer's effective learning rate is
    # lr / ‖w‖², and with variance 0.01 the 589,824 weights of a 256→256 convolution start at ‖w‖² ≈ 5,900 against
    # ≈ 510 with He's variance 2 / fan-in: the deep layers learn ~10× slower. Over the paper's 500 epochs that washes
    # out; in a 90-minute run it does not (Config C, one epoch: smile 63%, gender 70% with "paper"), so "he" is the
    # default here and "paper" reproduces Section 4.3 exactly.
    init: str = field(default="he", metadata={
        "group": "model", "choices": ("paper", "he"), "help": "paper: Gaussian with variance 0.01 (Section 4.3)"})
    batch_norm_scale: bool = field(default=False, metadata={
        "group": "model", "help": "learn a batch-norm scale too (beyond Table 3's counts)"})
    standardize: bool = field(default=False, metadata={  # BKNet(standardize=)
        "group": "model", "help": "give the network each face at mean 0 and standard deviation 1"})
    # In the pilot runs (docs/results.md) it raised 16 of 20 task accuracies, by up to 1.5 points, and lowered three
    # by at most 0.34.
    test_flip: bool = field(default=True, metadata={
        "group": "model", "help": "evaluate and predict on each face and its mirror image, averaging the probabilities"})
    # optim.WeightAverage. With 0.999 the default run (seed 0) ended 1.2 points higher on smile, 0.4 on WIKI gender
    # and 0.85 on WIKI age, and was ahead in 33 of the 36 per-epoch figures (docs/results.md).
    weight_average: float = field(default=0.999, metadata={
        "help": "evaluate and save an exponential moving average of the weights with this decay (e.g. 0.999); "
                "0: the last weights"})
    # Not in the paper; one of the candidates against over-fitting GENKI-4K's 3,000 training faces.
    label_smoothing: float = field(default=0.0, metadata={
        "help": "ε of label smoothing: train towards (1 − ε)·one-hot + ε/classes (0: Eq. (1) as printed)"})
    normalize: str = field(default="present", metadata={
        "choices": ("present", "all"),
        "help": "Eq. (1) denominator: samples carrying the task, or the whole batch M"})
    augment: bool = field(default=True, metadata={
        "help": "random crop, flip and rotation of the training faces (Section 3.1)"})
    # Equal share of every member data set in each batch, repeating the small one within an epoch, as the BKNet
    # reference repeats GENKI-4K: without it smile (3,000 faces against ~19,000) is 14% of each batch and is seen
    # only once per epoch; with it, 64 of 128 and about six times per epoch.
    balance: bool = field(default=True, metadata={
        "help": "an equal share of each data set in every batch (else batches are drawn from the merged set "
                "as it is)"})
    # The recomputed statistics are the plain average of the batch statistics of this many training batches
    # (forward passes only; the weights do not change): the running averages kept during training (momentum 0.1)
    # follow the last ten or so batches, and that noise alone moved the default run's age accuracy by 3.5 points
    # (54.80% as trained, 58.34% recomputed over 50 batches, 58.19% over 200).
    batch_norm_batches: int = field(default=50, metadata={
        "help": "recompute batch-norm's statistics over this many training batches before each evaluation "
                "(0: keep the running averages)"})
    # Samples per epoch; None: one pass over the largest member data set per member (with balance). The comparison
    # of configurations (--compare) gives each single-task run as many samples of its task as the multi-task run sees.
    epoch_samples: int | None = field(default=None, metadata={"command_line": False})
    seed: int = field(default=0, metadata={"help": "initial weights, batch order, augmentation, dropout"})

    def __post_init__(self) -> None:
        self.tasks = tuple(self.tasks)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["tasks"] = list(self.tasks)
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        """The configuration ``to_json`` wrote; ``ValueError`` for text that is not one (or names unknown options)."""
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError) as error:
            raise ValueError(f"not a minimtl training configuration ({' '.join(str(error).split())})") from None


DECAYS_PER_RUN = 10


def fit_schedule(config: TrainConfig, steps_per_epoch: int) -> TrainConfig:
    """``config`` with ``decay_steps`` fixed: as given, or, when None, the run's length / ``DECAYS_PER_RUN``."""
    if config.decay_steps is not None:
        return config
    total_steps = config.epochs * steps_per_epoch
    return dataclasses.replace(config, decay_steps=max(1, round(total_steps / DECAYS_PER_RUN)))


class NonFiniteLoss(RuntimeError):
    """Training produced NaN or infinity; the message names the step and the task."""


def epoch_generator(seed: int, epoch: int, purpose: int) -> np.random.Generator:
    """A generator that depends only on (seed, epoch, purpose): what makes a resumed run identical."""
    return np.random.default_rng([seed, epoch, purpose])


def build_model(config: TrainConfig) -> BKNet:
    return BKNet(config.config, config.tasks, init=config.init, dropout=config.dropout,
                 batch_norm_scale=config.batch_norm_scale, standardize=config.standardize, seed=config.seed)


def build_optimizer(model: BKNet, config: TrainConfig) -> SGD:
    if config.decay_steps is None:
        raise ValueError("decay_steps is None: fix it with fit_schedule(config, steps_per_epoch) first")
    schedule = ExponentialDecay(config.lr, config.decay_rate, config.decay_steps, config.staircase)
    return SGD(model.parameters(), lr=schedule, momentum=config.momentum, nesterov=config.nesterov)


Batch = tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]


def train_loader(data: MultiTaskDataset, config: TrainConfig, epoch: int, streams: tuple[int, int] = (0, 2)) -> DataLoader:
    """The training batches of one epoch: order and augmentation drawn from (seed, epoch) alone.

    ``streams``: the purposes (``epoch_generator``) whose random numbers
    shuffle and augment; the training loop's are 0 and 2 (dropout is 1), and
    other purposes give other batches of the same kind (``batch_norm_loader``).
    """
    shuffle_stream, augment_stream = streams
    augment = Augment(seed=epoch_generator(config.seed, epoch, augment_stream)) if config.augment else None
    return DataLoader(data, config.batch_size, shuffle=True, augment=augment, balance_datasets=config.balance,
                      epoch_samples=config.epoch_samples, seed=[config.seed, epoch, shuffle_stream])


def train_step(model: BKNet, optimizer: SGD, batch: Batch, config: TrainConfig) -> dict[str, tuple[float, float, int]]:
    """One SGD step on ``batch``; returns ``{task: (loss, accuracy, samples)}`` for the tasks present.

    Raises ``NonFiniteLoss`` naming the step and task if a loss is NaN or infinite (before updating anything).
    """
    images, labels, masks = batch
    if len(images) < 2:
        return {}  # batch-norm needs two samples; a last batch of one is skipped
    optimizer.zero_grad()
    outputs = model(Tensor(images))
    losses, stats = {}, {}
    for task in model.tasks:
        if not np.all(np.isfinite(outputs[task].data)):
            raise NonFiniteLoss(f"non-finite {task} output at step {optimizer.step_count}")
        losses[task] = masked_cross_entropy(outputs[task], labels[task], masks[task], config.normalize,
                                            config.label_smoothing)
        present = int(masks[task].sum())
        if present:
            stats[task] = (losses[task].item(), accuracy(outputs[task].data.argmax(1), labels[task], masks[task]), present)
    loss = total_loss(losses, model.decay_parameters(), config.weight_decay, config.task_weights)
    if not math.isfinite(loss.item()):
        raise NonFiniteLoss(f"non-finite total loss at step {optimizer.step_count} (task losses: "
                            + ", ".join(f"{t} {v.item():.4g}" for t, v in losses.items()) + ")")
    loss.backward()
    optimizer.step()
    return stats


def shard(batch: Batch, rank: int, size: int) -> Batch:
    """Rank ``rank``'s share of a global batch: rows ``[B·rank // size, B·(rank + 1) // size)``.

    Contiguous, so each shard keeps the balanced loader's mix of data sets; the sizes differ by at most one.
    """
    images, labels, masks = batch
    start, stop = len(images) * rank // size, len(images) * (rank + 1) // size
    return (images[start:stop], {task: values[start:stop] for task, values in labels.items()},
            {task: values[start:stop] for task, values in masks.items()})


def shard_sizes(count: int, size: int) -> list[int]:
    """The number of rows ``shard`` gives each of ``size`` ranks from a batch of ``count``."""
    return [count * (rank + 1) // size - count * rank // size for rank in range(size)]


def dropout_seed(config: TrainConfig, epoch: int, rank: int = 0) -> list[int]:
    """The seed of an epoch's dropout masks: ``(seed, epoch, 1)``, and the rank after it on ranks other than 0
    (so rank 0 draws what a single process draws)."""
    return [config.seed, epoch, 1] + ([rank] if rank else [])


def distributed_train_step(model: BKNet, optimizer: SGD, batch: Batch, config: TrainConfig, communicator,
                           gradients=None) -> dict[str, tuple[float, float, int]]:
    """One SGD step on the GLOBAL ``batch``, this rank computing the gradient of its ``shard`` only.

    Every rank passes the same global batch.  Per task, the samples carrying
    it (and the loss and accuracy sums) are summed over the ranks in one tiny
    allreduce; each rank's Eq. (1) loss is re-weighted to the global count
    (``normalize="present"``: ``Σ_i β_i^t`` over the whole batch; ``"all"``:
    the whole batch's size), so the ranks' gradients add up to the gradient
    of the global batch's Eq. (1).  ``λ‖W‖²`` is added on one rank only.  The
    gradients go through ONE ``Allreduce`` of one packed float32 buffer
    (``gradients``: a ``minimtl.distributed.GradientBuffer`` reused between
    steps; made here if None), then every rank takes the same step.

    A shard of fewer than two faces (batch-norm needs two) contributes nothing; if every shard is that small the
    step is skipped (``{}``), as ``train_step`` skips a batch of one.  Returns the global
    ``{task: (loss, accuracy, samples)}``; ``NonFiniteLoss`` on every rank at once if any rank's output or the
    total loss is NaN or infinite (before updating anything).
    """
    from minimtl.distributed import GradientBuffer

    size, rank = communicator.size, communicator.rank
    sizes = shard_sizes(len(batch[0]), size)
    taking = [count >= 2 for count in sizes]
    if not any(taking):
        return {}
    if gradients is None:
        gradients = GradientBuffer(model.parameters())
    images, labels, masks = shard(batch, rank, size)
    optimizer.zero_grad()
    tasks = list(model.tasks)
    # per task: samples carrying it, shard rows, loss · local denominator, correct predictions, non-finite output
    local = np.zeros((len(tasks), 5))
    losses = {}
    if taking[rank]:
        outputs = model(Tensor(images))
        for index, task in enumerate(tasks):
            if not np.all(np.isfinite(outputs[task].data)):
                local[index, 4] = 1
                continue
            present = int(masks[task].sum())
            losses[task] = masked_cross_entropy(outputs[task], labels[task], masks[task], config.normalize,
                                                config.label_smoothing)
            denominator = max(present, 1) if config.normalize == "present" else len(images)
            correct = (outputs[task].data.argmax(1) == labels[task]) & (masks[task] == 1)
            local[index, :4] = present, len(images), losses[task].item() * denominator, int(correct.sum())
    total = communicator.allreduce_sum(local)
    for index, task in enumerate(tasks):
        if total[index, 4]:
            raise NonFiniteLoss(f"non-finite {task} output at step {optimizer.step_count}")
    stats, task_losses = {}, {}
    for index, task in enumerate(tasks):
        present, rows, loss_sum, correct = total[index, :4]
        global_denominator = max(present, 1) if config.normalize == "present" else rows
        if present:
            stats[task] = (float(loss_sum / global_denominator), float(correct / present), int(present))
        if task in losses:
            local_denominator = max(local[index, 0], 1) if config.normalize == "present" else local[index, 1]
            task_losses[task] = losses[task] * float(local_denominator / global_denominator)
    regularise = rank == taking.index(True)
    if task_losses:
        loss = total_loss(task_losses, model.decay_parameters() if regularise else (),
                          config.weight_decay if regularise else 0.0, config.task_weights)
        loss.backward()
        gradients.pack()
        gradients.extra[0] = loss.item()
    else:  # this rank's shard is too small to take part
        gradients.buffer[:] = 0
    communicator.allreduce_gradients(gradients.buffer)
    if not math.isfinite(float(gradients.extra[0])):
        raise NonFiniteLoss(f"non-finite total loss at step {optimizer.step_count} (task losses: "
                            + ", ".join(f"{t} {v[0]:.4g}" for t, v in stats.items()) + ")")
    gradients.unpack()
    optimizer.step()
    return stats


def batch_norm_buffers(model) -> list[np.ndarray]:
    """Every batch-norm's running mean and variance (the arrays themselves, to average in place)."""
    from minimtl.nn import _BatchNorm

    return [array for module in model.modules() if isinstance(module, _BatchNorm)
            for array in (module.running_mean, module.running_var)]


def recompute_batch_norm_statistics(model, batches) -> int:
    """Set every batch-norm's running mean and variance to the plain average of its statistics over ``batches``.

    ``batches`` yields float32 image batches ``(N, 1, 48, 48)`` or ``Batch``
    tuples whose first item is that.  The model runs forward in training mode
    without autograd; at the k-th batch each batch-norm's momentum is
    ``1 / k``, so its running value becomes the mean of the k batch values
    (the variance unbiased per batch, as in training).  This is "precise
    batch-norm" (Wu and Johnson, "Rethinking 'Batch' in BatchNorm", 2021): the
    exponential averages kept during training weight the last few batches
    most.  Weights, momentum settings and the train/eval mode are left as they
    were.  Returns how many batches were used.
    """
    from minimtl.nn import _BatchNorm

    norms = [module for module in model.modules() if isinstance(module, _BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    was_training = model.training
    model.train()
    used = 0
    try:
        with no_grad():
            for batch in batches:
                images = batch[0] if isinstance(batch, tuple) else batch
                if len(images) < 2:
                    continue  # batch-norm needs two samples
                used += 1
                for norm in norms:
                    norm.momentum = 1.0 / used
                model(Tensor(images))
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.train(was_training)
    return used


def batch_norm_loader(data: MultiTaskDataset, config: TrainConfig, epoch: int):
    """The first ``config.batch_norm_batches`` batches of a training loader with its own seeds (the epoch's
    training batches, augmentation and dropout are drawn from other streams, so they do not change).

    Shuffling draws from purpose 3 and augmentation from purpose 4: two generators, as in the training loop
    (with one purpose for both, the two would start from the same random numbers).
    """
    return itertools.islice(iter(train_loader(data, config, epoch, streams=(3, 4))), config.batch_norm_batches)


def predict(model: BKNet, images: np.ndarray, batch_size: int = 256, flip: bool = False) -> dict[str, np.ndarray]:
    """Class probabilities per task: ``{task: (N, classes)}``, in evaluation mode.

    ``model``: a ``BKNet``, or its inference copy (``model.fuse_for_inference()``).  Any other is folded into
    one first, once per call, and left as it was: a caller that predicts again and again on few images (a
    video, a throughput measurement) folds once itself and passes the copy.
    ``images``: ``(N, 48, 48)`` uint8 faces (scaled here as in training) or ``(N, 1, 48, 48)`` float32 already scaled.
    ``flip``: average the probabilities of each face and its mirror image (test-time augmentation: the
    training faces are flipped at random, so both are faces the network knows).
    """
    from minimtl.functional import softmax

    model = model if model.inference_only else model.fuse_for_inference()
    chunks: dict[str, list[np.ndarray]] = {task: [] for task in model.tasks}
    with no_grad():
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            chunk = normalize(chunk) if chunk.dtype == np.uint8 else np.ascontiguousarray(chunk, dtype=np.float32)
            out = model(Tensor(chunk))
            mirrored = model(Tensor(np.ascontiguousarray(chunk[..., ::-1]))) if flip else None
            for task in model.tasks:
                p = softmax(out[task], axis=1).data
                if mirrored is not None:
                    p = (p + softmax(mirrored[task], axis=1).data) / 2
                chunks[task].append(p)
    return {task: np.concatenate(parts) if parts else np.zeros((0,)) for task, parts in chunks.items()}


def task_metrics(probabilities: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                 masks: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per task present: mean cross-entropy, Eq. (3) accuracy, sample count and the majority-class share.

    ``probabilities[task]`` ``(N, classes)``; ``labels[task]``, ``masks[task]`` ``(N,)``.
    """
    results = {}
    for task, p in probabilities.items():
        present = masks[task] == 1
        if not present.any():
            continue
        p, truth = p[present], labels[task][present]
        loss = -np.mean(np.log(np.clip(p[np.arange(len(truth)), truth], 1e-12, None)))
        results[task] = {"loss": float(loss), "accuracy": accuracy(p.argmax(1), truth), "samples": int(present.sum()),
                         "majority": majority_share(truth)}
    return results


def evaluate(model: BKNet, data: MultiTaskDataset, flip: bool = False) -> dict[str, dict[str, float]]:
    """Per task: mean cross-entropy and Eq. (3) accuracy over the samples of ``data`` that carry the task."""
    return evaluate_by_dataset(model, data, flip)[0]


def evaluate_by_dataset(model: BKNet, data: MultiTaskDataset, flip: bool = False) -> tuple[dict, dict[str, dict]]:
    """``(over all of data, {member data set's name: the same over its samples alone})``, from one prediction pass.

    Each is ``{task: {"loss", "accuracy", "samples", "majority"}}`` for the tasks present (see ``task_metrics``).
    ``flip``: see ``predict``.
    """
    probabilities = predict(model, data.images, flip=flip)
    merged = task_metrics(probabilities, data.labels, data.masks)
    members = {}
    for index, dataset in enumerate(data.datasets):
        mine = data.origin == index
        members[dataset.name] = task_metrics({task: p[mine] for task, p in probabilities.items()},
                                             {task: v[mine] for task, v in data.labels.items()},
                                             {task: v[mine] for task, v in data.masks.items()})
    return merged, members


def save_checkpoint(path: Path, model: BKNet, optimizer: SGD, config: TrainConfig, epoch: int, history: list,
                    average: WeightAverage | None = None) -> None:
    """Everything a resumed run needs, in one .npz written atomically."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state.update({f"optimizer.{k}": v for k, v in optimizer.state_dict().items()})
    if average is not None:
        state.update({f"average.{k}": v for k, v in average.state_dict().items()})
    state["epoch"] = np.array(epoch)
    state["config"] = np.array(config.to_json())
    state["history"] = np.array(json.dumps(history))
    serialization.save(state, path)


def _checkpoint_state(path: Path) -> tuple[dict[str, np.ndarray], TrainConfig, int]:
    """``(state, config, last finished epoch)`` of a checkpoint; ``ValueError`` naming the file if it is not one."""
    state = serialization.load(path)
    if "config" not in state or "epoch" not in state or "history" not in state:
        if "__config__" in state:
            raise ValueError(f"{path} is a trained model (as model.npz is), not a training checkpoint: resuming needs "
                             f"the checkpoint.npz that training writes after every epoch; restore it, or start a new "
                             f"run in another --run-dir")
        raise ValueError(f"{path} is not a minimtl training checkpoint (it has no config, epoch and history): "
                         f"restore the run folder's checkpoint.npz, or start a new run in another --run-dir")
    try:
        config = TrainConfig.from_json(str(state["config"]))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return state, config, int(state["epoch"])


def read_checkpoint(path: Path) -> tuple[TrainConfig, int]:
    """``(configuration, number of finished epochs)`` of the checkpoint at ``path``, without building a model."""
    _, config, epoch = _checkpoint_state(path)
    return config, epoch + 1


def config_differences(saved: TrainConfig, config: TrainConfig, ignore: Sequence[str] = ("epochs",)) -> list[str]:
    """``["lr 0.01 there, 0.1 here", ...]`` for every field but ``ignore`` in which ``config`` differs from ``saved``."""
    return [f"{f.name} {getattr(saved, f.name)!r} there, {getattr(config, f.name)!r} here"
            for f in dataclasses.fields(TrainConfig)
            if f.name not in ignore and getattr(saved, f.name) != getattr(config, f.name)]


def load_checkpoint(path: Path, model: BKNet, optimizer: SGD, average: WeightAverage | None = None) -> tuple[int, list]:
    state, _, _ = _checkpoint_state(path)
    model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
    optimizer.load_state_dict({k[10:]: v for k, v in state.items() if k.startswith("optimizer.")})
    if average is not None:
        average.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("average.")})
    return int(state["epoch"]), json.loads(str(state["history"]))


def save_model(model: BKNet, config: TrainConfig, path: Path) -> Path:
    """The trained weights plus the configuration needed to rebuild the network (for ``load_model``)."""
    state = model.state_dict()
    state["__config__"] = np.array(config.to_json())
    return serialization.save(state, path)


def load_model(path: str | Path) -> tuple[BKNet, TrainConfig]:
    """Rebuild a model saved by ``save_model``, in evaluation mode."""
    state = serialization.load(path)
    if "__config__" not in state:
        if "config" in state and "epoch" in state:
            raise ValueError(f"{path} is a training checkpoint, not a model: give the run folder's model.npz "
                             f"(written when training finishes)")
        raise ValueError(f"{path} has no __config__ entry: it was not written by minimtl.train.save_model")
    try:
        config = TrainConfig.from_json(str(state.pop("__config__")))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    broken = [name for name, value in state.items() if np.issubdtype(value.dtype, np.number) and not np.isfinite(value).all()]
    if broken:
        raise ValueError(f"{path} holds NaN or infinite weights ({', '.join(broken[:3])}"
                         f"{' ...' if len(broken) > 3 else ''}): the training that wrote it diverged; train again "
                         f"(e.g. with a lower --lr) or use an earlier model")
    model = build_model(config)
    model.load_state_dict(state)
    return model.eval(), config


def fit(config: TrainConfig, train_data: MultiTaskDataset, test_data: MultiTaskDataset, run_dir: Path, *,
        resume: bool = False, progress: bool = True, stop_after_epoch: int | None = None,
        on_epoch_end: Callable[[BKNet, int], None] | None = None, communicator=None) -> tuple[BKNet, list[dict]]:
    """Train ``config`` on ``train_data``, evaluating on ``test_data`` after every epoch.

    Writes into ``run_dir``: ``config.json``, ``checkpoint.npz`` (every epoch,
    atomically) and ``model.npz`` (the final weights, for ``load_model``).
    Returns the model and the history: one dict per epoch with per-task
    ``train``/``test`` loss and accuracy, the learning rate and the time taken.

    ``stop_after_epoch`` ends the run early (as an interruption would; used by tests).
    ``communicator``: a ``minimtl.distributed.Communicator`` to train data-parallel over MPI (call ``fit`` on
    every rank alike; each rank computes the gradient of its shard of every batch, rank 0 alone evaluates and
    writes, and every rank returns the same model and history), or ``LocalCommunicator()``, the same code path in
    one process.  None: the plain loop.
    """
    from tqdm.auto import tqdm

    memory.apply_default()  # a training step's large temporaries reuse freed memory (minimtl/memory.py)
    distributed = communicator is not None
    rank = communicator.rank if distributed else 0
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = run_dir / "checkpoint.npz"
    saved = None
    if resume:
        if not checkpoint.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {checkpoint}")
        saved = read_checkpoint(checkpoint)[0]
        if config.decay_steps is None:  # keep the schedule the run started with, even if the epoch count grows
            config = dataclasses.replace(config, decay_steps=saved.decay_steps)
    config = fit_schedule(config, len(train_loader(train_data, config, 0)))
    model = build_model(config)
    optimizer = build_optimizer(model, config)
    average = WeightAverage(model.parameters(), config.weight_average) if config.weight_average else None
    history: list[dict] = []
    start_epoch = 0
    if saved is not None:
        if dataclasses.replace(saved, epochs=config.epochs) != config:  # only the epoch count may grow
            raise ValueError(f"--resume: the checkpoint in {run_dir} was made with a different configuration ("
                             + "; ".join(config_differences(saved, config)) + "): give the same options to "
                             "continue it, or choose another --run-dir for a new run")
        start_epoch, history = load_checkpoint(checkpoint, model, optimizer, average)
        start_epoch += 1
    if rank == 0:
        (run_dir / "config.json").write_text(config.to_json())
    if distributed:  # every rank starts from rank 0's weights (and batch-norm buffers)
        model.load_state_dict(communicator.broadcast_state(model.state_dict()))
        from minimtl.distributed import GradientBuffer

        gradients = GradientBuffer(model.parameters())

        def step(batch):
            return distributed_train_step(model, optimizer, batch, config, communicator, gradients)
    else:
        def step(batch):
            return train_step(model, optimizer, batch, config)

    for epoch in range(start_epoch, config.epochs):
        model.train()
        model.reseed_dropout(dropout_seed(config, epoch, rank))
        started = time.perf_counter()
        sums: dict[str, list[float]] = {task: [0.0, 0.0, 0] for task in model.tasks}
        batches = train_loader(train_data, config, epoch)
        bar = tqdm(batches, total=len(batches), desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not progress or rank != 0, leave=True)
        for batch in bar:
            try:
                stats = step(batch)
            except NonFiniteLoss as error:
                raise NonFiniteLoss(f"{error} in epoch {epoch + 1}; the last good checkpoint is {checkpoint}"
                                    + ("" if checkpoint.exists() else " (none written yet)")) from None
            if average is not None:
                average.update()
            for task, (loss, acc, count) in stats.items():
                sums[task][0] += loss * count
                sums[task][1] += acc * count
                sums[task][2] += count
            bar.set_postfix({task: f"{s[0] / s[2]:.3f}/{100 * s[1] / s[2]:.1f}%" for task, s in sums.items() if s[2]})
        bar.close()
        train_seconds = time.perf_counter() - started
        if average is not None:
            average.swap()  # evaluate the averaged weights (their batch-norm statistics are recomputed for them)
        used = 0
        if config.batch_norm_batches > 0:
            bn_batches = batch_norm_loader(train_data, config, epoch)
            if distributed:  # each rank its shards of the same batches, as in training
                bn_batches = (shard(b, rank, communicator.size) for b in bn_batches)
            used = recompute_batch_norm_statistics(model, bn_batches)
        if distributed:  # every rank the same buffers: the average over the ranks
            communicator.average_arrays(batch_norm_buffers(model), weight=used if config.batch_norm_batches > 0 else 1)
        merged = by_dataset = None
        if rank == 0:
            merged, by_dataset = evaluate_by_dataset(model, test_data, config.test_flip)
        if average is not None:
            average.swap()
        record = None
        if rank == 0:
            record = {"epoch": epoch + 1, "lr": optimizer.current_lr, "train_seconds": train_seconds,
                      "steps": optimizer.step_count, "train": {}, "test": merged, "test_datasets": by_dataset}
            for task, (loss_sum, acc_sum, count) in sums.items():
                if count:
                    record["train"][task] = {"loss": loss_sum / count, "accuracy": acc_sum / count,
                                             "samples": int(count)}
        if distributed:
            record = communicator.broadcast_object(record)
        history.append(record)
        if rank == 0:
            save_checkpoint(checkpoint, model, optimizer, config, epoch, history, average)
            if progress:
                print(f"epoch {epoch + 1}: " + ", ".join(
                    f"{t} test {100 * r['accuracy']:.2f}%" for t, r in record["test"].items())
                    + f" ({train_seconds:.0f} s)")
        if on_epoch_end is not None:
            on_epoch_end(model, epoch)
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < config.epochs:
            if distributed:
                communicator.barrier()  # the checkpoint is written when fit returns on any rank
            return model, history
    if average is not None:
        average.swap()  # the model returned and saved is the one evaluated: the averaged weights
    if rank == 0:
        save_model(model, config, run_dir / "model.npz")
    if distributed:
        communicator.barrier()
    return model, history
