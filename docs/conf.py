"""Sphinx configuration of the minimtl documentation.

Build the pages with ``python -m sphinx -W -b html docs docs/_build/html``
(warnings are errors) and run every code example on them with
``python -m sphinx -b doctest docs docs/_build/doctest``; ``tests/test_docs.py``
does both.

Figures are drawn at build time by ``matplotlib.sphinxext.plot_directive``
from the functions in ``docs/figures/`` (which read the real model definition
and the real im2col output), so no image in the documentation is of unknown origin.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path.insert(0, str(REPO))  # minimtl itself, when it is not installed
sys.path.insert(0, str(DOCS))  # the figure scripts: ``import figures``

os.environ.setdefault("MPLBACKEND", "Agg")

project = "minimtl"
author = "the minimtl developers"
copyright = "2026, the minimtl developers (MIT licence)"
release = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # the source's docstrings use Google ("Args:") and NumPy ("Parameters") sections
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # serves MathJax from the build itself, so equations render without a network
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",  # a [source] link beside every documented function: from an equation to its code in one click
    "myst_parser",  # performance.md and results.md
    "matplotlib.sphinxext.plot_directive",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "figures", "Thumbs.db", ".DS_Store"]
# The performance and results pages are written by other developers; the
# index lists those that exist (see ``list_measurement_pages`` below), so the
# site builds, without warnings, before and after they land.
MEASUREMENT_PAGES = ["performance", "results"]
MEASUREMENT_MARKER = ".. Measurements: conf.py puts here"

myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

# ------------------------------------------------------------------ autodoc
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False  # minimtl.data writes "name: description" under NumPy headings; see numpy_headings_as_rubrics
napoleon_use_rtype = False

# ------------------------------------------------------------------ doctest
# Every example on the pages runs in the tests (``-b doctest``), from a fixed seed.
# Detector model files for the examples that need them come from MINIMTL_WEIGHTS
# or, failing that, from the shared folder beside the checkout; an example whose
# files are absent is skipped (``:skipif:``), never downloaded during a build.
doctest_global_setup = f"""
import os
from pathlib import Path
import numpy as np
np.set_printoptions(precision=4, suppress=True)
_shared_weights = Path(os.environ.get("MINIMTL_SHARED", {str(REPO.parent / "shared")!r})) / "weights"
if "MINIMTL_WEIGHTS" not in os.environ and _shared_weights.is_dir():
    os.environ["MINIMTL_WEIGHTS"] = str(_shared_weights)
yunet_available = (Path(os.environ.get("MINIMTL_WEIGHTS", "/nonexistent")) / "face_detection_yunet_2023mar.onnx").is_file()
"""

# ----------------------------------------------------------- plot directive
plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
plot_rcparams = {"font.size": 10, "savefig.bbox": "tight"}
plot_apply_rcparams = True

# -------------------------------------------------------------------- HTML
html_theme = "alabaster"
html_static_path = ["_static"]
html_css_files = ["minimtl.css"]
html_theme_options = {
    "description": "A deep-learning framework in NumPy that reproduces a multi-task face-attribute CNN",
    "page_width": "1180px",
    "sidebar_width": "240px",
    "fixed_sidebar": False,
}
html_title = "minimtl"


def list_measurement_pages(app, docname: str, source: list[str]) -> None:
    """Replace the marker comment in ``index.rst`` by a toctree of the measurement pages present."""
    if docname != "index":
        return
    present = [name for name in MEASUREMENT_PAGES if any((DOCS / f"{name}{suffix}").exists() for suffix in source_suffix)]
    lines = []
    for line in source[0].splitlines():
        if line.startswith(MEASUREMENT_MARKER):
            if present:
                lines += [".. toctree::", "   :maxdepth: 1", "   :caption: Measurements", ""]
                lines += [f"   {name}" for name in present]
                lines.append("")
            continue
        lines.append(line)
    source[0] = "\n".join(lines) + "\n"


def indented_blocks_as_literal(app, what, name, obj, options, lines: list[str]) -> None:
    """Module docstrings introduce aligned tables ("a tour, in reading order:") with a colon and an
    indented block; show those blocks as literal text, as a reader of the source sees them."""
    if what != "module":
        return
    for index, line in enumerate(lines[:-2]):
        following = next((later for later in lines[index + 1:] if later.strip()), "")
        indent = len(line) - len(line.lstrip())
        if (line.rstrip().endswith(":") and not line.rstrip().endswith("::") and lines[index + 1].strip() == ""
                and len(following) - len(following.lstrip()) > indent and not line.lstrip().startswith((":", "..", "*", "-"))):
            lines[index] = line.rstrip() + ":"


def numpy_headings_as_rubrics(app, what, name, obj, options, lines: list[str]) -> None:
    """A "Parameters" heading underlined with dashes, inside a docstring, is a section title docutils
    cannot place; show it as a rubric and keep the entries below it as they are written."""
    index = 0
    while index < len(lines) - 1:
        title, underline = lines[index].strip(), lines[index + 1].strip()
        if title and underline and set(underline) == {"-"} and len(underline) == len(title):
            indent = lines[index][: len(lines[index]) - len(lines[index].lstrip())]
            lines[index:index + 2] = [f"{indent}.. rubric:: {title}", ""]
        index += 1


FIELD = re.compile(r"^:[A-Za-z_][\w ]*:(\s|$)")  # ":param x:", ":returns:" — not a role such as ":func:`f`"


def end_field_lists(app, what, name, obj, options, lines: list[str]) -> None:
    """Napoleon leaves no blank line between a NumPy-style "Parameters" field list and the paragraph
    after it (a docutils warning); add it."""
    in_fields = False
    index = 0
    while index < len(lines):
        line = lines[index]
        if FIELD.match(line):
            in_fields = True
        elif not line.strip():
            in_fields = False
        elif in_fields and not line[0].isspace():
            lines.insert(index, "")
            in_fields = False
        index += 1


def setup(app):
    app.connect("source-read", list_measurement_pages)
    app.connect("autodoc-process-docstring", indented_blocks_as_literal, priority=400)
    app.connect("autodoc-process-docstring", numpy_headings_as_rubrics, priority=400)
    app.connect("autodoc-process-docstring", end_field_lists, priority=600)  # after napoleon (500)
