"""examples/show_crops.py (the paper's Figure 2) runs and writes a PNG of the expected layout."""
import importlib.util
from pathlib import Path

import cv2
import pytest

from conftest import REPO, require_shared_file

pytestmark = pytest.mark.faces


def test_show_crops_writes_figure_2(tmp_path):
    archive = require_shared_file("data/genki4k.tar")
    spec = importlib.util.spec_from_file_location("show_crops", REPO / "examples" / "show_crops.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = example.main(["--archive", str(archive), "--images", "1", "3", "--out", str(tmp_path / "figure2.png")])
    figure = cv2.imread(str(out))
    assert figure is not None and figure.shape[0] > figure.shape[1] > 200  # 3 rows × 2 columns: taller than wide
    assert [p.name for p in Path(tmp_path).iterdir()] == ["figure2.png"]  # no temporary file left behind
