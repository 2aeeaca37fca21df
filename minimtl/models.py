"""The paper's networks: Config A (single-task BKNet), B (multi-task BKNet), C (multi-task BKNet with feature fusion).

The shared trunk (Section 3.2) is the BKNet reference's: four blocks of 2, 2,
2 and 3 convolutions (32, 64, 128, 256 filters, 3×3, stride 1, "same"
padding), each block ending in 2×2 max-pooling, taking a 48×48 grayscale
face to 256×3×3 features.  Each task head (Section 3.3) is
FC 256 → FC 256 → FC N, with batch-norm and ReLU after the first two and
dropout 0.5.  Config C also max-pools the first block's 32×24×24 output to
32×3×3 and concatenates those 288 features with the trunk's 2304 before the
heads ("the first block's output and the last block's output were concatenated").

Parameter counts (Table 3): A 2,418,146 (smile head), B 3,731,946,
C 3,953,130.  They hold when every convolution and fully connected unit has
exactly one additive term: here each convolution and the first two FC layers
of a head are followed by a batch-norm that learns a shift but no scale
(``batch_norm_scale=False``), so they need no bias of their own, and the last
FC has a bias.  With ``batch_norm_scale=True`` (PyTorch's default batch-norm)
each batch-norm adds one scale per channel; ``summary()`` then prints both
counts.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from minimtl import functional as F
from minimtl import nn
from minimtl.autograd import Tensor
from minimtl.data.base import CLASS_NAMES, TASKS

TASK_CLASSES = OrderedDict((task, len(CLASS_NAMES[task])) for task in TASKS)
"""Classes per task, the size of each head's output: smile yes/no, gender, six age groups (Section 4.1).
Counted from ``minimtl.data.CLASS_NAMES``, the one home of the tasks and their classes."""

PAPER_PARAMETERS = {"A": 2_418_146, "B": 3_731_946, "C": 3_953_130}
"""Table 3 of the paper."""

PAPER_ACCURACY = {  # Table 2 (%), smile on GENKI-4K, gender and age on IMDB-WIKI
    "A": {"smile": 95.08, "gender": 91.16, "age": 65.40},
    "B": {"smile": 95.60, "gender": 91.28, "age": 67.81},
    "C": {"smile": 96.63, "gender": 93.20, "age": 68.92},
}

PAPER_FPS = {"A": 20.54, "B": 13.30, "C": 12.56}
"""Table 3's frames per second."""

SHIPPED_MODEL = Path(__file__).resolve().parent / "weights" / "bknet-c.npz"
"""The trained Config C that ships with the package (``scripts/export_model.py``; model card beside it)."""

BLOCKS = [(32, 2), (64, 2), (128, 2), (256, 3)]
"""(filters, convolutions) of the four trunk blocks."""


