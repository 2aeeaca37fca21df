"""Writing a file so that readers never see half of it: :func:`atomic_write`.

Every file minimtl writes for later reading (weights, crop caches, reports,
figures) goes through :func:`atomic_write`: the bytes go to a temporary file
in the same folder, which replaces ``path`` (:func:`os.replace`, atomic on one
file system) only once it is complete and closed.  An exception (or Ctrl-C)
inside the ``with`` block leaves the old ``path`` as it was and removes the
temporary, so an interrupted run leaves neither a half-written file nor litter.

Folders that appear whole (an extracted archive, a fetched data set) and the
resumable ``.part`` file of a download follow the same idea with their own
steps: see :mod:`minimtl.download` and :mod:`minimtl.data.fetch`.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_write"]


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it becomes ``path``.

    The temporary is named ``.<name>.<random>.tmp`` in ``path``'s folder (which
    must exist) and is created with permissions 0600, like :func:`tempfile.mkstemp`;
    call ``os.fchmod(stream.fileno(), ...)`` inside the block for others.

    Args:
        path: the file to write (replaced if it exists).
        mode: ``"wb"`` for bytes or ``"w"`` for UTF-8 text.

    Yields:
        The open stream; write to it inside the ``with`` block.

    Example::

        with atomic_write(run_dir / "report.json", "w") as stream:
            stream.write(json.dumps(report))
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as stream:
            yield stream
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
