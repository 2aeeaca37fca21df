"""The benchmark scripts still run: tiny batches, one round, minimtl engines only (no timing is checked).

The figures they print are recorded in docs/performance.md; these tests only
keep the scripts from rotting as the code under them changes.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from minimtl import conv
from minimtl import parallel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

pytestmark = pytest.mark.kernels


def test_bench_conv_methods_prints_every_layer_and_restores_the_method(capsys):
    import bench_conv_methods

    bench_conv_methods.main(["--batch", "2", "--rounds", "1"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "/×" in line]  # one per layer, and the total
    assert len(rows) == len(bench_conv_methods.BKNET_LAYERS) + 1
    assert all(line.count("/×") == len(bench_conv_methods.METHODS) - 1 for line in rows)  # ×forward/×both, per method
    assert "all nine" in rows[-1] and rows[0].rstrip().endswith("im2col")  # the first layer: one channel
    assert conv.current_settings() == conv.Settings()  # the defaults are back


def test_profile_groups_a_serial_step(capsys):
    import profile_training_step

    import bench_training_step

    threads, chunk_workers = parallel.threads(), bench_training_step.CHUNK_WORKERS
    try:
        profile_training_step.main(["--batch", "4", "--steps", "1", "--top", "3"])
        profile_training_step.main(["--batch", "4", "--steps", "1", "--top", "0", "--one-core"])
    finally:
        parallel.set_threads(threads)
    out = capsys.readouterr().out
    assert "images/s" in out and "GEMM in the conv chunks" in out and "batch-norm" in out
    assert bench_training_step.CHUNK_WORKERS == chunk_workers  # --one-core gives the later benchmarks their workers back


def test_bench_training_step_compares_the_minimtl_engines(capsys):
    import bench_training_step

    bench_training_step.main(["--batch", "4", "--rounds", "1", "--skip-memory", "--engines", "minimtl-numpy",
                              "minimtl-numpy-serial"])
    out = capsys.readouterr().out
    assert "minimtl-numpy" in out and "ratios" in out


def test_bench_batch_norm_relu_adds_up_the_trunk(capsys):
    import bench_batch_norm_relu

    bench_batch_norm_relu.main(["--batch", "2", "--rounds", "1"])
    out = capsys.readouterr().out
    assert out.count(" layers") == len(bench_batch_norm_relu.ACTIVATIONS) and "per training step" in out


def test_bench_kernels_times_every_backend_and_restores_the_cut_off(capsys):
    import bench_kernels

    from minimtl import kernels
    from minimtl.kernels import compiled

    cut_off = compiled.PARALLEL_MIN_VALUES
    bench_kernels.main(["--batch", "2", "--rounds", "1"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("max-pool", "winograd"))]
    tiles = len(kernels.numpy_backend.WINOGRAD_TILES)
    assert len(rows) == 2 * len(bench_kernels.POOLED) + 4 * tiles * len(bench_kernels.WINOGRAD)
    backends = kernels.available_backends()
    assert all(len(line.split()) >= len(backends) + len(backends) - 1 for line in rows)
    assert compiled.PARALLEL_MIN_VALUES == cut_off


def test_bench_training_step_names_the_engines_when_one_is_mistyped(capsys):
    import bench_training_step

    with pytest.raises(SystemExit) as exit_info:
        bench_training_step.main(["--engines", "cython", "--skip-memory"])
    assert exit_info.value.code == 2  # argparse's usage error, not a traceback
    err = capsys.readouterr().err
    assert "unknown engine 'cython'" in err and "minimtl-<backend>" in err


def test_bench_video_prints_both_pipelines(capsys):
    import bench_video

    bench_video.main(["--frames", "4", "--random-weights", "--detectors", "mtcnn", "--detect-every", "2"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("mtcnn")]
    assert [row.split()[1] for row in rows] == ["every", "tracker"]
