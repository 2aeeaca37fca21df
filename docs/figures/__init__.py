"""Figures of the documentation, drawn at build time from the code they explain.

Each function draws one figure with matplotlib on the current figure and is
called from a ``.. plot::`` directive on a page.  The numbers in the figures
come from minimtl itself: the im2col diagram shows the output of
``minimtl.kernels.numpy_backend.im2col``, the architecture diagram walks a
``minimtl.models.BKNet``, the schedule is ``minimtl.optim.ExponentialDecay``,
the face figure runs ``minimtl.faces.mtcnn.MTCNN``.  Nothing is hand-drawn.

To look at one figure without building the docs::

    cd docs && python -c "import figures, matplotlib.pyplot as plt; figures.im2col_diagram(); plt.show()"
"""
from __future__ import annotations

import numpy as np

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, Rectangle

CHANNEL_COLOURS = ["#dbe9f6", "#fde3cf"]  # light blue, light orange: channel 0 and channel 1
HIGHLIGHT = "#d62728"


# -------------------------------------------------------------- convolution
def _grid(axis, values, x0, y0, cell, colour, highlight=(), label_format="{:g}", fontsize=9):
    """Draw ``values (rows, columns)`` as a table of cells with their numbers; ``highlight`` cells get a red frame."""
    rows, columns = values.shape
    for r in range(rows):
        for c in range(columns):
            face = colour(r, c) if callable(colour) else colour
            axis.add_patch(Rectangle((x0 + c * cell, y0 - (r + 1) * cell), cell, cell, facecolor=face,
                                     edgecolor="#555555", linewidth=0.6))
            axis.text(x0 + (c + 0.5) * cell, y0 - (r + 0.5) * cell, label_format.format(values[r, c]),
                      ha="center", va="center", fontsize=fontsize)
    for r, c in highlight:
        axis.add_patch(Rectangle((x0 + c * cell, y0 - (r + 1) * cell), cell, cell, fill=False,
                                 edgecolor=HIGHLIGHT, linewidth=2.2))


