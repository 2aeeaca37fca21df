"""Weight files: a state dict (name → array) saved as ``.npz`` and read back without pickle.

``save`` writes to a temporary file beside the target and renames it into
place, so an interrupted save never leaves a half-written file under the
real name.  ``load`` opens with ``allow_pickle=False``: a weight file can
hold numbers only, never code.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np


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
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def load(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a state dict saved by ``save``; pass it to ``Module.load_state_dict``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weight file at {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError) as error:
        raise ValueError(f"{path} is not a readable .npz weight file: {error}") from error
