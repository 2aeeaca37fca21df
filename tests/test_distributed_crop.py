"""Face cropping on a Dask cluster (``minimtl.faces.distributed``): the same results as ``crop_images``, nothing
lost to a killed worker, an interrupted run resumed, and the ``--scheduler`` / ``--cluster`` command line.

Every cluster here is a ``LocalCluster`` on 127.0.0.1; the photos are real GENKI-4K ones, written to tmp_path."""
import os
import signal
import sys
import tarfile

import numpy as np
import pytest

from conftest import require_shared_file

distributed = pytest.importorskip("distributed", reason='Dask\'s distributed is not installed '
                                                        '(pip install "minimtl[distributed]")')
import dask  # noqa: E402 - only once distributed is known to be there

from minimtl.faces.__main__ import main as cli_main  # noqa: E402
from minimtl.faces.crop import FaceCropper, crop_images  # noqa: E402
from minimtl.faces.distributed import (DIED_MESSAGE, DistributedNotInstalled, crop_on_dask, read_shard,  # noqa: E402
                                       shard_path, write_shard)

pytestmark = [pytest.mark.distributed, pytest.mark.faces]

PHOTOS = 30


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """30 GENKI-4K photos, a file that is not an image and one not named as an image."""
    folder = tmp_path_factory.mktemp("photos")
    with tarfile.open(require_shared_file("data/genki4k.tar")) as archive:
        for number in range(1, PHOTOS + 1):
            name = f"file{number:04d}.jpg"
            (folder / name).write_bytes(archive.extractfile(f"genki4k/files/{name}").read())
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / "labels.txt").write_text("1 0 0 0\n")
    return folder


@pytest.fixture(scope="module")
def reference(photos):
    """What the local pool gives (worker processes on one thread each, as the Dask workers run; no cache):
    ``{name: CropResult}``."""
    results, ignored = crop_images(photos, workers=2, use_cache=False, progress=False)
    assert ignored == ["labels.txt"]
    return results


@pytest.fixture(scope="module")
def scheduler():
    """A two-worker LocalCluster's address, its workers on one thread each as ``crop_many``'s are (as a user's
    ``dask worker`` should be started, docs/distributed.md: BLAS sums in another order on more threads, and
    the boxes would differ in their last bits).  A task is given up (KilledWorker) as soon as one worker died
    running it, rather than after Dask's default of three more, to keep the killed-worker test short."""
    from minimtl.faces.crop import SINGLE_THREAD_ENVIRONMENT
    from minimtl.faces.distributed import restore_environment

    saved = {key: os.environ.get(key) for key in SINGLE_THREAD_ENVIRONMENT}
    with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                          "distributed.nanny.pre-spawn-environ": dict(SINGLE_THREAD_ENVIRONMENT)}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                           dashboard_address=None,
                                           scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
    try:
        with cluster:
            yield cluster.scheduler_address
    finally:
        restore_environment(saved)  # the nanny left the one-thread variables in this process's environment


def assert_same(results, expected):
    """The same names in the same order, and every field the same, arrays bitwise and of the same dtype."""
    assert [r.source for r in results] == [r.source for r in expected]
    for got, want in zip(results, expected):
        assert (got.status, got.faces, got.score, got.notes, got.image_size) == \
               (want.status, want.faces, want.score, want.notes, want.image_size), got.source
        for field in ("crop", "box", "landmarks"):
            a, b = getattr(got, field), getattr(want, field)
            assert (a is None) == (b is None), (got.source, field)
            if a is not None:
                assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), (got.source, field)


def test_a_cluster_crops_exactly_what_the_local_pool_crops(photos, reference, scheduler, tmp_path):
    results, ignored = crop_on_dask(photos, tmp_path / "shards", scheduler=scheduler, files_per_shard=8,
                                    use_cache=False, progress=False)
    assert ignored == ["labels.txt"]
    assert_same(results, reference)
    assert sum(r.has_face for r in results) >= PHOTOS - 2 and results[0].status == "not_an_image"
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [f"shard-0000{i}.npz" for i in range(4)]


# ------------------------------------------------------------------- a worker that dies mid-run
class DeadlyCropper(FaceCropper):
    """Kills its own worker process (SIGKILL, as an out-of-memory kill would) on the bytes b"POISON"."""

    def crop_source(self, data, source="<bytes>"):
        if data == b"POISON":
            os.kill(os.getpid(), signal.SIGKILL)
        return super().crop_source(data, source)


