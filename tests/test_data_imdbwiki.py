"""IMDB-WIKI metadata on small .mat files written here with the real schema (the archives are too large to hold)."""
import io
import tarfile
from datetime import date

import cv2
import numpy as np
import pytest
import scipy.io

from minimtl.data import IMDBWIKI, CentreCrop
from minimtl.data.imdbwiki import matlab_datenum_to_year_month, read_imdbwiki_metadata

from conftest import require_shared_file

pytestmark = pytest.mark.data


def datenum(year: int, month: int, day: int) -> float:
    """MATLAB serial date number of a date (MATLAB day 1 = 1 January of year 0)."""
    return date(year, month, day).toordinal() + 366.0


# (file, dob, photo_taken, gender (1 male / 0 female / nan), face_score, second_face_score, expected)
RECORDS = [
    ("00/a_1980-03-01_2010.jpg", datenum(1980, 3, 1), 2010, 1.0, 4.5, np.nan, ("keep", 30, 0)),
    ("00/b_1980-09-01_2010.jpg", datenum(1980, 9, 1), 2010, 0.0, 3.0, np.nan, ("keep", 29, 1)),  # born after mid-year
    ("01/c_2000-01-01_2015.jpg", datenum(2000, 1, 1), 2015, 0.0, 2.0, np.nan, ("keep", 15, 1)),
    ("01/d_1950-06-30_2011.jpg", datenum(1950, 6, 30) + 0.5, 2011, 1.0, 1.5, np.nan, ("keep", 61, 0)),
    ("02/e.jpg", datenum(1970, 1, 1), 2000, 1.0, -np.inf, np.nan, ("no face found",)),
    ("02/f.jpg", datenum(1970, 1, 1), 2000, 1.0, 0.5, np.nan, ("face_score below 1",)),
    ("02/g.jpg", datenum(1970, 1, 1), 2000, 1.0, 3.0, 2.0, ("a second face in the photo",)),
    ("03/h.jpg", datenum(1970, 1, 1), 2000, np.nan, 3.0, np.nan, ("gender unknown",)),
    ("03/i.jpg", datenum(1800, 1, 1), 2000, 1.0, 3.0, np.nan, ("age outside 0-100",)),
    ("03/j.jpg", datenum(2012, 1, 1), 2000, 1.0, 3.0, np.nan, ("age outside 0-100",)),
    ("03/k.jpg", 0.0, 2000, 1.0, 3.0, np.nan, ("invalid date of birth",)),
]


def write_mat(path, key="wiki"):
    columns = list(zip(*RECORDS))
    count = len(RECORDS)
    struct = {
        "dob": np.array(columns[1]), "photo_taken": np.array(columns[2], dtype=np.uint16),
        "full_path": np.array(columns[0], dtype=object), "gender": np.array(columns[3]),
        "name": np.array([f"person {i}" for i in range(count)], dtype=object),
        "face_location": np.array([np.array([[1.0, 2.0, 30.0, 40.0]]) for _ in range(count)], dtype=object),
        "face_score": np.array(columns[4]), "second_face_score": np.array(columns[5]),
    }
    scipy.io.savemat(path, {key: struct})


@pytest.fixture
def wiki_folder(tmp_path):
    folder = tmp_path / "wiki_crop"
    folder.mkdir()
    write_mat(folder / "wiki.mat")
    rng = np.random.default_rng(0)
    for record in RECORDS:
        image = folder / record[0]
        image.parent.mkdir(exist_ok=True)
        size = 1 if record[0].startswith("01/c") else 120  # IMDB-WIKI has 1x1 placeholder images
        cv2.imwrite(str(image), rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8))
    return folder


def test_matlab_dates():
    year, month = matlab_datenum_to_year_month([datenum(1981, 5, 5), datenum(2000, 12, 31) + 0.9, 0, np.nan])
    assert year.tolist() == [1981, 2000, 0, 0] and month.tolist() == [5, 12, 0, 0]


def test_metadata_columns(wiki_folder):
    columns = read_imdbwiki_metadata(wiki_folder / "wiki.mat")
    assert columns["full_path"][0] == "00/a_1980-03-01_2010.jpg"
    assert np.isnan(columns["second_face_score"][0]) and np.isneginf(columns["face_score"][4])
    assert columns["photo_taken"].dtype == np.int64


def test_filters_ages_and_gender(wiki_folder):
    dataset = IMDBWIKI(wiki_folder, load_images=False)
    kept = [r for r in RECORDS if r[6][0] == "keep"]
    assert dataset.name == "IMDB-WIKI (wiki)"
    assert dataset.names.tolist() == [f"{r[0]}" for r in kept]
    assert dataset.ages.tolist() == [r[6][1] for r in kept]
    assert dataset.labels["gender"].tolist() == [r[6][2] for r in kept]  # ours: 0 male, 1 female
    assert dataset.labels["age"].tolist() == [2, 2, 0, 5]
    assert sorted(reason for _, reason in dataset.rejected) == sorted(r[6][0] for r in RECORDS if r[6][0] != "keep")