def im2col_diagram(column: int = 1) -> None:
    """The real ``im2col`` of a 2-channel 4×4 image with a 3×3 kernel: every receptive field becomes one column.

    The input holds 0..31 so each number names its pixel.  Column ``column`` of
    ``cols`` and the pixels it came from are framed in red.
    """
    from minimtl.kernels import numpy_backend

    x = np.arange(2 * 4 * 4, dtype=np.float64).reshape(1, 2, 4, 4)
    kernel, stride, padding = (3, 3), (1, 1), ((0, 0), (0, 0))
    cols = numpy_backend.im2col(x, kernel, stride, padding)  # (2·3·3, 1·2·2) = (18, 4)
    ow = 2
    out_row, out_col = divmod(column, ow)

    figure = plt.gcf()
    figure.set_size_inches(11, 6.2)
    axis = figure.add_axes([0, 0, 1, 1])
    axis.set_xlim(0, 22)
    axis.set_ylim(-12.6, 1.4)
    axis.set_aspect("equal")
    axis.axis("off")

    cell = 0.62
    for channel in range(2):
        y0 = -0.2 - channel * 3.4
        frame = [(out_row + i, out_col + j) for i in range(3) for j in range(3)]
        _grid(axis, x[0, channel], 0.4, y0, cell, CHANNEL_COLOURS[channel], frame)
        axis.text(0.4, y0 + 0.25, f"x[0, {channel}]  (channel {channel}, 4×4)", fontsize=10, va="bottom")
    axis.text(0.4, -7.4, f"red: the 3×3 window of output\npixel (oh, ow) = ({out_row}, {out_col}),\n"
              "in both channels", fontsize=10, va="top", color=HIGHLIGHT)

    # cols: 18 rows (c, i, j), 4 columns (n, oh, ow)
    x0, y0, cell_cols = 9.0, 0.0, 0.62
    _grid(axis, cols, x0, y0, cell_cols, lambda r, c: CHANNEL_COLOURS[r // 9],
          [(r, column) for r in range(18)])
    axis.text(x0 + 2 * cell_cols, 0.55, "cols = im2col(x)\nshape (C·KH·KW, N·OH·OW) = (18, 4)",
              ha="center", fontsize=10, va="bottom")
    for c in range(4):
        r, q = divmod(c, ow)
        axis.text(x0 + (c + 0.5) * cell_cols, y0 - 18 * cell_cols - 0.12, f"({r},{q})", ha="center", va="top",
                  fontsize=8, rotation=90)
    axis.text(x0 + 2 * cell_cols, y0 - 18 * cell_cols - 0.85, "output pixel (oh, ow)", ha="center", va="top", fontsize=9)
    for r in range(18):
        c, rest = divmod(r, 9)
        i, j = divmod(rest, 3)
        axis.text(x0 - 0.1, y0 - (r + 0.5) * cell_cols, f"c={c} i={i} j={j}", ha="right", va="center", fontsize=7.5)

    axis.add_patch(FancyArrowPatch((3.3, -1.5), (6.8, -1.5), arrowstyle="-|>", mutation_scale=18, color="#333333"))
    axis.text(5.05, -1.3, "im2col", ha="center", va="bottom", fontsize=11)

    # the matrix product
    x1 = 14.3
    axis.text(x1, -2.0, "weight.reshape(F, 18)  @  cols", fontsize=11, va="center")
    axis.text(x1, -2.8, "(F, 18) @ (18, 4)  =  (F, 4)", fontsize=11, va="center", family="monospace")
    axis.text(x1, -4.2, "one row per filter,\none column per output pixel:\nreshape to (N, F, OH, OW)",
              fontsize=10, va="top")
    axis.text(x1, -6.6, "row c·KH·KW + i·KW + j  holds\nchannel c at kernel offset (i, j);\n"
              "column n·OH·OW + oh·OW + ow\nis output pixel (oh, ow) of image n", fontsize=9.5, va="top",
              family="monospace")


def col2im_overlap_diagram() -> None:
    """``col2im(im2col(ones))``: how many windows read each pixel — the adjoint adds every copy back."""
    from minimtl.kernels import numpy_backend

    figure = plt.gcf()
    figure.set_size_inches(9, 3.4)
    settings = [((3, 3), (1, 1), ((1, 1), (1, 1)), "3×3, stride 1, padding 1"),
                ((3, 3), (2, 2), ((0, 0), (0, 0)), "3×3, stride 2, no padding"),
                ((2, 2), (2, 2), ((0, 0), (0, 0)), "2×2, stride 2")]
    shape = (1, 1, 7, 7)
    for index, (kernel, stride, padding, title) in enumerate(settings, start=1):
        cols = numpy_backend.im2col(np.ones(shape), kernel, stride, padding)
        counts = numpy_backend.col2im(np.ones_like(cols), shape, kernel, stride, padding)[0, 0]
        axis = figure.add_subplot(1, 3, index)
        axis.imshow(counts, cmap="Blues", vmin=0, vmax=9)
        for (r, c), value in np.ndenumerate(counts):
            axis.text(c, r, f"{value:g}", ha="center", va="center", fontsize=9,
                      color="white" if value > 5 else "black")
        axis.set_title(title, fontsize=10)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle("col2im(ones) on a 7×7 image: the number of windows that read each pixel", fontsize=11)


# ------------------------------------------------------------------ pooling
def pooling_diagram() -> None:
    """Windows and winners of 2×2 stride-2 max-pooling on a 5×5 input: floor mode, ceil mode, TensorFlow "same"."""
    from minimtl import functional as F
    from minimtl.autograd import Tensor

    rng = np.random.default_rng(3)
    x = rng.integers(0, 10, (5, 5)).astype(np.float64)
    figure = plt.gcf()
    figure.set_size_inches(10.5, 4.0)
    cases = [("floor (default)", dict(ceil_mode=False)), ("ceil_mode=True", dict(ceil_mode=True)),
             ('padding="same"', dict(padding="same"))]
    colours = plt.cm.tab10.colors
    for index, (title, options) in enumerate(cases, start=1):
        tensor = Tensor(x[None, None], requires_grad=True)
        out = F.max_pool2d(tensor, 2, 2, **options)
        out.backward(np.ones(out.shape))
        winners = tensor.grad[0, 0]
        axis = figure.add_subplot(1, 3, index)
        axis.set_xlim(-0.6, 6.5)
        axis.set_ylim(6.5, -0.6)
        axis.set_aspect("equal")
        for (r, c), value in np.ndenumerate(x):
            axis.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, facecolor="#f3f3f3" if winners[r, c] == 0 else "#ffd966",
                                     edgecolor="#999999"))
            axis.text(c, r, f"{value:g}", ha="center", va="center", fontsize=10)
        oh, ow = out.shape[2:]
        for r in range(oh):
            for c in range(ow):
                colour = colours[(r * ow + c) % len(colours)]
                axis.add_patch(Rectangle((2 * c - 0.45, 2 * r - 0.45), 1.9, 1.9, fill=False, edgecolor=colour, linewidth=2))
        axis.set_title(f"{title}\noutput {oh}×{ow}: " + " ".join(f"{v:g}" for v in out.data.ravel()), fontsize=9.5)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle("2×2 max-pooling, stride 2, on 5×5: coloured frames are windows, yellow cells won a window "
                    "(they receive its gradient)", fontsize=10)