class ConvBlock(nn.Module):
    """``layers`` × (3×3 "same" conv → batch-norm (shift only by default) → ReLU), then 2×2 max-pool.

    ``(N, in_channels, H, W)`` → ``(N, out_channels, H/2, W/2)``.  ``self.layers``
    holds them in that order, ``Conv2d, BatchNorm2d(relu=True), Conv2d, ...,
    MaxPool2d``, and ``forward`` is ``self.layers(x)``, in training, in
    evaluation and under ``no_grad`` alike.  The ReLU is an option of the
    batch-norm layer rather than a module of its own so that training can run
    the two as one op (``minimtl.batch_norm``, "fused relu": a few passes over
    BKNet's largest activations instead of about 18). For inference,
    ``BKNet.fuse_for_inference`` folds each batch-norm into its convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, layers: int, init: str, generator: np.random.Generator,
                 batch_norm_scale: bool = False):
        super().__init__()
        modules: list[nn.Module] = []
        for index in range(layers):
            modules += [
                nn.Conv2d(in_channels if index == 0 else out_channels, out_channels, 3, padding=1, bias=False,
                          init=init, generator=generator),
                nn.BatchNorm2d(out_channels, scale=batch_norm_scale, relu=True),
            ]
        modules.append(nn.MaxPool2d(2))
        self.layers = nn.Sequential(*modules)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def fold_batch_norms(layers: nn.Sequential) -> nn.Sequential:
    """``layers`` with every ``Conv2d`` followed by a ``BatchNorm2d`` replaced by one ``Conv2d`` computing both.

    In evaluation mode a batch-norm is a fixed affine map, so it folds into the
    convolution before it (``F.fold_batch_norm``), and its ReLU, if it has one,
    runs inside the convolution (``Conv2d(relu=True)``): one op per layer
    instead of two or three, and no intermediate arrays.  The new layers hold
    copies; the other layers are kept as they are.  Valid in evaluation only.

    Args:
        layers: e.g. a ``ConvBlock``'s.

    Returns:
        A new ``Sequential``.
    """
    items, folded = list(layers), []
    index = 0
    while index < len(items):
        conv, norm = items[index], items[index + 1] if index + 1 < len(items) else None
        # a convolution with its own ReLU feeds the batch-norm a clipped output: no affine map folds that
        if not (isinstance(conv, nn.Conv2d) and not conv.relu and isinstance(norm, nn.BatchNorm2d)):
            folded.append(conv)
            index += 1
            continue
        weight, bias = F.fold_batch_norm(conv.weight.data, None if conv.bias is None else conv.bias.data,
                                         norm.running_mean, norm.running_var, norm.weight, norm.bias, norm.eps)
        layer = copy.deepcopy(conv)  # the same geometry, with the folded weights, a bias, and the ReLU
        layer.weight, layer.bias = nn.Parameter(weight, decay=True), nn.Parameter(bias)
        layer.relu = norm.relu
        folded.append(layer)
        index += 2
    return nn.Sequential(*folded)


def upgrade_state_dict(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A state dict of BKNet in today's keys, from one in today's or in those before ConvBlock lost its ReLU modules.

    Until then each block's ``Sequential`` was ``Conv2d, BatchNorm2d, ReLU``
    repeated, then ``MaxPool2d``: the i-th convolution and batch-norm were
    layers ``3i`` and ``3i + 1``; now (``Conv2d, BatchNorm2d(relu=True)``)
    they are ``2i`` and ``2i + 1``.  Checkpoints and model files written
    before (``checkpoint.npz`` of ``train.py --resume``, ``model.npz``) carry
    the old keys, recognised by ``block1.layers.4.running_mean`` (a batch-norm
    at index 4: the second one before, the max-pool now).  The heads' keys
    did not change.  ``BKNet.load_state_dict`` calls this, so old files load.

    Args:
        state: name → array.

    Returns:
        A new dict of the same arrays under today's names (the same names if it has them already).
    """
    if "block1.layers.4.running_mean" not in state:
        return dict(state)
    upgraded = {}
    for name, value in state.items():
        parts = name.split(".")
        if len(parts) > 3 and parts[0].startswith("block") and parts[1] == "layers":
            layer, role = divmod(int(parts[2]), 3)  # role 0 conv, 1 batch-norm (2, the ReLU, had no entries)
            parts[2] = str(2 * layer + role)
            name = ".".join(parts)
        upgraded[name] = value
    return upgraded