def test_second_face_threshold(wiki_folder):
    dataset = IMDBWIKI(wiki_folder, load_images=False, max_second_face_score=2.5)
    assert "02/g.jpg" in dataset.names.tolist()


def test_images_from_folder_and_tar(wiki_folder, tmp_path):
    dataset = IMDBWIKI(wiki_folder, root=tmp_path / "root", crop=CentreCrop(), progress=False)
    assert dataset.images.shape == (3, 48, 48)  # the 1x1 placeholder has no face
    assert ("01/c_2000-01-01_2015.jpg", "no face found") in dataset.rejected
    archive = tmp_path / "wiki_crop.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(wiki_folder, arcname="wiki_crop")
    from_tar = IMDBWIKI(archive, root=tmp_path / "root", crop=CentreCrop(), progress=False)
    np.testing.assert_array_equal(from_tar.images, dataset.images)
    assert from_tar.names[0] == "wiki_crop/00/a_1980-03-01_2010.jpg"


def test_imdb_key_and_bad_files(tmp_path):
    folder = tmp_path / "imdb_crop"
    folder.mkdir()
    write_mat(folder / "imdb.mat", key="imdb")
    assert IMDBWIKI(folder, load_images=False).name == "IMDB-WIKI (imdb)"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no wiki.mat or imdb.mat"):
        IMDBWIKI(empty, load_images=False)
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"wiki": {"dob": np.array([1.0, 2.0]), "photo_taken": np.array([2000])}})
    buffer.seek(0)
    with pytest.raises(ValueError, match="no field 'full_path'"):
        read_imdbwiki_metadata(buffer)
    with pytest.raises(FileNotFoundError, match="fetch wiki_crop"):
        IMDBWIKI(root=tmp_path / "nowhere", load_images=False)


def test_person_split_holds_out_whole_folders(wiki_folder, tmp_path):
    dataset = IMDBWIKI(wiki_folder, root=tmp_path / "root", crop=CentreCrop(), progress=False)
    assert dataset.folders.tolist() == [0, 0, 1]  # a, b and d (c is the 1x1 placeholder)
    train, test = dataset.person_split(test_folders=[1])
    assert test.names.tolist() == ["01/d_1950-06-30_2011.jpg"] and set(train.folders) == {0}
    assert not set(train.names) & set(test.names)
    np.testing.assert_array_equal(test.ages, [61])  # per-sample extras follow the split
    with pytest.raises(ValueError, match="folders 80-89"):
        dataset.default_split()  # this tiny set has no folder 80-89: said, not an empty test split


def test_records_whose_images_are_absent_are_reported_from_a_folder_and_an_archive(wiki_folder, tmp_path):
    (wiki_folder / "00" / "b_1980-09-01_2010.jpg").unlink()
    dataset = IMDBWIKI(wiki_folder, root=tmp_path / "root", crop=CentreCrop(), progress=False)
    assert ("00/b_1980-09-01_2010.jpg", "missing from the source") in dataset.rejected
    assert dataset.names.tolist() == ["00/a_1980-03-01_2010.jpg", "01/d_1950-06-30_2011.jpg"]
    archive = tmp_path / "wiki_crop.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(wiki_folder, arcname="wiki_crop")
    from_tar = IMDBWIKI(archive, root=tmp_path / "root", crop=CentreCrop(), progress=False)
    assert ("wiki_crop/00/b_1980-09-01_2010.jpg", "missing from the source") in from_tar.rejected
    assert len(from_tar) == 2


def test_a_truncated_mat_file_is_one_clear_error(wiki_folder):
    data = (wiki_folder / "wiki.mat").read_bytes()
    (wiki_folder / "wiki.mat").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot be read as a MATLAB .mat file.*truncated"):
        IMDBWIKI(wiki_folder, load_images=False)


def test_impossible_dates_are_reported_by_name(wiki_folder):
    dataset = IMDBWIKI(wiki_folder, load_images=False)
    reasons = dict(dataset.rejected)
    assert reasons["03/i.jpg"] == reasons["03/j.jpg"] == "age outside 0-100"  # born 1800; photo before birth
    assert reasons["03/k.jpg"] == "invalid date of birth"


@pytest.mark.slow
def test_the_real_wiki_subset(tmp_path):
    archive = require_shared_file("data/wiki_crop_64.tar.gz")
    dataset = IMDBWIKI(archive, load_images=False)
    assert len(dataset) + len(dataset.rejected) == 62_328  # every record kept or reported
    assert "missing from the source" not in {reason for _, reason in dataset.rejected}  # labels only: not looked for
    present = np.isin(dataset.names, dataset.source.names())  # the archive holds folders 00-89 of those kept
    absent = dataset.folders[~present]
    assert present.sum() == 34_400 and set(range(90, 100)) <= set(absent.tolist())
    assert np.sum(absent < 90) <= 2  # one record of folder 45 passes the filter but is not in the subset
    dataset = dataset.subset(np.flatnonzero(present))
    assert dataset.class_counts()["gender"].tolist() == [25_785, 8_615]
    train, test = dataset.person_split()
    assert set(test.folders.tolist()) == set(range(80, 90)) and not set(train.folders.tolist()) & set(range(80, 90))
    assert 3000 < len(test) < 4000