def test_a_killed_worker_loses_nothing_and_the_poison_file_is_named(photos, reference, scheduler, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for result in reference[1:11]:  # ten photos
        (folder / result.source).write_bytes((photos / result.source).read_bytes())
    (folder / "file0002-poison.jpg").write_bytes(b"POISON")  # in the first of three shards
    results, _ = crop_on_dask(folder, tmp_path / "shards", scheduler=scheduler, files_per_shard=4,
                              cropper_class=DeadlyCropper, use_cache=False, progress=False)
    by_name = {r.source: r for r in results}
    assert len(results) == 11
    assert by_name["file0002-poison.jpg"].status == "error"
    assert by_name["file0002-poison.jpg"].notes == (DIED_MESSAGE,)
    assert_same([r for r in results if "-" not in r.source], reference[1:11])  # every photo cropped as locally
    assert len(list((tmp_path / "shards").glob("shard-*.npz"))) == 3


# ------------------------------------------------------------------- resuming
def test_an_interrupted_crop_resumes_with_only_the_missing_shards(photos, reference, scheduler, tmp_path):
    shards = tmp_path / "shards"
    crop_on_dask(photos, shards, scheduler=scheduler, files_per_shard=8, use_cache=False, progress=False)
    paths = [shard_path(shards, i) for i in range(4)]
    for path in paths:
        os.utime(path, ns=(10 ** 18, 10 ** 18))  # so that any rewrite shows
    paths[1].unlink()  # never written
    paths[2].write_bytes(paths[2].read_bytes()[:1000])  # half written by hand (the task writes atomically)
    settings, results = read_shard(paths[3])
    write_shard(paths[3], results, settings.replace("margin=0.1", "margin=0.3"), 48)  # another run's settings
    os.utime(paths[3], ns=(10 ** 18, 10 ** 18))
    again, _ = crop_on_dask(photos, shards, scheduler=scheduler, files_per_shard=8, use_cache=False, progress=False)
    assert_same(again, reference)
    assert [path.stat().st_mtime_ns == 10 ** 18 for path in paths] == [True, False, False, False]
    # all shards done: nothing is computed, no scheduler is even asked (there is none at this address)
    done, _ = crop_on_dask(photos, shards, scheduler="tcp://127.0.0.1:9", files_per_shard=8, progress=False)
    assert_same(done, reference)


# ------------------------------------------------------------------- command line
def test_the_command_line_on_a_local_cluster_writes_what_the_local_pool_writes(photos, tmp_path):
    archive = tmp_path / "photos.tar"  # a tar: each shard reads the archive only as far as its own members
    with tarfile.open(archive, "w") as tar:
        tar.add(photos, arcname="photos")
    local, dask_run = tmp_path / "local", tmp_path / "dask"
    assert cli_main(["crop", str(archive), str(local), "--workers", "2", "--no-cache", "--quiet"]) == 0
    assert cli_main(["crop", str(archive), str(dask_run), "--cluster", "local:2", "--no-cache", "--quiet"]) == 0
    assert (local / "report.json").read_bytes() == (dask_run / "report.json").read_bytes()
    with np.load(local / "crops.npz") as want, np.load(dask_run / "crops.npz") as got:
        assert want.files == got.files
        for key in want.files:
            assert want[key].dtype == got[key].dtype and np.array_equal(want[key], got[key]), key
    assert len(list((dask_run / "shards").glob("shard-*.npz"))) == 1  # 31 images: one shard of 200


@pytest.mark.parametrize("arguments, says", [
    (["--cluster", "banana"], "--cluster 'banana': give local:N"),
    (["--cluster", "local:0"], "--cluster 'local:0'"),
    (["--scheduler", "http://127.0.0.1:8786"], "tcp://HOST:PORT"),
    (["--scheduler", "tcp://127.0.0.1"], "tcp://HOST:PORT"),
    (["--scheduler", "tcp://127.0.0.1:8786", "--cluster", "local:2"], "not allowed with argument"),
    (["--cluster", "local:2", "--workers", "2"], "--workers sizes the local process pool"),
])
def test_a_malformed_cluster_is_a_usage_error_in_one_line(photos, tmp_path, capsys, arguments, says):
    assert cli_main(["crop", str(photos), str(tmp_path / "out"), "--quiet", *arguments]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and says in error, error
    assert not (tmp_path / "out").exists()


def test_a_scheduler_that_does_not_answer_is_one_line(photos, tmp_path, capsys):
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        code = cli_main(["crop", str(photos), str(tmp_path / "out"), "--scheduler", "tcp://127.0.0.1:9", "--quiet"])
    assert code == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in error, error
    assert not (tmp_path / "out").exists()  # nothing was written: no folder left behind


def test_without_dask_one_line_says_what_to_install(photos, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` now raises ImportError
    with pytest.raises(DistributedNotInstalled, match=r'pip install "minimtl\[distributed\]"'):
        crop_on_dask(photos, tmp_path / "shards", local_workers=1, progress=False)
    assert cli_main(["crop", str(photos), str(tmp_path / "out"), "--cluster", "local:2", "--quiet"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and 'pip install "minimtl[distributed]"' in error, error
    assert not (tmp_path / "out").exists()


def test_a_local_cluster_leaves_this_process_environment_as_it_was(photos, tmp_path, monkeypatch):
    """The nanny writes the workers' one-thread variables into the driver's environment before each spawn;
    left there, Numba and OpenBLAS in the driver would start later thread pools on one thread."""
    from minimtl.faces.crop import SINGLE_THREAD_ENVIRONMENT

    for key in SINGLE_THREAD_ENVIRONMENT:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    crop_on_dask(photos, tmp_path / "shards", local_workers=1, files_per_shard=100, progress=False)
    assert os.environ["OMP_NUM_THREADS"] == "2"
    assert not [key for key in SINGLE_THREAD_ENVIRONMENT if key != "OMP_NUM_THREADS" and key in os.environ]


# ------------------------------------------------------------------- the data sets' crop step
def genki_tar(photos, path, count=12):
    """A GENKI-4K-shaped tar of ``count`` photos, a blank image the detector finds no face in (cropped by the
    fallback), and a file that is no image; labels.txt has a line for each, and one for a file it lacks."""
    import cv2

    folder = path.parent / (path.stem + "-files")
    (folder / "genki4k" / "files").mkdir(parents=True)
    for number in range(1, count + 1):
        name = f"file{number:04d}.jpg"
        (folder / "genki4k" / "files" / name).write_bytes((photos / name).read_bytes())
    blank = np.full((120, 100, 3), 128, np.uint8)
    (folder / "genki4k" / "files" / f"file{count + 1:04d}.jpg").write_bytes(cv2.imencode(".jpg", blank)[1].tobytes())
    (folder / "genki4k" / "files" / f"file{count + 2:04d}.jpg").write_bytes(b"not an image")
    (folder / "genki4k" / "labels.txt").write_text("".join(f"{n % 2} 0 0 0\n" for n in range(count + 3)))
    with tarfile.open(path, "w") as tar:
        tar.add(folder / "genki4k", arcname="genki4k")
    return path


def test_a_data_sets_crop_on_a_cluster_is_the_local_pools(photos, scheduler, tmp_path):
    """prepare_images with workers=DaskCluster: the same images (bitwise), kept mask, fallbacks and reasons as
    the local pool over the same members, a member the tar lacks included; the shards are gone once cached."""
    from minimtl.archives import FileSource
    from minimtl.data.base import FALLBACK_REASON, prepare_images
    from minimtl.faces.distributed import DaskCluster

    source = FileSource(genki_tar(photos, tmp_path / "genki4k.tar"))
    members = [f"genki4k/files/file{n:04d}.jpg" for n in range(1, 16)]  # 15 is not in the tar
    local = prepare_images(source, members, FaceCropper(), dataset_name="GENKI-4K", cache_dir=tmp_path / "local",
                           progress=False, workers=2)
    on_dask = prepare_images(source, members, FaceCropper(), dataset_name="GENKI-4K", cache_dir=tmp_path / "dask",
                             progress=False, workers=DaskCluster(scheduler=scheduler))
    assert on_dask.images.dtype == local.images.dtype and np.array_equal(on_dask.images, local.images)
    assert on_dask.kept.tolist() == local.kept.tolist()
    assert on_dask.fallbacks == local.fallbacks == [("genki4k/files/file0013.jpg", FALLBACK_REASON)]
    assert on_dask.rejected == local.rejected
    assert [name for name, _ in local.rejected] == ["genki4k/files/file0014.jpg", "genki4k/files/file0015.jpg"]
    assert local.rejected[0][1].startswith("not_an_image") and local.rejected[1][1] == "missing from the source"
    assert [p.suffix for p in (tmp_path / "dask").iterdir()] == [".npz"]  # the cache entry; the shards deleted
    uncached = prepare_images(source, members, FaceCropper(), dataset_name="GENKI-4K", cache_dir=None,
                              progress=False, workers=DaskCluster(scheduler=scheduler))  # shards in a temporary folder
    assert np.array_equal(uncached.images, local.images) and uncached.kept.tolist() == local.kept.tolist()
    assert (uncached.fallbacks, uncached.rejected) == (local.fallbacks, local.rejected)


def test_a_data_set_built_on_a_cluster_equals_the_local_one_and_is_cached(photos, scheduler, tmp_path):
    from minimtl.data import GENKI4K
    from minimtl.faces.distributed import DaskCluster

    archive = genki_tar(photos, tmp_path / "genki4k.tar", count=10)
    local = GENKI4K(archive, root=tmp_path / "local", progress=False, workers=2)
    on_dask = GENKI4K(archive, root=tmp_path / "dask", progress=False, workers=DaskCluster(scheduler=scheduler))
    assert on_dask.names.tolist() == local.names.tolist() and len(local) == 11  # the blank one by the fallback
    assert np.array_equal(on_dask.images, local.images) and np.array_equal(on_dask.labels["smile"], local.labels["smile"])
    assert (on_dask.fallbacks, on_dask.rejected) == (local.fallbacks, local.rejected)
    # read from the crop cache: no scheduler is asked (there is none at this address)
    again = GENKI4K(archive, root=tmp_path / "dask", progress=False, workers=DaskCluster(scheduler="tcp://127.0.0.1:9"))
    assert np.array_equal(again.images, local.images)


def test_a_data_set_on_dask_says_what_it_lacks(photos, tmp_path, monkeypatch):
    from minimtl.data import GENKI4K
    from minimtl.faces.distributed import DaskCluster

    archive = genki_tar(photos, tmp_path / "genki4k.tar", count=2)
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(DistributedNotInstalled, match=r'pip install "minimtl\[distributed\]"'):
        GENKI4K(archive, root=tmp_path, progress=False, workers=DaskCluster(local_workers=1))
    with pytest.raises(ValueError, match="needs a face cropper"):
        from minimtl.data import CentreCrop

        GENKI4K(archive, root=tmp_path, progress=False, crop=CentreCrop(), workers=DaskCluster(local_workers=1))


def train_mtl_module():
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import train_mtl

    return train_mtl


@pytest.mark.parametrize("arguments, says", [
    (["--cluster", "banana"], "--cluster 'banana': give local:N"),
    (["--cluster", "local:0"], "--cluster 'local:0'"),
    (["--scheduler", "http://127.0.0.1:8786"], "tcp://HOST:PORT"),
    (["--scheduler", "tcp://127.0.0.1:8786", "--cluster", "local:2"], "not allowed with argument"),
    (["--cluster", "local:2", "--distributed"], "crop them first in one run without --distributed"),
])
def test_train_mtl_cluster_options_are_one_line_usage_errors(capsys, arguments, says):
    from minimtl import cli

    train_mtl = train_mtl_module()
    assert cli.run(train_mtl.main, ["--synthetic", *arguments], prog=train_mtl.PROG) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and says in error, error


def test_train_mtl_passes_the_cluster_to_the_data_sets_crop(monkeypatch, tmp_path):
    from minimtl.faces.distributed import DaskCluster

    train_mtl = train_mtl_module()
    assert train_mtl.parse_arguments([]).crop_workers is None  # the local process pool
    assert train_mtl.parse_arguments(["--cluster", "local:3"]).crop_workers == DaskCluster(local_workers=3)
    arguments = train_mtl.parse_arguments(["--scheduler", "tcp://127.0.0.1:8786", "--quiet"])
    assert arguments.crop_workers == DaskCluster(scheduler="tcp://127.0.0.1:8786")
    seen = {}

    class Recorder:
        name, fallbacks, rejected = "GENKI-4K", [], []

        def __init__(self, path, **options):
            seen.update(options)

        def __len__(self):
            return 0

    monkeypatch.setitem(train_mtl.DATA_SETS, "genki4k", (Recorder,) + train_mtl.DATA_SETS["genki4k"][1:])
    train_mtl.load_dataset("genki4k", tmp_path, arguments)
    assert seen["workers"] == DaskCluster(scheduler="tcp://127.0.0.1:8786")
