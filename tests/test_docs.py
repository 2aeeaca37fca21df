"""The documentation builds without a warning and every example on its pages runs.

Two Sphinx builds into a temporary folder, as CI runs them from a clean clone:
``-W -b html`` (warnings are errors) and ``-b doctest`` (every ``>>>``
example on the pages, checked against the output printed there).  Then a few
checks that a reader's path through the built pages works: from Eq. (1) to
the loss function's highlighted source in one click, and every figure drawn.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docs, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def run_sphinx(builder: str, out: Path, *options: str) -> subprocess.CompletedProcess:
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "sphinx", "-b", builder, "-q", *options, str(DOCS), str(out)]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html")
    result = run_sphinx("html", out, "-W", "--keep-going")
    assert result.returncode == 0, f"the HTML build failed or warned:\n{result.stderr[-6000:]}"
    return out


def test_every_example_on_the_pages_runs(tmp_path):
    result = run_sphinx("doctest", tmp_path)
    report = (tmp_path / "output.txt").read_text() if (tmp_path / "output.txt").exists() else ""
    assert result.returncode == 0, f"doctest failures:\n{report[-6000:]}\n{result.stderr[-3000:]}"
    counts = re.search(r"(\d+) tests\s+(\d+) failures? in tests", report)
    assert counts, report[-2000:]
    assert int(counts.group(1)) >= 200 and counts.group(2) == "0", report[-2000:]


def test_equation_1_links_to_the_loss_source_in_one_click(html):
    page = (html / "equations" / "eq1_masked_cross_entropy.html").read_text()
    assert 'href="../_modules/minimtl/losses.html#masked_cross_entropy"' in page
    source = (html / "_modules" / "minimtl" / "losses.html").read_text()
    assert '<div class="viewcode-block" id="masked_cross_entropy">' in source  # the anchor the link lands on


@pytest.mark.parametrize("page, function", [
    ("equations/eq2_total_loss", "minimtl.losses.total_loss"),
    ("equations/eq3_accuracy", "minimtl.metrics.accuracy"),
    ("equations/eq4_learning_rate", "minimtl.optim.ExponentialDecay"),
    ("layers/convolution", "minimtl.conv.function.conv2d"),
    ("layers/pooling", "minimtl.pooling.max_pool2d"),
    ("layers/batch_norm", "minimtl.batch_norm.batch_norm"),
])
def test_each_equation_and_layer_page_links_to_its_code(html, page, function):
    text = (html / f"{page}.html").read_text()
    module, name = function.rsplit(".", 1)
    assert f'_modules/{module.replace(".", "/")}.html#{name}"' in text, f"{page} has no [source] link to {function}"


def test_the_convolution_page_shows_the_reference_before_any_fast_algorithm(html):
    """A student reads minimtl/conv/reference.py from the page before meeting Winograd tiles or shifted products."""
    text = (html / "layers" / "convolution.html").read_text()
    body = text[text.index('role="main"'):]
    reference = body.index('id="the-reference-in-full"')
    assert "reference_conv2d" in body[reference:body.index('id="the-fast-algorithms"')]  # the listing of reference.py
    assert reference < body.lower().index("winograd") and reference < body.lower().index("shifted products")


def test_figures_are_drawn_and_the_measurement_pages_listed(html):
    images = {p.name for p in html.rglob("*.png")}
    for page in ("convolution", "pooling", "autograd"):
        assert any(name.startswith(page) for name in images), f"no figure on layers/{page}: {sorted(images)}"
    assert any(name.startswith("architecture") for name in images)
    assert any(name.startswith("eq4_learning_rate") for name in images)
    index = (html / "index.html").read_text()
    for name in ("performance", "results"):
        if (DOCS / f"{name}.md").exists():
            assert f'href="{name}.html"' in index, f"docs/{name}.md exists but the index does not list it"
        else:
            assert f'href="{name}.html"' not in index
