"""Convert the MTCNN weights of the PyPI package ``mtcnn==1.0.0`` into ``minimtl/faces/weights/mtcnn.npz``.

Run it again when the upstream weights change::

    pip download mtcnn==1.0.0 --no-deps -d /tmp/mtcnn_pkg
    pip install joblib lz4          # only this script needs them, never minimtl itself
    python scripts/convert_mtcnn_weights.py /tmp/mtcnn_pkg/mtcnn-1.0.0-py3-none-any.whl

The wheel keeps each network as ``mtcnn/assets/weights/{pnet,rnet,onet}.lz4``:
a joblib pickle (lz4-compressed) of a list of float32 arrays in Keras
``get_weights()`` order.  This script gives every array a name
(``pnet/conv1/kernel``, ``onet/prelu5/alpha``, ...) and stores it *unchanged*,
still in the Keras layout (conv kernels ``(KH, KW, C_in, C_out)``, dense
kernels ``(in, out)``).  Rearranging into minimtl's layout happens in one
place, ``minimtl.faces.mtcnn.keras_to_minimtl``, so the tests can check that
rearrangement against a reference that reads the Keras layout directly.

The MIT licence of the wheel is copied to ``minimtl/faces/weights/LICENSE.mtcnn``.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from minimtl.files import atomic_write  # noqa: E402

# The Keras layers of each network, in get_weights() order, with the shape each array must have.
LAYOUT: dict[str, list[tuple[str, tuple[int, ...]]]] = {
    "pnet": [
        ("conv1/kernel", (3, 3, 3, 10)), ("conv1/bias", (10,)), ("prelu1/alpha", (1, 1, 10)),
        ("conv2/kernel", (3, 3, 10, 16)), ("conv2/bias", (16,)), ("prelu2/alpha", (1, 1, 16)),
        ("conv3/kernel", (3, 3, 16, 32)), ("conv3/bias", (32,)), ("prelu3/alpha", (1, 1, 32)),
        ("conv4_1/kernel", (1, 1, 32, 4)), ("conv4_1/bias", (4,)),
        ("conv4_2/kernel", (1, 1, 32, 2)), ("conv4_2/bias", (2,)),
    ],
    "rnet": [
        ("conv1/kernel", (3, 3, 3, 28)), ("conv1/bias", (28,)), ("prelu1/alpha", (1, 1, 28)),
        ("conv2/kernel", (3, 3, 28, 48)), ("conv2/bias", (48,)), ("prelu2/alpha", (1, 1, 48)),
        ("conv3/kernel", (2, 2, 48, 64)), ("conv3/bias", (64,)), ("prelu3/alpha", (1, 1, 64)),
        ("fc4/kernel", (576, 128)), ("fc4/bias", (128,)), ("prelu4/alpha", (128,)),
        ("fc5_1/kernel", (128, 4)), ("fc5_1/bias", (4,)),
        ("fc5_2/kernel", (128, 2)), ("fc5_2/bias", (2,)),
    ],
    "onet": [
        ("conv1/kernel", (3, 3, 3, 32)), ("conv1/bias", (32,)), ("prelu1/alpha", (1, 1, 32)),
        ("conv2/kernel", (3, 3, 32, 64)), ("conv2/bias", (64,)), ("prelu2/alpha", (1, 1, 64)),
        ("conv3/kernel", (3, 3, 64, 64)), ("conv3/bias", (64,)), ("prelu3/alpha", (1, 1, 64)),
        ("conv4/kernel", (2, 2, 64, 128)), ("conv4/bias", (128,)), ("prelu4/alpha", (1, 1, 128)),
        ("fc5/kernel", (1152, 256)), ("fc5/bias", (256,)), ("prelu5/alpha", (256,)),
        ("fc6_1/kernel", (256, 4)), ("fc6_1/bias", (4,)),
        ("fc6_2/kernel", (256, 10)), ("fc6_2/bias", (10,)),
        ("fc6_3/kernel", (256, 2)), ("fc6_3/bias", (2,)),
    ],
}


def read_weight_lists(wheel: Path) -> tuple[dict[str, list[np.ndarray]], bytes]:
    """Return ``{network: [arrays in get_weights() order]}`` and the licence text from the wheel."""
    import joblib  # imported here: only this conversion needs joblib and lz4

    lists = {}
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        for network in LAYOUT:
            member = f"mtcnn/assets/weights/{network}.lz4"
            if member not in names:
                raise SystemExit(f"{wheel} has no {member}: is it the mtcnn 1.0.0 wheel?")
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / f"{network}.lz4"  # joblib picks the decompressor from the suffix
                path.write_bytes(archive.read(member))
                lists[network] = joblib.load(path)
        licences = [n for n in names if n.endswith(".dist-info/LICENSE")]
        if not licences:
            raise SystemExit(f"{wheel} has no LICENSE file in its .dist-info")
        licence = archive.read(licences[0])
    return lists, licence


def name_arrays(lists: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """Pair each array with its layer name, checking count, shape and dtype against ``LAYOUT``."""
    named = {}
    for network, layout in LAYOUT.items():
        arrays = lists[network]
        if len(arrays) != len(layout):
            raise SystemExit(f"{network}: expected {len(layout)} arrays, found {len(arrays)}")
        for (name, shape), array in zip(layout, arrays):
            array = np.asarray(array)
            if array.shape != shape:
                raise SystemExit(f"{network}/{name}: expected shape {shape}, found {array.shape}")
            named[f"{network}/{name}"] = array.astype(np.float32)
    return named


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path, help="mtcnn-1.0.0-py3-none-any.whl from `pip download mtcnn==1.0.0 --no-deps`")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "minimtl/faces/weights",
                        help="folder for mtcnn.npz and LICENSE.mtcnn (default: the package's weights folder)")
    args = parser.parse_args(argv)

    lists, licence = read_weight_lists(args.wheel)
    named = name_arrays(lists)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "mtcnn.npz"
    with atomic_write(target) as handle:
        buffer = io.BytesIO()
        np.savez(buffer, **named)  # uncompressed: float weights barely compress, and loading stays instant
        handle.write(buffer.getvalue())
        os.fchmod(handle.fileno(), 0o644)  # the temporary is created 0600; the package file must be readable by all
    (args.out / "LICENSE.mtcnn").write_bytes(
        b"The weights in mtcnn.npz are converted from the PyPI package mtcnn==1.0.0\n"
        b"(https://github.com/ipazc/mtcnn), distributed under this licence:\n\n" + licence)
    total = sum(a.size for a in named.values())
    print(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB, {len(named)} arrays, {total} parameters)")


if __name__ == "__main__":
    main()
