"""The cropping pipeline: reading bad files, choosing and aligning faces, the cache, and the command line."""
import io
import json
import struct
import tarfile
import zipfile
import zlib

import cv2
import numpy as np
import pytest

from minimtl.faces import Detections, FaceCropper
from minimtl.faces.crop import CropCache, ImageReadError, crop_images, crop_with_cache, read_image
from minimtl.faces.detector import FaceDetector
from minimtl.faces.__main__ import main as cli_main

from conftest import require_shared_file

pytestmark = pytest.mark.faces


def genki_bytes(number: int) -> bytes:
    with tarfile.open(require_shared_file("data/genki4k.tar")) as archive:
        return archive.extractfile(f"genki4k/files/file{number:04d}.jpg").read()


def decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def png(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


@pytest.fixture(scope="module")
def face_jpeg() -> bytes:
    return genki_bytes(1)


@pytest.fixture(scope="module")
def cropper() -> FaceCropper:
    return FaceCropper()


# ------------------------------------------------------------ each bad input, a named outcome
def test_empty_file(cropper):
    assert cropper.crop_source(b"", "empty.jpg").status == "empty_file"


def test_truncated_jpeg(cropper, face_jpeg):
    result = cropper.crop_source(face_jpeg[: len(face_jpeg) // 2], "half.jpg")
    assert result.status == "truncated" and result.crop is None


def test_jpeg_with_trailing_bytes_is_not_called_truncated(cropper, face_jpeg):
    assert cropper.crop_source(face_jpeg + b"\x00junk\x86", "padded.jpg").status == "face"


def test_text_file_named_jpg(cropper, tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo\n")
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    assert caught.value.status == "not_an_image"
    assert cropper.crop_source(path.read_bytes(), "notes.jpg").status == "not_an_image"


def test_missing_file_is_unreadable(tmp_path):
    with pytest.raises(ImageReadError) as caught:
        read_image(tmp_path / "nowhere.jpg")
    assert caught.value.status == "unreadable"


def test_16_bit_png_is_converted(cropper, face_jpeg):
    image = decode(face_jpeg)
    result = cropper.crop_source(png(image.astype(np.uint16) * 257), "deep.png")
    assert result.status == "face" and "16-bit converted to 8-bit" in result.notes
    reference = cropper(image)
    assert np.abs(result.crop.astype(int) - reference.astype(int)).mean() < 2


def test_4_channel_png_drops_alpha(cropper, face_jpeg):
    image = decode(face_jpeg)
    with_alpha = np.dstack([image, np.full(image.shape[:2], 200, np.uint8)])
    result = cropper.crop_source(png(with_alpha), "alpha.png")
    assert result.status == "face" and "alpha channel dropped" in result.notes


def test_grayscale_png_is_read(cropper, face_jpeg):
    gray = cv2.cvtColor(decode(face_jpeg), cv2.COLOR_BGR2GRAY)
    result = cropper.crop_source(png(gray), "gray.png")
    assert result.status == "face" and "grayscale converted to BGR" in result.notes


def test_one_pixel_image(cropper):
    assert cropper.crop_source(png(np.zeros((1, 1, 3), np.uint8)), "dot.png").status == "too_small"


def test_photo_without_a_face(cropper):
    ramp = np.linspace(0, 255, 200 * 300).reshape(200, 300).astype(np.uint8)
    landscape = cv2.merge([ramp, ramp[::-1], np.full_like(ramp, 90)])
    result = cropper.crop_source(png(landscape), "ramp.png")
    assert result.status == "no_face" and result.crop is None and result.faces == 0


def test_absurd_header_is_refused_before_decoding():
    header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    fake = header + struct.pack(">I", zlib.crc32(header[12:])) + b"IEND"
    with pytest.raises(ImageReadError) as caught:
        read_image(fake)
    assert caught.value.status == "too_large"


def test_10000_pixel_jpeg_is_decoded_small(cropper, face_jpeg):
    face = decode(face_jpeg)
    canvas = np.full((10000, 10000, 3), 120, np.uint8)
    canvas[3000:3000 + 192 * 20, 4000:4000 + 178 * 20] = cv2.resize(face, (178 * 20, 192 * 20))
    ok, encoded = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 80])
    del canvas
    image, notes, scale = read_image(encoded.tobytes(), max_side=1600)
    assert max(image.shape[:2]) <= 1600 and scale == pytest.approx(10000 / max(image.shape[:2]))
    assert any("decoded at 1/4 scale from 10000×10000" in note for note in notes)
    result = cropper.crop_source(encoded.tobytes(), "huge.jpg")
    assert result.status == "face"
    # the box is reported in the file's own pixels: the pasted face spans x 4000..7560, y 3000..6840
    assert 4000 - 250 < result.box[0] < result.box[2] < 7560 + 250
    assert 3000 - 250 < result.box[1] < result.box[3] < 6840 + 250


def test_10000_pixel_array_is_shrunk_before_detection(face_jpeg):
    seen = []

    class Recorder(FaceDetector):
        name = "recorder"

        def _detect(self, image):
            seen.append(image.shape)
            return Detections([[10, 10, 50, 50]], [0.9])

    canvas = np.zeros((10000, 10000, 3), np.uint8)
    crop = FaceCropper(detector=Recorder(max_side=1000), max_side=1000)(canvas)
    assert seen == [(1000, 1000, 3)] and crop.shape == (48, 48)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="choose"):
        FaceCropper(choose="first")
    with pytest.raises(ValueError, match="margin"):
        FaceCropper(margin=-1)
    with pytest.raises(ValueError, match="unknown face detector"):
        FaceCropper(detector="haar")
    with pytest.raises(TypeError, match="uint8"):
        FaceCropper()(np.zeros((50, 50, 3), np.float64))


# --------------------------------------------------------------- choosing and aligning
def test_crop_is_48_gray_and_settings_name_the_options(cropper, face_jpeg):
    crop = cropper(decode(face_jpeg))
    assert crop.shape == (48, 48) and crop.dtype == np.uint8 and crop.std() > 10
    other = FaceCropper(margin=0.3)
    assert other.settings != cropper.settings and other.name != cropper.name
    assert "mtcnn" in cropper.settings and "margin=0.1" in cropper.settings


def test_align_levels_the_eyes(face_jpeg):
    image = decode(face_jpeg)
    centre = (91, 100)
    tilted = cv2.warpAffine(image, cv2.getRotationMatrix2D(centre, 20, 1.0), image.shape[1::-1],
                            borderMode=cv2.BORDER_REPLICATE)
    aligned = FaceCropper(align=True).crop_details(tilted)
    plain = FaceCropper(align=False).crop_details(tilted)
    assert abs(aligned.angle) > 12 and plain.angle == 0.0

    def eyes_in_crop(details):
        points = details.detections.landmarks[details.chosen, :2]
        return np.column_stack([points, np.ones(2)]) @ details.transform.T

    level = eyes_in_crop(aligned)
    assert abs(level[0, 1] - level[1, 1]) < 1.0, level
    slanted = eyes_in_crop(plain)
    assert abs(slanted[0, 1] - slanted[1, 1]) > 5, slanted


def test_choose_largest_or_most_confident(face_jpeg):
    face = decode(face_jpeg)
    scene = np.full((260, 420, 3), 128, np.uint8)
    scene[30:222, 10:188] = face
    scene[80:176, 260:349] = cv2.resize(face, (89, 96), interpolation=cv2.INTER_AREA)
    largest = FaceCropper(choose="largest").crop_details(scene)
    confident = FaceCropper(choose="confident").crop_details(scene)
    detections = largest.detections
    assert len(detections) == 2
    assert detections.boxes[largest.chosen][0] < 188  # the big face on the left
    assert confident.chosen == int(np.argmax(detections.scores))
    assert FaceCropper().crop_source(png(scene), "two.png").status == "several_faces"


# ------------------------------------------------------------------------------ cache
def test_cache_serves_the_second_run_without_detecting(face_jpeg, tmp_path, monkeypatch):
    cropper = FaceCropper()
    cache = CropCache(tmp_path)
    first = crop_with_cache(cropper, face_jpeg, "a.jpg", cache)
    empty = crop_with_cache(cropper, b"", "empty.jpg", cache)
    entries = sorted(p.name for p in tmp_path.rglob("*.npz"))
    assert len(entries) == 2 and not list(tmp_path.rglob("*.tmp"))
    assert (tmp_path / cropper.name / "SETTINGS.txt").read_text().strip() == cropper.settings

    def refuse(*args, **kwargs):
        raise AssertionError("the detector ran although the cache had the answer")

    monkeypatch.setattr(cropper, "crop_details", refuse)
    second = crop_with_cache(cropper, face_jpeg, "copy-of-a.jpg", cache)
    assert second.source == "copy-of-a.jpg" and second.status == first.status
    np.testing.assert_array_equal(second.crop, first.crop)
    np.testing.assert_array_equal(second.box, first.box)
    assert second.score == pytest.approx(first.score)
    assert crop_with_cache(cropper, b"", "empty.jpg", cache).status == empty.status == "empty_file"


def test_cache_keys_differ_by_settings(face_jpeg, tmp_path):
    cache = CropCache(tmp_path)
    a, b = FaceCropper(size=48), FaceCropper(size=32)
    assert crop_with_cache(a, face_jpeg, "x", cache).crop.shape == (48, 48)
    assert crop_with_cache(b, face_jpeg, "x", cache).crop.shape == (32, 32)


def test_damaged_cache_entry_is_a_miss(face_jpeg, tmp_path):
    cropper, cache = FaceCropper(), CropCache(tmp_path)
    digest = cache.digest(face_jpeg)
    path = cache.path(cropper, digest)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half a zip")
    assert cache.get(cropper, digest, "x") is None
    assert crop_with_cache(cropper, face_jpeg, "x", cache).status == "face"


# ----------------------------------------------------------------------- command line
@pytest.fixture()
def mixed_folder(tmp_path, face_jpeg):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "smile.jpg").write_bytes(face_jpeg)
    (folder / "sub" / "other.jpg").write_bytes(genki_bytes(2))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    (folder / "half.jpg").write_bytes(face_jpeg[:1000])
    (folder / "labels.txt").write_text("1 0 0 0\n")
    return folder


