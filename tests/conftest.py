"""Fixtures shared by the whole suite, and the hypothesis profiles.

``shared_dir`` is the folder with the paper, data archives and detector models
(``../shared`` beside a checkout).  Set ``MINIMTL_SHARED`` to point elsewhere.
Tests that need it skip with the reason when it is absent.

Hypothesis runs with one of two profiles:

* ``ci`` when the environment variable ``CI`` is set to anything but ``""``,
  ``0``, ``false`` or ``no`` (``.ci/run`` sets ``CI=true``):
  deterministic — the examples come from a hash of each test, not a random
  seed, and no example database is read or written — so a run on a fresh
  clone tests exactly what the last run tested.
* ``dev`` otherwise: random examples, a new set every run, so that local runs
  keep exploring.  A failure prints the seed to repeat it with
  (``--hypothesis-seed``).

``--hypothesis-profile=ci`` (or ``dev``) on the pytest command line overrides
the choice.  Tests that set ``max_examples`` themselves keep their own.
"""
import os
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]

# Both built on hypothesis's "default" profile: hypothesis loads its own "ci" profile whenever CI is in the
# environment at all (even CI=false), and "dev" must not inherit that.
settings.register_profile("ci", settings.get_profile("default"), derandomize=True, database=None, max_examples=50,
                          deadline=None, print_blob=True)
settings.register_profile("dev", settings.get_profile("default"), max_examples=50, deadline=None)
settings.load_profile("ci" if os.environ.get("CI", "").lower() not in ("", "0", "false", "no") else "dev")


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
