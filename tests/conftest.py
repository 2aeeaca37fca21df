"""Fixtures shared by the whole suite.

``shared_dir`` is the folder with the paper, data archives and detector models
(``../shared`` beside a checkout).  Set ``MINIMTL_SHARED`` to point elsewhere.
Tests that need it skip with the reason when it is absent.
"""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_path() -> Path:
    return Path(os.environ.get("MINIMTL_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = shared_path()
    if not path.is_dir():
        pytest.skip(f"shared folder not found at {path} (set MINIMTL_SHARED to the folder holding data/ and weights/)")
    return path


def require_shared_file(relative: str) -> Path:
    """Return ``shared_dir / relative`` or skip the calling test, naming what is missing."""
    path = shared_path() / relative
    if not path.exists():
        pytest.skip(f"{relative} not found under {shared_path()} (set MINIMTL_SHARED)")
    return path