# ------------------------------------------------------------- equation (4)
def learning_rate_schedule(steps: int = 20000) -> None:
    """Eq. (4) with Section 4.3's values, smooth and staircase, from ``minimtl.optim.ExponentialDecay``."""
    from minimtl.optim import ExponentialDecay

    smooth, staircase = ExponentialDecay(), ExponentialDecay(staircase=True)
    step = np.arange(steps + 1)
    figure = plt.gcf()
    figure.set_size_inches(8, 3.6)
    axis = figure.add_subplot(1, 1, 1)
    axis.plot(step, [smooth(s) for s in step], label="staircase=False (Eq. 4 as printed)")
    axis.plot(step, [staircase(s) for s in step], label="staircase=True", linestyle="--")
    steps_per_epoch = (3000 + 150000) // 128
    for epoch in range(1, steps // steps_per_epoch + 1):
        axis.axvline(epoch * steps_per_epoch, color="#cccccc", linewidth=0.6, zorder=0)
    axis.set_xlabel(f"step p (grey lines: epochs of the paper's 153,000 training faces at batch 128 = {steps_per_epoch} steps)",
                    fontsize=9)
    axis.set_ylabel("learning rate")
    axis.set_title("ExponentialDecay(initial_lr=0.01, decay_rate=0.8, decay_steps=2000)", fontsize=10)
    axis.legend()
    axis.set_xlim(0, steps)
    axis.set_ylim(0, 0.0105)


# ---------------------------------------------------------------- autograd
def autograd_graph() -> None:
    """The graph recorded for ``loss = sum((a·b + a)²)`` and the order ``backward`` visits it."""
    from minimtl.autograd import Tensor, _topological_order

    a = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    b = Tensor(np.array([3.0, -1.0]), requires_grad=True)
    product = a * b
    total = product + a
    square = total * total
    loss = square.sum()
    names = {id(a): "a (leaf)", id(b): "b (leaf)", id(product): "a·b", id(total): "a·b + a",
             id(square): "(a·b + a)²", id(loss): "loss = sum(...)"}
    order = _topological_order(loss)
    position = {id(a): (0.5, 0), id(b): (2.5, 0), id(product): (2.5, 1.2), id(total): (1.5, 2.4),
                id(square): (1.5, 3.6), id(loss): (1.5, 4.8)}
    figure = plt.gcf()
    figure.set_size_inches(7.0, 4.6)
    axis = figure.add_axes([0, 0, 1, 1])
    axis.set_xlim(-0.3, 6.6)
    axis.set_ylim(-0.7, 5.5)
    axis.axis("off")
    for tensor in order:
        if tensor._node is None:
            continue
        for parent in tensor._node.inputs:
            start, end = position[id(parent)], position[id(tensor)]
            offset = 0.18 if parent is tensor._node.inputs[0] and len(set(map(id, tensor._node.inputs))) == 1 else 0
            axis.add_patch(FancyArrowPatch((start[0] - offset, start[1] + 0.25), (end[0] - offset, end[1] - 0.25),
                                           arrowstyle="-|>", mutation_scale=14, color="#666666",
                                           connectionstyle=f"arc3,rad={0.25 if offset else 0}"))
    for rank, tensor in enumerate(order, start=1):
        x, y = position[id(tensor)]
        label = names[id(tensor)]
        if tensor._node is not None:
            label += f"\n{tensor._node.function.__name__}"
        axis.text(x, y, label, ha="center", va="center", fontsize=9,
                  bbox=dict(boxstyle="round", facecolor="#dbe9f6" if tensor._node else "#fde3cf", edgecolor="#555555"))
        axis.text(x + 0.75, y + 0.2, str(rank), color=HIGHLIGHT, fontsize=11, fontweight="bold")
    axis.text(3.6, 3.2, "arrows: forward (input → result)\n"
              "red numbers: the order in which\nTensor.backward() visits the tensors\n"
              "(_topological_order: every tensor\nbefore the tensors it was made from)\n\n"
              "a is used twice (a·b and + a):\nits two gradients are added\nbefore it is visited",
              fontsize=9, va="top")


# ------------------------------------------------------------ architecture
def _layer_rows(model, config):
    """``[(label, shape, parameters)]`` along the trunk of ``model``, from a real forward pass."""
    from minimtl import functional as F
    from minimtl import nn
    from minimtl.autograd import Tensor, no_grad

    rows = []
    x = Tensor(np.zeros((2, 1, 48, 48), dtype=np.float32))
    model.eval()
    with no_grad():
        value = x
        outputs = {}
        for index in range(1, 5):
            block = getattr(model, f"block{index}")
            convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
            value = block(value)
            outputs[index] = value
            count = sum(p.size for p in block.parameters())
            text = " → ".join(str(c.out_channels) for c in convs)
            rows.append((f"block {index}: {len(convs)} × conv 3×3 ({text}) + BN + ReLU, max-pool 2×2",
                         tuple(value.shape[1:]), count))
        flat = F.flatten(value)
        fused = None
        if config == "C":
            fused = F.flatten(F.max_pool2d(outputs[1], 8))
    return rows, tuple(flat.shape[1:]), (tuple(fused.shape[1:]) if fused is not None else None)


def architecture_diagram(config: str = "C") -> None:
    """Figure 3 drawn from ``minimtl.models.BKNet(config)``: shapes from a forward pass, parameters counted."""
    from minimtl import nn
    from minimtl.data import TASKS
    from minimtl.models import BKNet, PAPER_PARAMETERS

    tasks = ["smile"] if config == "A" else list(TASKS)
    model = BKNet(config, tasks)
    rows, flat_shape, fused_shape = _layer_rows(model, config)
    first_convs = [m for m in model.block1.modules() if isinstance(m, nn.Conv2d)]

    figure = plt.gcf()
    figure.set_size_inches(12, 7.6)
    axis = figure.add_axes([0, 0, 1, 1])
    axis.set_xlim(0, 24)
    axis.set_ylim(-15.2, 1.0)
    axis.axis("off")

    def box(x, y, w, h, text, colour, fontsize=9):
        axis.add_patch(Rectangle((x, y - h), w, h, facecolor=colour, edgecolor="#444444", linewidth=0.8))
        axis.text(x + w / 2, y - h / 2, text, ha="center", va="center", fontsize=fontsize)

    def arrow(start, end, colour="#444444"):
        axis.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=13, color=colour, shrinkA=0, shrinkB=0))

    x0, width, height, gap = 0.3, 10.2, 1.05, 0.55
    centre = x0 + width / 2
    box(x0, 0.7, width, 0.8, "input face: 1 × 48 × 48 (grayscale, scaled to [0, 1])", "#eeeeee")
    y = 0.7 - 0.8 - gap
    arrow((centre, 0.7 - 0.8), (centre, y))
    block_tops = []
    channels = first_convs[0].in_channels
    for label, shape, count in rows:
        label = label.replace("(", f"({channels} → ", 1)
        channels = shape[0]
        box(x0, y, width, height, f"{label}\noutput {shape[0]} × {shape[1]} × {shape[2]}  ·  {count:,} parameters",
            "#dbe9f6", 8.8)
        block_tops.append(y)
        arrow((centre, y - height), (centre, y - height - gap))
        y -= height + gap
    box(x0, y, width, 0.8, f"flatten: {flat_shape[0]:,} features", "#eeeeee")
    shared_top, shared_bottom = y, y - 0.8
    if fused_shape is not None:
        fx, fw = x0 + width + 0.8, 4.3
        ftop = block_tops[1] - 0.2
        box(fx, ftop, fw, 1.6, "Config C fusion:\nmax-pool 8×8 of block 1's\n32 × 24 × 24 → 32 × 3 × 3\n"
                               f"= {fused_shape[0]} features",
            "#fde3cf", 8.8)
        arrow((x0 + width, block_tops[0] - height / 2), (fx + fw / 2, ftop))
        concat_top = shared_bottom - gap
        arrow((centre, shared_bottom), (centre, concat_top))
        arrow((fx + fw / 2, ftop - 1.6), (x0 + width - 0.6, concat_top))
        box(x0, concat_top, width, 0.8, f"concatenate: {flat_shape[0]:,} + {fused_shape[0]} = "
            f"{flat_shape[0] + fused_shape[0]:,} features", "#fde3cf")
        shared_top, shared_bottom = concat_top, concat_top - 0.8
    features = flat_shape[0] + (fused_shape[0] if fused_shape else 0)
    shared_middle = (shared_top + shared_bottom) / 2

    # one row per task head, right of the shared features
    hx, head_box, head_gap, row_height, row_gap = 12.2, 3.0, 0.45, 1.55, 0.45
    count_rows = len(model.tasks)
    first_top = shared_middle + (count_rows * row_height + (count_rows - 1) * row_gap) / 2
    for index, task in enumerate(model.tasks):
        head = getattr(model.heads, task)
        linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
        top = first_top - index * (row_height + row_gap)
        arrow((x0 + width, shared_middle), (hx, top - row_height / 2), "#6a9955")
        sizes = [features] + [m.out_features for m in linears]
        for layer_index, linear in enumerate(linears):
            x = hx + layer_index * (head_box + head_gap)
            extra = "\n+ BN + ReLU\n+ dropout 0.5" if layer_index < 2 else f"\n{task} logits"
            box(x, top, head_box, row_height, f"FC {sizes[layer_index]:,} → {linear.out_features}{extra}", "#eaf4e4", 8.4)
            if layer_index < 2:
                arrow((x + head_box, top - row_height / 2), (x + head_box + head_gap, top - row_height / 2))
        count = sum(p.size for p in head.parameters())
        axis.text(hx, top + 0.08, f"{task} head: {count:,} parameters", fontsize=9, va="bottom", fontweight="bold",
                  color="#38761d")
    total = model.num_parameters()
    paper = PAPER_PARAMETERS[config]
    bottom = min(shared_bottom, first_top - count_rows * (row_height + row_gap)) - 0.6
    axis.set_ylim(bottom - 0.6, 1.0)
    figure.set_size_inches(12, 0.5 * (1.6 - bottom))
    axis.text(x0, bottom, f"BKNet Config {config}, tasks {', '.join(model.tasks)}: {total:,} trainable parameters "
              f"(Table 3: {paper:,})", fontsize=11, fontweight="bold")