def test_cli_crops_a_folder_and_reports_every_file(mixed_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli_main(["crop", str(mixed_folder), str(out), "--workers", "1", "--cache-dir", str(tmp_path / "cache"),
                     "--png", "--quiet"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 5 and report["faces_cropped"] == 2
    assert report["counts"] == {"face": 2, "empty_file": 1, "not_an_image": 1, "truncated": 1}
    assert report["ignored_not_images"] == ["labels.txt"]
    with np.load(out / "crops.npz") as saved:
        assert sorted(saved["names"]) == ["smile.jpg", "sub/other.jpg"]
        assert saved["crops"].shape == (2, 48, 48) and saved["crops"].dtype == np.uint8
    assert (out / "crops" / "sub" / "other.jpg.png").is_file()
    printed = capsys.readouterr().out
    assert "5 images: 2 faces cropped" in printed and "truncated: 1 (half.jpg)" in printed
    assert not list(out.rglob("*.tmp"))


def test_cli_reads_a_tar_archive_with_two_workers(mixed_folder, tmp_path):
    archive = tmp_path / "photos.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(mixed_folder, arcname="photos")
    results, ignored = crop_images(archive, {"detector": "mtcnn"}, workers=2, use_cache=False, progress=False)
    statuses = {r.source: r.status for r in results}
    assert statuses == {"photos/empty.jpg": "empty_file", "photos/half.jpg": "truncated", "photos/smile.jpg": "face",
                        "photos/sub/other.jpg": "face", "photos/text.jpg": "not_an_image"}
    assert ignored == ["photos/labels.txt"]


def test_cli_says_what_is_wrong_with_the_source(tmp_path, capsys):
    assert cli_main(["crop", str(tmp_path / "missing"), str(tmp_path / "out"), "--quiet"]) == 2
    assert "no folder or archive" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("x")
    assert cli_main(["crop", str(tmp_path / "notes.txt"), str(tmp_path / "out"), "--quiet"]) == 2


def test_one_worker_runs_in_this_process(mixed_folder, monkeypatch):
    import minimtl.faces.crop as crop_module

    def no_pool(*args, **kwargs):
        raise AssertionError("workers=1 must not start processes")

    monkeypatch.setattr(crop_module.multiprocessing, "get_context", no_pool)
    results, _ = crop_images(mixed_folder, workers=1, use_cache=False, progress=False)
    assert [r.status for r in results] == ["empty_file", "truncated", "face", "face", "not_an_image"]
    with pytest.raises(ValueError, match="workers"):
        crop_images(mixed_folder, workers=0, use_cache=False, progress=False)


# ------------------------------------------------------------- hostile, huge and rotated inputs (issue 16)
def exif_image(image_bgr: np.ndarray, orientation: int, image_format: str) -> bytes:
    """The image encoded as ``image_format`` with EXIF orientation ``orientation`` (as a phone stores a turned photo)."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image_bgr[:, :, ::-1])).save(buffer, image_format, exif=exif.tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied_as_the_training_reader_applies_it(face_jpeg, image_format, orientation):
    stored = decode(face_jpeg)[:150, :120]  # taller than wide, so a quarter turn shows in the shape
    data = exif_image(stored, orientation, image_format)
    upright = decode(data)  # cv2.IMREAD_COLOR, as minimtl.data.base.decode_image reads training images
    image, _, scale = read_image(data)
    assert image.shape == upright.shape and scale == 1.0
    assert np.abs(image.astype(int) - upright.astype(int)).max() <= 1
    if orientation != 3:
        assert image.shape[:2] == stored.shape[1::-1]


def test_exif_orientation_is_applied_when_a_large_jpeg_is_decoded_small(face_jpeg):
    stored = cv2.resize(decode(face_jpeg), (1600, 1200))
    data = exif_image(stored, 6, "JPEG")
    image, notes, scale = read_image(data, max_side=400)
    assert any("1/4 scale" in note for note in notes)
    assert image.shape[:2] == (400, 300)  # upright: the stored 1600 × 1200 turned a quarter, then shrunk
    assert scale == pytest.approx(4.0)


def test_a_sideways_stored_photo_is_cropped_upright(cropper, face_jpeg):
    upright = cropper.crop_source(face_jpeg, "upright.jpg")
    turned = cropper.crop_source(exif_image(cv2.rotate(decode(face_jpeg), cv2.ROTATE_90_COUNTERCLOCKWISE), 6, "JPEG"),
                                 "turned.jpg")
    assert upright.status == turned.status == "face"
    assert np.abs(upright.crop.astype(int) - turned.crop.astype(int)).mean() < 12


def bmp_header(width: int, height: int) -> bytes:
    """A BMP file header claiming ``width`` × ``height`` 24-bit pixels, followed by almost no pixel data."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + 64, 0, 0, 14 + len(info)) + info + bytes(64)


def test_a_bmp_claiming_60000_pixels_a_side_is_too_large_and_the_run_goes_on(face_jpeg, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "bomb.bmp").write_bytes(bmp_header(60000, 60000))
    (folder / "face.jpg").write_bytes(face_jpeg)
    results, _ = crop_images(folder, workers=1, use_cache=False, progress=False)
    statuses = {r.source: r.status for r in results}
    assert statuses == {"bomb.bmp": "too_large", "face.jpg": "face"}
    with pytest.raises(ImageReadError) as caught:
        read_image(bmp_header(60000, 60000))
    assert caught.value.status == "too_large" and "60000×60000" in str(caught.value)


def png_file(width: int, height: int, depth: int, colour: int, row: bytes) -> bytes:
    """A complete PNG every row of which is ``row`` (filter byte included), compressed as it is streamed."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(1)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_a_small_16000_pixel_16_bit_png_is_refused_without_spending_gigabytes(tmp_path):
    data = png_file(16000, 16000, 16, 2, bytes(1 + 16000 * 6))  # 1.5 GB of pixels in a few MB of file
    assert len(data) < 10_000_000
    path = tmp_path / "deep.png"
    path.write_bytes(data)
    with pytest.raises(ImageReadError) as caught:
        read_image(data)
    assert caught.value.status == "too_large" and "16-bit" in str(caught.value)
    # how much a fresh process's peak memory grows while it reads it (the old decoder took ~5 GB): measured
    # against the peak after the cropper was built and had cropped a small photo, so that what importing and
    # compiling cost (more on a cold Numba cache) is not counted
    import subprocess
    import sys

    script = ("import resource, sys, cv2, numpy as np; from minimtl.faces.crop import FaceCropper; "
              "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024; "
              "c = FaceCropper(); c.crop_source(cv2.imencode('.png', np.full((400, 300, 3), 128, np.uint8))[1]"
              ".tobytes(), 'small.png'); before = peak(); "
              "r = c.crop_source(open(sys.argv[1], 'rb').read(), 'deep.png'); print(r.status, peak() - before)")
    status, megabytes = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                                       check=True).stdout.split()
    assert status == "too_large" and int(megabytes) < 100, megabytes


def tar_of_photos(path, photo: bytes, count: int, mode: str = "w"):
    """``path``: a tar (``mode`` "w" or "w:gz") of ``count`` copies of ``photo`` named ``photos/<n>.jpg``."""
    with tarfile.open(path, mode) as tar:
        for number in range(count):
            info = tarfile.TarInfo(f"photos/{number}.jpg")
            info.size = len(photo)
            tar.addfile(info, io.BytesIO(photo))
    return path


def test_a_truncated_archive_names_every_file_it_cannot_reach(face_jpeg, tmp_path):
    archive = tar_of_photos(tmp_path / "photos.tar", face_jpeg, 4)
    whole = archive.read_bytes()
    from minimtl.faces.crop import iter_bytes

    padded = -(-len(face_jpeg) // 512) * 512
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole[: 512 + padded + 512 + 100])  # the second member's data breaks off
    items = list(iter_bytes(cut, [f"photos/{n}.jpg" for n in range(4)]))
    assert sorted(name for name, _, _ in items) == [f"photos/{n}.jpg" for n in range(4)]
    assert dict((name, data) for name, data, _ in items)["photos/0.jpg"] == face_jpeg
    errors = {name: error for name, data, error in items if data is None}
    assert set(errors) == {"photos/1.jpg", "photos/2.jpg", "photos/3.jpg"}
    assert all("cut.tar" in str(error) or "unexpected end" in str(error) for error in errors.values())
    # cut between two members, tarfile itself would list one member and say nothing: the listing refuses it
    between = tmp_path / "between.tar"
    between.write_bytes(whole[: 512 + padded + 200])
    with pytest.raises(ValueError, match="between.tar is corrupt or truncated"):
        crop_images(between, workers=1, use_cache=False, progress=False)


def test_a_truncated_tar_gz_source_is_one_error_naming_the_file(face_jpeg, tmp_path, capsys):
    archive = tar_of_photos(tmp_path / "photos.tar.gz", face_jpeg, 3, "w:gz")
    archive.write_bytes(archive.read_bytes()[:-2000])
    assert cli_main(["crop", str(archive), str(tmp_path / "out"), "--quiet", "--workers", "1", "--no-cache"]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "photos.tar.gz is truncated or corrupt" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing half-made is left behind


def slip_archive(path, face_jpeg, names):
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as archive:
            for name in names:
                archive.writestr(name, face_jpeg)
        return path
    with tarfile.open(path, "w") as archive:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = len(face_jpeg)
            archive.addfile(info, io.BytesIO(face_jpeg))
    return path


@pytest.mark.parametrize("kind", [".tar", ".zip"])
def test_png_names_from_an_archive_never_leave_the_destination(face_jpeg, tmp_path, kind, capsys):
    escaped_absolute = tmp_path / "absolute" / "x.jpg"
    names = ["inside/ok.jpg", "../../escaped.jpg", str(escaped_absolute)]
    archive = slip_archive(tmp_path / f"slip{kind}", face_jpeg, names)
    out = tmp_path / "deep" / "er" / "out"
    assert cli_main(["crop", str(archive), str(out), "--png", "--workers", "1", "--no-cache", "--quiet"]) == 0
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png"))
    assert written == ["deep/er/out/crops/inside/ok.jpg.png"]
    report = json.loads((out / "report.json").read_text())
    assert sorted(entry["source"] for entry in report["png_not_written"]) == sorted(names[1:])
    assert report["faces_cropped"] == 3  # the crops themselves are kept, in crops.npz
    assert "PNG not written: 2" in capsys.readouterr().out


def test_png_names_do_not_follow_a_symbolic_link_out_of_the_destination(face_jpeg, tmp_path):
    archive = slip_archive(tmp_path / "linked.tar", face_jpeg, ["link/x.jpg"])
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    (out / "crops").mkdir(parents=True)
    elsewhere.mkdir()
    (out / "crops" / "link").symlink_to(elsewhere)
    assert cli_main(["crop", str(archive), str(out), "--png", "--workers", "1", "--no-cache", "--quiet"]) == 0
    assert list(elsewhere.iterdir()) == []
    assert "symbolic link" in json.loads((out / "report.json").read_text())["png_not_written"][0]["reason"]


def test_a_detector_model_file_that_is_not_one_is_one_clear_error(tmp_path, capsys):
    from minimtl.faces.mtcnn import load_networks

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not weights at all")
    with pytest.raises(ValueError, match="garbage.npz"):
        load_networks(garbage)
    np.savez(tmp_path / "other.npz", w=np.zeros(3))
    with pytest.raises(ValueError, match="does not hold MTCNN's weights"):
        load_networks(tmp_path / "other.npz")
    (tmp_path / "photos").mkdir()
    assert cli_main(["crop", str(tmp_path / "photos"), str(tmp_path / "out"), "--weights", str(garbage),
                     "--quiet"]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "garbage.npz" in err and "Traceback" not in err