class TaskHead(nn.Module):
    """FC → BN → ReLU → dropout → FC → BN → ReLU → dropout → FC: ``(N, in_features)`` → logits ``(N, classes)``.

    ``forward`` is ``self.layers(x)``, whatever the mode.  The ReLUs stay
    modules of their own here: a head's activations are ``(N, 256)``, where
    running batch-norm and ReLU as one op saves nothing measurable, and the
    heads' layer indices (checkpoint keys) stay as they were.
    """

    def __init__(self, in_features: int, classes: int, init: str, generator: np.random.Generator,
                 dropout: float = 0.5, hidden: int = 256, batch_norm_scale: bool = False):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_features, hidden, bias=False, init=init, generator=generator),
            nn.BatchNorm1d(hidden, scale=batch_norm_scale), nn.ReLU(), nn.Dropout(dropout, generator=generator),
            nn.Linear(hidden, hidden, bias=False, init=init, generator=generator),
            nn.BatchNorm1d(hidden, scale=batch_norm_scale), nn.ReLU(), nn.Dropout(dropout, generator=generator),
            nn.Linear(hidden, classes, init=init, generator=generator),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class BKNet(nn.Module):
    """The paper's model in any of its three configurations.

    Args:
        config: ``"A"`` single task, ``"B"`` multi-task, ``"C"`` multi-task with first-block features concatenated.
        tasks: task names (keys of ``TASK_CLASSES``); Config A takes exactly one.
        init: ``"paper"`` (Gaussian, variance 0.01, Section 4.3) or ``"he"``.
        dropout: dropout probability in the heads (0.5 in the paper).
        batch_norm_scale: learn a batch-norm scale too (adds parameters beyond Table 3).
        standardize: give the trunk every face at mean 0 and standard deviation 1
            (``functional.standardize_images``) instead of as it comes, pixel values in [0, 1].
        seed: seeds the initial weights and the dropout masks.

    ``forward(x (N, 1, 48, 48))`` returns ``{task: logits (N, classes)}``.
    """

    def __init__(self, config: str = "C", tasks: Sequence[str] = TASKS, init: str = "paper",
                 dropout: float = 0.5, batch_norm_scale: bool = False, standardize: bool = False, seed: int = 0):
        super().__init__()
        config = config.upper()
        if config not in ("A", "B", "C"):
            raise ValueError(f"config must be 'A', 'B' or 'C', got {config!r}")
        tasks = list(tasks)
        unknown = [t for t in tasks if t not in TASK_CLASSES]
        if unknown or not tasks:
            raise ValueError(f"unknown tasks {unknown or tasks}; choose from {list(TASK_CLASSES)}")
        if config == "A" and len(tasks) != 1:
            raise ValueError(f"Config A (single BKNet) has one task, got {tasks}")
        self.config, self.tasks, self.seed = config, tasks, seed
        self.inference_only = False  # True for the copies fuse_for_inference makes
        self.options = dict(init=init, dropout=dropout, batch_norm_scale=batch_norm_scale, standardize=standardize)
        self.standardize = bool(standardize)
        generator = np.random.default_rng(seed)
        channels = 1
        blocks = []
        for filters, layers in BLOCKS:
            blocks.append(ConvBlock(channels, filters, layers, init, generator, batch_norm_scale))
            channels = filters
        self.block1, self.block2, self.block3, self.block4 = blocks
        features = 256 * 3 * 3 + (32 * 3 * 3 if config == "C" else 0)
        self.heads = nn.Module()
        for task in tasks:
            setattr(self.heads, task, TaskHead(features, TASK_CLASSES[task], init, generator, dropout,
                                               batch_norm_scale=batch_norm_scale))

    def features(self, x: Tensor) -> Tensor:
        """The shared trunk: ``(N, 1, 48, 48)`` → ``(N, 2304)``, or ``(N, 2592)`` in Config C."""
        F.check_image_batch(x, 1, "BKNet input")
        if x.shape[2:] != (48, 48):
            raise ValueError(f"BKNet expects 48×48 faces, got {x.shape[2]}×{x.shape[3]}")
        if self.standardize:
            x = F.standardize_images(x)
        first = self.block1(x)  # (N, 32, 24, 24)
        last = self.block4(self.block3(self.block2(first)))  # (N, 256, 3, 3)
        flat = F.flatten(last)
        if self.config == "C":
            return F.concat([flat, F.flatten(F.max_pool2d(first, 8))], axis=1)  # 2304 + 32·3·3
        return flat

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        shared = self.features(x)
        return {task: getattr(self.heads, task)(shared) for task in self.tasks}

    def fuse_for_inference(self) -> "BKNet":
        """A separate copy of the model for inference only, computing what the model computes in evaluation mode.

        In each conv block every convolution absorbs the batch-norm and ReLU
        after it (``fold_batch_norms``): one op per layer instead of two, and
        no intermediate arrays.  The heads are copied as they are (in
        evaluation mode: their activations are only 256 wide).  The copy is in
        evaluation mode and refuses ``train()``; it does not follow later
        changes to this model, so make one per evaluation or predictor
        (``minimtl.train.predict`` does, given a model that is not one).
        Equal to ``self.eval()``'s forward up to rounding
        (``tests/test_models.py``).

        Returns:
            The inference-only ``BKNet``.
        """
        fused = copy.deepcopy(self)
        for block in (fused.block1, fused.block2, fused.block3, fused.block4):
            block.layers = fold_batch_norms(block.layers)
        for parameter in fused.parameters():
            parameter.grad = None  # gradients of the training step, not the copy's
        fused.eval()
        fused.inference_only = True
        return fused

    def train(self, mode: bool = True) -> "BKNet":
        """Training (or with ``mode=False`` evaluation) mode; an inference-only copy refuses training."""
        if mode and self.inference_only:
            raise ValueError("this BKNet is an inference-only copy (fuse_for_inference): its batch-norms are folded "
                             "into its convolutions; train the model it was made from")
        return super().train(mode)

    def load_state_dict(self, state: Mapping[str, np.ndarray], strict: bool = True) -> None:
        """``Module.load_state_dict`` of ``upgrade_state_dict(state)``: files with the old block keys load too."""
        super().load_state_dict(upgrade_state_dict(state), strict)

    def reseed_dropout(self, seed: int | Sequence[int]) -> None:
        """Give every dropout layer a fresh generator from ``seed`` (the trainer does this each epoch,
        so a resumed run draws the same masks as an uninterrupted one)."""
        dropouts = [m for m in self.modules() if isinstance(m, nn.Dropout)]
        for layer, child in zip(dropouts, np.random.SeedSequence(seed).spawn(len(dropouts))):
            layer.generator = np.random.default_rng(child)

    def summary(self, input_shape: tuple[int, int, int] = (1, 48, 48)) -> str:
        """A table of every layer with parameters: output shape and parameter count, then the totals beside Table 3."""
        rows = []
        x = Tensor(np.zeros((2,) + tuple(input_shape), dtype=np.float32))
        was_training = self.training
        self.eval()

        def walk(module: nn.Module, name: str, value: Tensor) -> Tensor:
            if isinstance(module, nn.Sequential):
                for index, child in enumerate(module):
                    value = walk(child, f"{name}.{index}", value)
                return value
            if isinstance(module, (ConvBlock, TaskHead)):
                return walk(module.layers, name, value)
            out = module(value)
            count = sum(p.size for p in module.parameters())
            kind = type(module).__name__ + ("+ReLU" if getattr(module, "relu", False) else "")
            rows.append((name, kind, tuple(out.shape[1:]), count))
            return out

        from minimtl.autograd import no_grad

        with no_grad():
            first = walk(self.block1, "block1", x)
            last = walk(self.block4, "block4", walk(self.block3, "block3", walk(self.block2, "block2", first)))
            shared = F.flatten(last)
            if self.config == "C":
                pooled = F.flatten(F.max_pool2d(first, 8))
                rows.append(("fusion", "MaxPool2d(8)+Flatten", tuple(pooled.shape[1:]), 0))
                shared = F.concat([shared, pooled], axis=1)
                rows.append(("fusion", "Concat", tuple(shared.shape[1:]), 0))
            for task in self.tasks:
                walk(getattr(self.heads, task), f"heads.{task}", shared)
        self.train(was_training)
        width = max(len(r[0]) + len(r[1]) for r in rows) + 3
        lines = [f"BKNet Config {self.config} — tasks: {', '.join(self.tasks)}",
                 f"{'layer':<{width}} {'output shape':>16} {'parameters':>12}", "-" * (width + 30)]
        for name, kind, shape, count in rows:
            lines.append(f"{name + ' ' + kind:<{width}} {str(shape):>16} {count:>12,}")
        total = self.num_parameters()
        lines.append("-" * (width + 30))
        lines.append(f"total trainable parameters: {total:,}")
        paper_tasks = ["smile"] if self.config == "A" else list(TASK_CLASSES)
        if self.tasks == paper_tasks:  # Table 3 counts Config A with the smile head
            paper = PAPER_PARAMETERS[self.config]
            scales = sum(m.weight.size for m in self.modules()
                         if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.weight is not None)
            verdict = "matches" if total == paper else f"differs by {total - paper:+,}"
            lines.append(f"paper (Table 3): {paper:,} — {verdict}")
            if scales:
                lines.append(f"  {scales:,} of these are batch-norm scales; without them the count is {total - scales:,} "
                             "(Table 3 counts one additive term per unit and no scale)")
        return "\n".join(lines)