# ------------------------------------------------------------------- faces
def mtcnn_cascade() -> None:
    """MTCNN's three stages on a photo that ships with matplotlib (Grace Hopper, public domain), then the 48×48 crop."""
    import cv2
    from matplotlib import cbook

    from minimtl.faces import FaceCropper
    from minimtl.faces.mtcnn import normalize

    image_bgr = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    cropper = FaceCropper(detector="mtcnn")
    detector = cropper.detector
    rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
    scaled = normalize(rgb)
    proposals = detector.propose(scaled)
    refined = detector.refine(scaled, proposals)
    details = cropper.crop_details(image_bgr)
    final = details.detections

    figure = plt.gcf()
    figure.set_size_inches(12, 3.6)
    panels = [(f"1. P-Net: {len(proposals)} candidate boxes", proposals[:, :4], "#ff7f0e"),
              (f"2. R-Net: {len(refined)} boxes kept", refined[:, :4], "#1f77b4"),
              (f"3. O-Net: {len(final)} face, score {final.scores[0]:.3f}", final.boxes, "#2ca02c")]
    for index, (title, boxes, colour) in enumerate(panels, start=1):
        axis = figure.add_subplot(1, 4, index)
        axis.imshow(rgb)
        for x1, y1, x2, y2 in boxes:
            axis.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour,
                                     linewidth=0.8 if index == 1 else 1.8))
        if index == 3 and final.landmarks is not None:
            axis.scatter(*final.landmarks[0].T, s=14, c="red")
        axis.set_title(title, fontsize=9.5)
        axis.set_xticks([])
        axis.set_yticks([])
    axis = figure.add_subplot(1, 4, 4)
    axis.imshow(details.crop, cmap="gray", vmin=0, vmax=255)
    axis.set_title(f"4. eyes levelled ({details.angle:+.1f}°),\ngrayscale, {cropper.size}×{cropper.size}", fontsize=9.5)
    axis.set_xticks([])
    axis.set_yticks([])


