"""Weight files: a state dict (name → array) saved as ``.npz`` and read back without pickle.

``save`` writes to a temporary file beside the target and renames it into
place, so an interrupted save never leaves a half-written file under the
real name.  ``load`` opens with ``allow_pickle=False``: a weight file can
hold numbers only, never code.
"""
from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import Mapping

import numpy as np

from minimtl.files import atomic_write


def save(state: Mapping[str, np.ndarray] | object, path: str | os.PathLike) -> Path:
    """Save a state dict (or anything with ``state_dict()``, such as a ``Module``) to ``path`` (.npz)."""
    if hasattr(state, "state_dict"):
        state = state.state_dict()
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"weight files are .npz, got {path.name!r}")
    arrays = {name: np.asarray(value) for name, value in state.items()}
    for name, array in arrays.items():
        if array.dtype == object:
            raise TypeError(f"state entry {name!r} is not a numeric array")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as file:
        np.savez(file, **arrays)
    return path


def load(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a state dict saved by ``save``; pass it to ``Module.load_state_dict``.

    Raises ``FileNotFoundError`` if there is no file, and ``ValueError`` naming the file for anything
    that is not a whole ``.npz`` of arrays: a truncated or damaged file, a pickle, a PyTorch ``.pt``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weight file at {path}")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array (.npy), not a named set of them")
        with archive:
            state = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"{path} is not a readable .npz weight file ({_what_it_is(path, error)}): "
                         f"it must be a whole .npz file written by minimtl: copy or write it again") from None
    foreign = [name for name, value in state.items() if not isinstance(value, np.ndarray)]
    if foreign:
        hint = " (a PyTorch .pt file?)" if any(name.endswith("data.pkl") for name in foreign) else ""
        raise ValueError(f"{path} is a zip archive but not a NumPy .npz weight file{hint}: its member "
                         f"{foreign[0]!r} is not an array; minimtl reads only its own .npz weight files")
    return state


def _what_it_is(path: Path, error: BaseException) -> str:
    """A short description of why ``path`` could not be read."""
    with open(path, "rb") as handle:
        start = handle.read(4)
    if not start:
        return "it is empty"
    if start[:1] == b"\x80":
        return "it is a Python pickle, e.g. an old PyTorch .pt file, which is never loaded: it could run code"
    if start[:2] == b"PK":
        return f"it is truncated or damaged: {' '.join(str(error).split())}"
    if start == b"\x93NUM":
        return " ".join(str(error).split())
    return f"it starts with {start!r}, not as a .npz file does"