def framing_across_datasets(per_dataset: int = 6) -> None:
    """Faces of GENKI-4K, WIKI and UTKFace as they come (top of each pair of rows) and after the one framing
    (bottom), with the template's eye positions marked.  Drawn from ``$MINIMTL_SHARED/data`` at build time: the
    images may not be copied into the repository, so where the archives are absent the figure says so."""
    import os
    from pathlib import Path

    import cv2

    from minimtl.data import FileSource
    from minimtl.data.base import prepare_images
    from minimtl.faces import FaceCropper
    from minimtl.faces.crop import FACE_TEMPLATE

    shared = Path(os.environ.get("MINIMTL_SHARED", Path(__file__).resolve().parents[2].parent / "shared")) / "data"
    sources = [("GENKI-4K photo", "genki4k.tar"), ("WIKI 64×64 crop", "wiki_crop_64.tar.gz"),
               ("UTKFace chip", "UTKFace.tar.gz")]
    figure = plt.gcf()
    figure.set_size_inches(1.5 * per_dataset, 3.1 * len(sources))
    if not all((shared / archive).is_file() for _, archive in sources):
        axis = figure.add_axes([0, 0, 1, 1])
        axis.axis("off")
        axis.text(0.5, 0.5, f"The data archives are not under {shared}:\nset MINIMTL_SHARED to draw this figure.",
                  ha="center", va="center", fontsize=12)
        return
    cropper = FaceCropper()
    eyes = (FACE_TEMPLATE[:2] / (1 + 2 * cropper.margin) + 0.5) * cropper.size
    for row, (title, archive) in enumerate(sources):
        source = FileSource(shared / archive)
        names = [name for name in source.names() if name.lower().endswith(".jpg")]
        chosen = sorted(names[i] for i in np.random.default_rng(3).choice(len(names), per_dataset, replace=False))
        photos = dict(source.iterate(chosen))
        crops = prepare_images(source, chosen, cropper, dataset_name=title, cache_dir=None, progress=False,
                               workers=1).images
        for column, name in enumerate(chosen):
            photo = cv2.imdecode(np.frombuffer(photos[name], np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
            axis = figure.add_subplot(2 * len(sources), per_dataset, 2 * row * per_dataset + column + 1)
            axis.imshow(photo)
            axis.set_title(f"{title}\n{photo.shape[1]}×{photo.shape[0]}" if column == 0 else
                           f"{photo.shape[1]}×{photo.shape[0]}", fontsize=8)
            axis.axis("off")
            axis = figure.add_subplot(2 * len(sources), per_dataset, (2 * row + 1) * per_dataset + column + 1)
            axis.imshow(crops[column], cmap="gray", vmin=0, vmax=255)
            axis.scatter(eyes[:, 0], eyes[:, 1], s=10, c="red", marker="+", linewidths=0.8)
            axis.axis("off")
    figure.subplots_adjust(left=0.01, right=0.99, top=0.95, bottom=0.01, hspace=0.35, wspace=0.05)
