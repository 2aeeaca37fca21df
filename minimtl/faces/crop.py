"""From a photo to the paper's 48 × 48 grayscale face (Section 3.1, Figure 2), robustly and cached.

The pipeline of ``FaceCropper``, the same for every image that trains, tests or is predicted:

1. enlarge a small image (shorter side under ``upscale_to``, e.g. WIKI's 64 × 64 crops) and
   shrink a huge one (longer side over ``max_side``), so the detector sees faces at a size it finds;
2. detect faces (MTCNN by default, or YuNet / res10);
3. choose one: the ``"largest"`` box or the most ``"confident"``;
4. align: the similarity transform (rotation, scale, shift) that puts the face's five
   landmarks closest, in least squares, to ``FACE_TEMPLATE`` (Umeyama, 1991): eyes level,
   at the same height and the same distance apart whatever the photo.  Detectors without
   landmarks (res10), or ``align=False``, cut the detector's box instead;
5. cut a square around the template, ``margin`` × the face's side added on every side;
6. grayscale, resize to ``size × size`` (48), uint8.

The framing is fixed by the landmarks, not by the box: each detector and each data set
draws its boxes differently (MTCNN's box on a UTKFace chip is clipped by the chip's edge,
on a WIKI crop it is not), but the eyes and mouth are where they are.

Reading files is where real data sets bite, so ``read_image`` names every way
a file can fail (``CropResult.status``): ``empty_file``, ``not_an_image``,
``truncated``, ``corrupt``, ``too_small``, ``too_large``, ``unreadable``; and
notes what it had to convert (16-bit, alpha channel, grayscale, shrunk).  A
very large photo is shrunk while decoding where the format allows (JPEG) and
right after otherwise, so it never costs more than one decoded copy.

``CropCache`` keeps one small ``.npz`` per image, keyed by the SHA-256 of the
file's bytes and the cropper's settings, so a second run over the same images
only reads them.  ``crop_images`` runs the whole thing over many images in
worker processes with a progress bar.
"""
from __future__ import annotations

import hashlib
import io
import math
import multiprocessing
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np
from tqdm.auto import tqdm

from minimtl.archives import FileSource, MemberTooLarge
from minimtl.crop_cache import CropCache
from minimtl.download import ArchiveError
from minimtl.faces.boxes import Detections
from minimtl.faces.detector import DEFAULT_MAX_SIDE, check_bgr_image, shrink_to, user_cache_dir

CACHE_FORMAT = 2  # bump when the cropping code changes its output, so old cache entries are not reused
MIN_SIDE = 12  # below this no detector can find a face (MTCNN's smallest window)
MAX_PIXELS = 25_000 * 25_000  # refuse to decode more than this (a decompression bomb, not a photo)
# ... and any image whose decoded pixels would need more memory than this (a 16000 × 16000 16-bit PNG of 2 MB
# decodes to 1.5 GB); a JPEG counts at the reduced scale libjpeg decodes it at, so a large photo is never refused.
MAX_DECODED_BYTES = 256 * 2 ** 20
MAX_FILE_BYTES = 512 * 2 ** 20  # an image file larger than this is not read at all
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jp2")
FACE_STATUSES = ("face", "several_faces")
STATUSES = {
    "face": "exactly one face, cropped",
    "several_faces": "more than one face; the chosen one is cropped",
    "no_face": "the image was read but no face was found",
    "empty_file": "the file has no bytes",
    "not_an_image": "the bytes are not an image format OpenCV reads",
    "truncated": "the image file ends early (an incomplete download or copy)",
    "corrupt": "an image format was recognised but could not be decoded",
    "too_small": f"the image is smaller than {MIN_SIDE} pixels on a side",
    "too_large": f"the image has more than {MAX_PIXELS:,} pixels, or would take more than "
                 f"{MAX_DECODED_BYTES // 2 ** 20} MiB to decode",
    "unreadable": "the file could not be opened or read",
    "error": "an unexpected error while detecting or cropping (see the message)",
}


class ImageReadError(ValueError):
    """An image could not be used; ``status`` is one of the keys of ``STATUSES``."""

    def __init__(self, status: str, message: str):
        self.status = status
        super().__init__(message)


@dataclass
class CropResult:
    """What happened to one image.

    Attributes:
        source: the file name or archive member.
        status: a key of ``STATUSES``.
        crop: ``(size, size)`` uint8 when a face was found, else None.
        faces: number of faces detected.
        box: ``(4,)`` float32 box of the chosen face in the file's own pixels, or None.
        score: its detector score, or None.
        notes: conversions made while reading, and error messages.
        landmarks: ``(5, 2)`` float32 landmarks of the chosen face in the file's own pixels, or None.
        image_size: ``(width, height)`` of the file's image in its own pixels, or None if unread.
    """

    source: str
    status: str
    crop: np.ndarray | None = None
    faces: int = 0
    box: np.ndarray | None = None
    score: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    landmarks: np.ndarray | None = None
    image_size: tuple[int, int] | None = None

    @property
    def has_face(self) -> bool:
        return self.status in FACE_STATUSES


# ----------------------------------------------------------------------- reading
@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, read without decoding it.

    ``width`` and ``height`` are as stored (before any EXIF rotation); ``channels`` is 1 for a grayscale
    and 3 for a colour image as ``read_image`` decodes it (alpha dropped); ``sample_bytes`` is 2 for
    16-bit samples, 4 for 32-bit ones; ``alpha`` says whether the file has an alpha channel.
    """

    width: int
    height: int
    format: str
    channels: int = 3
    sample_bytes: int = 1
    alpha: bool = False

    def decoded_bytes(self, reduction: int = 1) -> int:
        """Bytes of the decoded pixels, decoded at ``1 / reduction`` of the size (JPEG only)."""
        return -(-self.width // reduction) * -(-self.height // reduction) * self.channels * self.sample_bytes


def _jpeg_header(data: bytes) -> ImageHeader | None:
    position = 2
    while position + 9 < len(data):
        if data[position] != 0xFF:
            position += 1
            continue
        marker = data[position + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            position += 1 if marker == 0xFF else 2
            continue
        length = struct.unpack(">H", data[position + 2:position + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            height, width = struct.unpack(">HH", data[position + 5:position + 9])
            components = data[position + 9] if position + 9 < len(data) else 3
            return ImageHeader(width, height, "jpeg", 1 if components == 1 else 3)
        position += 2 + length
    return None


#: Pillow's single-channel modes and the bytes per sample of each (the other modes are colour, 1 byte).
_PILLOW_SAMPLE_BYTES = {"1": 1, "L": 1, "LA": 1, "I": 4, "F": 4, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


def _pillow_header(data: bytes) -> ImageHeader | None:
    """The header of a format this module does not parse itself (TIFF, WebP, GIF, PPM, JPEG 2000 ...), by Pillow,
    which reads only the header on ``open``; None if Pillow does not know the format."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height, mode, kind = image.size[0], image.size[1], image.mode, (image.format or "image")
    except Image.DecompressionBombError as error:
        raise ImageReadError("too_large", f"the header claims {error}") from None
    except Exception:  # noqa: BLE001 - unknown or damaged: OpenCV decides below
        return None
    return ImageHeader(width, height, kind.lower(), 1 if mode in _PILLOW_SAMPLE_BYTES else 3,
                       _PILLOW_SAMPLE_BYTES.get(mode, 1), "A" in mode)


def image_header(data: bytes) -> ImageHeader | None:
    """Read an image's size, channels and sample depth from its header, without decoding; None if unknown.

    PNG, JPEG and BMP are read here; other formats through Pillow's header reader.  Raises
    ``ImageReadError("too_large")`` where Pillow finds the claimed size absurd.
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 26 and data[12:16] == b"IHDR":
        width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
        return ImageHeader(width, height, "png", 1 if colour in (0, 4) else 3, 2 if depth == 16 else 1,
                           colour in (4, 6))
    if data[:2] == b"\xff\xd8":
        return _jpeg_header(data)
    if data[:2] == b"BM" and len(data) >= 26:
        info_size = struct.unpack("<I", data[14:18])[0]
        if info_size == 12:  # OS/2 BITMAPCOREHEADER
            width, height = struct.unpack("<HH", data[18:22])
            bits = struct.unpack("<H", data[24:26])[0] if len(data) >= 26 else 24
        elif len(data) >= 30:
            width, height = struct.unpack("<ii", data[18:26])
            bits = struct.unpack("<H", data[28:30])[0]
        else:
            return None
        return ImageHeader(abs(width), abs(height), "bmp", 3, 1, bits == 32)
    return _pillow_header(data)


def image_size_from_header(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` read from an image's header without decoding (see ``image_header``), or None."""
    header = image_header(data)
    return None if header is None else (header.width, header.height)


def looks_truncated(data: bytes) -> bool:
    """Whether a JPEG or PNG ends before its image does (OpenCV would decode it half-grey, silently).

    A JPEG's entropy-coded data cannot contain the end marker ``FF D9`` (a data
    ``FF`` is always followed by ``00``), so a complete file has one after its
    last start-of-scan ``FF DA``; bytes after it (some cameras append some) do not matter.
    A PNG must contain its ``IEND`` chunk.
    """
    if data[:2] == b"\xff\xd8":
        last_scan = data.rfind(b"\xff\xda")
        return last_scan == -1 or data.find(b"\xff\xd9", last_scan) == -1
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return data.rfind(b"IEND") == -1
    return False


_KNOWN_MAGIC = (b"\xff\xd8", b"\x89PNG", b"BM", b"II*\x00", b"MM\x00*", b"RIFF", b"P1", b"P2", b"P3", b"P4", b"P5",
                b"P6", b"\x00\x00\x00\x0cjP", b"GIF8")


def read_image(source: bytes | str | os.PathLike,
               max_side: int = DEFAULT_MAX_SIDE) -> tuple[np.ndarray, tuple[str, ...], float]:
    """Decode an image file into ``(H, W, 3)`` uint8 BGR, at most ``max_side`` on its longer side.

    The image is turned upright as its EXIF orientation says, as ``cv2.imread`` and a phone's
    viewer show it; its "own pixels" below are those of the upright image.  Sizes are read from
    the header first (``image_header``), so an image too large to decode is refused before any
    memory is spent on it.

    Args:
        source: the file's bytes, or its path.
        max_side: longer side of the returned image; larger images are shrunk
            (in the JPEG decoder itself when possible).

    Returns:
        ``(image, notes, scale)``: notes name each conversion made; ``scale >= 1``
        multiplies coordinates in ``image`` back to the file's own pixels.

    Raises:
        ImageReadError: with ``status`` ``empty_file``, ``not_an_image``, ``truncated``,
            ``corrupt``, ``too_small``, ``too_large`` or ``unreadable``.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        try:
            file_bytes = os.stat(source).st_size
            if file_bytes > MAX_FILE_BYTES:
                raise ImageReadError("too_large", f"the file has {file_bytes / 2 ** 30:.1f} GiB, more than the "
                                                  f"{MAX_FILE_BYTES // 2 ** 20} MiB an image file may have")
            data = Path(source).read_bytes()
        except OSError as error:
            raise ImageReadError("unreadable", f"cannot read {source}: {error.strerror or error}") from error
    if not data:
        raise ImageReadError("empty_file", "the file is empty (0 bytes)")
    notes: list[str] = []
    header = image_header(data)
    size = None if header is None else (header.width, header.height)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise ImageReadError("too_large", f"{size[0]}×{size[1]} pixels is more than the {MAX_PIXELS:,} allowed")
    if looks_truncated(data):
        raise ImageReadError("truncated", "the file ends before the image does (JPEG without end marker / PNG without IEND)")
    buffer = np.frombuffer(data, dtype=np.uint8)
    reduction = 1
    if header is not None and header.format == "jpeg":
        longer = max(size)
        while reduction < 8 and longer / (reduction * 2) >= max_side:
            reduction *= 2  # let libjpeg decode at 1/2, 1/4 or 1/8 scale: never the full 100-megapixel image
    if header is not None and header.decoded_bytes(reduction) > MAX_DECODED_BYTES:
        depth = f"{8 * header.sample_bytes}-bit " if header.sample_bytes > 1 else ""
        raise ImageReadError("too_large", f"a {size[0]}×{size[1]} {depth}image takes "
                                          f"{header.decoded_bytes(reduction) / 2 ** 30:.1f} GiB to decode, more than "
                                          f"the {MAX_DECODED_BYTES // 2 ** 20} MiB allowed: shrink it first")
    # Every flag but IMREAD_UNCHANGED turns the image as its EXIF orientation says (as cv2.imread and the data
    # sets' decode_image do); ANYCOLOR | ANYDEPTH also keeps 16-bit samples and grayscale, and drops alpha.
    if reduction > 1:
        flag = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}[reduction]
        notes.append(f"decoded at 1/{reduction} scale from {size[0]}×{size[1]}")
    else:
        flag = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH
    try:
        image = cv2.imdecode(buffer, flag)
    except cv2.error as error:  # OpenCV's own limits (CV_IO_MAX_IMAGE_PIXELS) or a decoder that gives up
        message = " ".join(str(error).split())
        status = "too_large" if ("MAX_IMAGE" in message or "memory" in message.lower()) else "corrupt"
        raise ImageReadError(status, f"OpenCV cannot decode it: {message[-160:]}") from None
    except MemoryError:
        raise ImageReadError("too_large", "not enough memory to decode it") from None
    if image is None:
        if data.startswith(_KNOWN_MAGIC):
            raise ImageReadError("corrupt", "the file starts like an image but OpenCV cannot decode it")
        raise ImageReadError("not_an_image", f"not an image format OpenCV reads (starts with {data[:8]!r})")
    if header is not None and header.alpha and image.ndim == 3 and image.shape[2] == 3:
        notes.append("alpha channel dropped")
    if image.dtype == np.uint16:
        np.right_shift(image, 8, out=image)  # in place: a large 16-bit image is not copied twice
        image = image.astype(np.uint8)
        notes.append("16-bit converted to 8-bit")
    elif image.dtype != np.uint8:
        image = cv2.normalize(image.astype(np.float64), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        notes.append(f"{image.dtype} pixels rescaled to 8-bit")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        notes.append("grayscale converted to BGR")
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        notes.append("alpha channel dropped")
    elif image.shape[2] != 3:
        raise ImageReadError("corrupt", f"an image with {image.shape[2]} channels")
    if min(image.shape[:2]) < MIN_SIDE:
        raise ImageReadError("too_small", f"{image.shape[1]}×{image.shape[0]} pixels is smaller than {MIN_SIDE} on a side")
    original = image.shape[:2]
    image, factor = shrink_to(image, max_side)
    if factor != 1.0:
        notes.append(f"shrunk from {original[1]}×{original[0]} to {image.shape[1]}×{image.shape[0]}")
    # the longer sides: the header's size is before the EXIF rotation, the decoded image's after it
    scale = factor * (max(size) / max(original) if reduction > 1 else 1.0)
    return np.ascontiguousarray(image), tuple(notes), scale


# ----------------------------------------------------------------------- cropping
#: Where the five landmarks (``LANDMARK_NAMES`` order: eye on the image's left, eye on its right, nose tip,
#: left and right mouth corners) go in the aligned face, as ``(x, y)`` in units of the face's side, from
#: the face's centre, with ``y`` downwards.  Measured as the median position of MTCNN's landmarks inside its
#: own boxes on GENKI-4K and WIKI photos (150 each), made left-right symmetric.  ``margin`` then adds that
#: fraction of the side all round: with the default 0.1 the eyes of every crop sit at
#: (16.8, 19.2) and (31.2, 19.2) of 48 × 48 pixels, 14.4 pixels apart.
FACE_TEMPLATE = np.array([[-0.18, -0.12], [0.18, -0.12], [0.0, 0.08], [-0.16, 0.25], [0.16, 0.25]])


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The rotation, uniform scale and shift that map ``source`` points closest to ``target`` in least squares.

    Umeyama (1991), "Least-squares estimation of transformation parameters between two point
    patterns", without reflections: with both point sets centred, the rotation ``R`` comes from
    the SVD of their covariance, the scale is ``trace(D S) / var(source)`` and the shift maps the
    source's centre onto the target's.

    Args:
        source: ``(K, 2)`` points, ``K >= 2``, not all equal.
        target: ``(K, 2)`` points.

    Returns:
        ``(2, 3)`` float64 matrix ``M`` with ``target ≈ M @ [x, y, 1]``.
    """
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    source_mean, target_mean = source.mean(0), target.mean(0)
    source_centred, target_centred = source - source_mean, target - target_mean
    variance = (source_centred ** 2).sum() / len(source)
    if variance <= 0:
        raise ValueError("similarity_transform: the source points all coincide")
    covariance = target_centred.T @ source_centred / len(source)
    u, d, vt = np.linalg.svd(covariance)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])  # a rotation, never a mirror image
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(d) @ sign) / variance
    shift = target_mean - scale * rotation @ source_mean
    return np.column_stack([scale * rotation, shift])


@dataclass
class FaceCrop:
    """Everything ``FaceCropper.crop_details`` knows about one image: all detections,
    which one was chosen, the rotation applied, and the crop.

    ``transform`` is the ``(2, 3)`` affine map from image pixels to crop pixels.
    """

    detections: Detections
    chosen: int | None
    angle: float
    crop: np.ndarray | None
    transform: np.ndarray | None


class FaceCropper:
    """The paper's face preprocessing: image → one ``size × size`` grayscale face.

    Args:
        detector: ``"mtcnn"`` (the paper's), ``"yunet"``, ``"res10"``, or a ``FaceDetector``.
        choose: ``"largest"`` box or most ``"confident"`` one when several faces are found.
        align: place the five landmarks on ``FACE_TEMPLATE`` (eyes level, same size and place in every
            crop); False, or a detector without landmarks, cuts the detector's box instead.
        margin: fraction of the face's side added on each side of the (square) crop.
        size: side of the output crop in pixels (48 in the paper).
        max_side: images larger than this are shrunk before detection and cropping.
        upscale_to: images whose shorter side is below this are enlarged to it (cubic) first, so a
            64 × 64 face crop gives the detector a face of about 70 pixels; 0 turns it off.
        **detector_options: passed to the detector's constructor.

    ``cropper(image_bgr)`` returns ``(size, size)`` uint8, or None when there is no face.
    ``cropper.settings`` names every option (a cache key); ``cropper.name`` is a short form.
    """

    def __init__(self, detector="mtcnn", choose: str = "largest", align: bool = True, margin: float = 0.1,
                 size: int = 48, max_side: int = DEFAULT_MAX_SIDE, upscale_to: int = 160, **detector_options):
        from minimtl.faces import get_detector

        if choose not in ("largest", "confident"):
            raise ValueError(f"choose must be 'largest' or 'confident', got {choose!r}")
        if not isinstance(margin, (int, float)) or not 0 <= margin <= 2:
            raise ValueError(f"margin must be a number between 0 and 2 (a fraction of the box side), got {margin!r}")
        if not isinstance(size, int) or size < 8:
            raise ValueError(f"size must be an integer of at least 8 pixels, got {size!r}")
        if not isinstance(upscale_to, int) or not 0 <= upscale_to <= max_side:
            raise ValueError(f"upscale_to must be an integer between 0 and max_side ({max_side}), got {upscale_to!r}")
        if isinstance(detector, str):
            detector_options.setdefault("max_side", max_side)
        self.detector = get_detector(detector, **detector_options)
        self.choose, self.align, self.margin, self.size = choose, bool(align), float(margin), size
        self.max_side, self.upscale_to = max_side, upscale_to

    @property
    def settings(self) -> str:
        """Every option that changes the output, as one string."""
        return (f"facecrop-v{CACHE_FORMAT}(detector={self.detector.settings},choose={self.choose},"
                f"align={self.align},margin={self.margin:g},size={self.size},max_side={self.max_side},"
                f"upscale_to={self.upscale_to})")

    @property
    def name(self) -> str:
        """A short, file-name-safe cache key: detector name plus a hash of ``settings``."""
        return f"{self.detector.name}-{hashlib.sha256(self.settings.encode()).hexdigest()[:12]}"

    @property
    def cache_key(self) -> str:
        """``name``, under the attribute ``minimtl.data`` looks for (its caches keep only a short prefix)."""
        return self.name

    def choose_face(self, detections: Detections) -> int | None:
        """Index of the face to crop, or None when there is none."""
        if len(detections) == 0:
            return None
        values = detections.areas() if self.choose == "largest" else detections.scores
        return int(np.argmax(values))

    def detection_image(self, image_bgr: np.ndarray) -> tuple[np.ndarray, float]:
        """``image_bgr`` resized for detection: ``(image, factor)``, ``factor`` × its coordinates = the original's."""
        height, width = image_bgr.shape[:2]
        if self.upscale_to and min(height, width) < self.upscale_to:
            factor = min(height, width) / self.upscale_to
            factor = max(factor, max(height, width) / self.max_side)  # never past max_side
            size = (max(1, round(width / factor)), max(1, round(height / factor)))
            return cv2.resize(image_bgr, size, interpolation=cv2.INTER_CUBIC), factor
        return shrink_to(image_bgr, self.max_side)

    def crop_details(self, image_bgr: np.ndarray) -> FaceCrop:
        """Detect, choose, align and crop; see ``FaceCrop``.  ``image_bgr`` is ``(H, W, 3)`` uint8."""
        check_bgr_image(image_bgr)
        image, factor = self.detection_image(image_bgr)
        detections = self.detector.detect(image)
        index = self.choose_face(detections)
        if index is None:
            return FaceCrop(detections.scaled(factor), None, 0.0, None, None)
        crop, angle, to_crop = self.crop_face(image, detections, index)
        to_crop = to_crop @ np.diag([1 / factor, 1 / factor, 1.0])  # from the original image's pixels
        return FaceCrop(detections.scaled(factor), index, angle, crop, to_crop[:2])

    def crop_every_face(self, image_bgr: np.ndarray) -> tuple[Detections, np.ndarray]:
        """Every face in ``image_bgr`` ``(H, W, 3)`` uint8, framed as ``crop_details`` frames the chosen one.

        Returns ``(detections in the image's own pixels, crops (K, size, size) uint8)``, largest box first.
        """
        check_bgr_image(image_bgr)
        image, factor = self.detection_image(image_bgr)
        detections = self.detector.detect(image)
        order = np.argsort(-detections.areas(), kind="stable")
        detections = detections.select(order)
        crops = np.stack([self.crop_face(image, detections, i)[0] for i in range(len(detections))]) if len(detections) \
            else np.zeros((0, self.size, self.size), np.uint8)
        return detections.scaled(factor), crops

    def face_square(self, detections: Detections, index: int) -> np.ndarray:
        """``(3, 3)`` map from image pixels to the aligned face square: its centre at (0, 0), side 1.

        With landmarks (and ``align``): the similarity transform onto ``FACE_TEMPLATE``.  Without:
        the detector's box, made square about its centre, never rotated.
        """
        if self.align and detections.landmarks is not None:
            return np.vstack([similarity_transform(detections.landmarks[index], FACE_TEMPLATE), [0, 0, 1]])
        x1, y1, x2, y2 = detections.boxes[index].astype(np.float64)
        side = max(x2 - x1, y2 - y1, 1.0)
        return np.array([[1 / side, 0, -(x1 + x2) / (2 * side)], [0, 1 / side, -(y1 + y2) / (2 * side)], [0, 0, 1]])

    def crop_face(self, image_bgr: np.ndarray, detections: Detections, index: int) -> tuple[np.ndarray, float, np.ndarray]:
        """Crop face ``index`` of ``detections`` (found in this ``image_bgr``): align, add the margin, gray, resize.

        Returns ``(crop (size, size) uint8, angle in degrees, (3, 3) affine map from image to crop pixels)``.
        """
        return self.crop_with_square(image_bgr, self.face_square(detections, index))

    def crop_with_square(self, image_bgr: np.ndarray, to_square: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        """Cut the face whose square is given by ``to_square`` (see ``face_square``) out of ``image_bgr``.

        The square plus ``margin`` is first warped at the image's own resolution (its side in image
        pixels), then resized to ``size`` with area averaging, so a large face is not aliased.
        Returns ``(crop (size, size) uint8, angle in degrees, (3, 3) map from image to crop pixels)``.
        """
        scale = math.hypot(to_square[0, 0], to_square[1, 0])  # face sides per image pixel
        angle = math.degrees(math.atan2(to_square[1, 0], to_square[0, 0]))
        extent = 1 + 2 * self.margin  # the crop's side in face sides
        pixels = max(int(round(extent / scale)), 1)  # ... and in image pixels
        to_pixels = np.array([[pixels / extent, 0, pixels / 2], [0, pixels / extent, pixels / 2], [0, 0, 1]]) @ to_square
        gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
        square = cv2.warpAffine(gray, to_pixels[:2], (pixels, pixels), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
        interpolation = cv2.INTER_AREA if pixels > self.size else cv2.INTER_LINEAR
        crop = cv2.resize(square, (self.size, self.size), interpolation=interpolation)
        to_crop = np.diag([self.size / pixels, self.size / pixels, 1.0]) @ to_pixels
        return crop, -angle, to_crop

    def __call__(self, image_bgr: np.ndarray) -> np.ndarray | None:
        """``(H, W, 3)`` uint8 BGR → ``(size, size)`` uint8 grayscale face, or None without a face."""
        return self.crop_details(image_bgr).crop

    def crop_source(self, data: bytes, source: str = "<bytes>") -> CropResult:
        """Read the image file ``data`` and crop it; never raises for a bad file (see ``STATUSES``)."""
        try:
            image, notes, scale = read_image(data, self.max_side)
        except ImageReadError as error:
            return CropResult(source, error.status, notes=(str(error),))
        except Exception as error:  # a decoder failing in a way not foreseen: this file's outcome, not the run's
            return CropResult(source, "error", notes=(f"while reading: {type(error).__name__}: {error}",))
        size = (int(round(image.shape[1] * scale)), int(round(image.shape[0] * scale)))
        try:
            details = self.crop_details(image)
        except Exception as error:  # one odd image must not stop a run over thousands
            return CropResult(source, "error", notes=notes + (f"{type(error).__name__}: {error}",), image_size=size)
        if details.chosen is None:
            return CropResult(source, "no_face", notes=notes, image_size=size)
        detections = details.detections
        landmarks = None if detections.landmarks is None else detections.landmarks[details.chosen] * np.float32(scale)
        return CropResult(source, "face" if len(detections) == 1 else "several_faces", details.crop, len(detections),
                          detections.boxes[details.chosen] * np.float32(scale),
                          float(detections.scores[details.chosen]), notes, landmarks, size)

    def __repr__(self) -> str:
        return f"<FaceCropper {self.settings}>"


# ------------------------------------------------------------------------- cache (minimtl.crop_cache.CropCache)
def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/minimtl/faces``, or ``~/.cache/minimtl/faces``: where :class:`CropCache` lives."""
    return user_cache_dir("faces")


# ---------------------------------------------------------------- many images
def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def list_sources(source: str | os.PathLike) -> tuple[list[str], list[str]]:
    """The image names in a folder (recursively) or archive (``.tar``, ``.tar.gz``, ``.tgz``, ``.zip``).

    Returns ``(images, ignored)``: names that look like images (by suffix), and the other
    files, which are reported, never silently dropped.  Reading: :class:`minimtl.archives.FileSource`.
    """
    names = FileSource(source).names()
    images = [n for n in names if is_image_name(n)]
    ignored = [n for n in names if not is_image_name(n)]
    return images, ignored


def _too_large_file(size: int) -> tuple[str, str]:
    return "too_large", (f"the file has {size / 2 ** 30:.1f} GiB, more than the {MAX_FILE_BYTES // 2 ** 20} MiB "
                         f"an image file may have")


Item = tuple[str, "bytes | None", "str | tuple[str, str] | None"]


def iter_bytes(source: str | os.PathLike, names: Iterable[str]) -> Iterator[Item]:
    """Yield ``(name, data, error)`` for each wanted name of a folder or archive, in archive order for tars.

    ``error`` (when ``data`` is None) is a message, or ``(status, message)`` for a file too large to read.
    Every wanted name is yielded, also when the archive breaks off before it.
    """
    files = FileSource(source)
    wanted, seen = set(names), set()
    try:
        for name, data, error in files.read_each(wanted, max_bytes=MAX_FILE_BYTES):
            seen.add(name)
            if isinstance(error, MemberTooLarge):
                yield name, None, _too_large_file(error.size)
            else:
                yield name, data, None if error is None else str(error)
    except ArchiveError as error:
        message = f"the archive breaks off before this file: {error}"
    else:
        message = f"not found in {files.path}: it ends before this member (truncated?)"
    for name in sorted(wanted - seen):
        yield name, None, message


_worker_cropper: FaceCropper | None = None
_worker_cache: CropCache | None = None

SINGLE_THREAD_ENVIRONMENT = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                                    "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "MINIMTL_THREADS")}
FILES_PER_TASK = 32  # images sent to a worker at once: few enough to lose little when one dies
TASKS_IN_FLIGHT = 4  # per worker: bounds the bytes read ahead of the workers


def _start_worker(cropper: FaceCropper, cache_folder: str | None) -> None:
    global _worker_cropper, _worker_cache
    cv2.setNumThreads(1)
    _worker_cropper = cropper
    _worker_cache = CropCache(cache_folder) if cache_folder is not None else None


def _crop_one(item: Item) -> CropResult:
    name, data, error = item
    if data is None:
        status, message = error if isinstance(error, tuple) else ("unreadable", error or "could not be read")
        return CropResult(name, status, notes=(message,))
    return crop_with_cache(_worker_cropper, data, name, _worker_cache)


def _crop_task(items: list[Item]) -> list[CropResult]:
    return [_crop_one(item) for item in items]


def crop_with_cache(cropper: FaceCropper, data: bytes, source: str, cache: CropCache | None) -> CropResult:
    """``cropper.crop_source`` through ``cache`` (None: no cache)."""
    if cache is None:
        return cropper.crop_source(data, source)
    digest = cache.digest(data)
    result = cache.get(cropper, digest, source)
    if result is None:
        result = cropper.crop_source(data, source)
        cache.put(cropper, digest, result)
    return result


def _tasks(items: Iterable[Item], size: int) -> Iterator[list]:
    task = []
    for item in items:
        task.append(item)
        if len(task) == size:
            yield task
            task = []
    if task:
        yield task


def crop_many(cropper: FaceCropper, items: Iterable[Item], *, workers: int = 1,
              cache_folder: str | os.PathLike | None = None, progress: bool = True, total: int | None = None,
              description: str = "cropping faces") -> Iterator[CropResult]:
    """``CropResult`` for every ``(name, bytes or None, read error or None)`` item, in worker processes.

    Results come in the order the workers finish them.  With ``workers > 1``
    each worker is a fresh interpreter running its kernels on one thread (the
    parallelism is across images).  A worker that dies (killed, out of memory)
    costs only its task: the task is run again in a new pool, and if its
    images kill a worker a second time they are run one by one, each in a
    pool of its own, and the one that still kills it is reported with status
    ``"error"`` by name.  The run always ends.
    """
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    cache_arg = None if cache_folder is None else str(cache_folder)
    bar = tqdm(total=total, unit="image", desc=description, disable=not progress)
    try:
        if workers == 1:
            _start_worker(cropper, cache_arg)
            for item in items:
                yield _crop_one(item)
                bar.update()
            return
        context = multiprocessing.get_context("spawn")  # fresh interpreters read the thread limits below
        saved = {key: os.environ.get(key) for key in SINGLE_THREAD_ENVIRONMENT}
        os.environ.update(SINGLE_THREAD_ENVIRONMENT)

        def new_pool(size: int = workers) -> ProcessPoolExecutor:
            return ProcessPoolExecutor(size, mp_context=context, initializer=_start_worker,
                                       initargs=(cropper, cache_arg))

        pool = None
        try:
            pool = new_pool()
            pending: dict = {}
            retry: list[list] = []  # tasks whose worker died once
            tasks = _tasks(items, FILES_PER_TASK)
            exhausted = False
            while True:
                broken = False  # the pool lost a worker: every task not yet finished must run again
                while not exhausted and len(pending) < TASKS_IN_FLIGHT * workers:
                    task = next(tasks, None)
                    if task is None:
                        exhausted = True
                        break
                    try:
                        pending[pool.submit(_crop_task, task)] = task
                    except BrokenProcessPool:  # a worker died since the last wait
                        retry.append(task)
                        broken = True
                        break
                if not pending and not broken:
                    break
                done = set(pending) if broken else wait(pending, return_when=FIRST_COMPLETED)[0]
                for future in done:
                    if broken and not future.done():
                        continue
                    task = pending.pop(future)
                    try:
                        results = future.result()
                    except BrokenProcessPool:
                        retry.append(task)
                        broken = True
                        continue
                    for result in results:
                        yield result
                        bar.update()
                if broken:  # every task still pending was lost with the pool: run them again
                    retry.extend(pending.values())
                    pending.clear()
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = new_pool()
                    for task in retry:
                        for result in _run_alone(new_pool, task):
                            yield result
                            bar.update()
                    retry.clear()
            pool.shutdown()
        except BaseException:  # the source broke off, or Ctrl-C: stop the workers rather than leave them running
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    finally:
        bar.close()


def _run_alone(new_pool, task: list) -> list[CropResult]:
    """Run again a task that lost its worker: whole, in a fresh worker; if that one dies too, image by image,
    each in a worker of its own, naming the image that still kills it."""
    from concurrent.futures.process import BrokenProcessPool

    def in_own_worker(part: list) -> list[CropResult]:
        with new_pool(1) as pool:
            return pool.submit(_crop_task, part).result()

    try:
        return in_own_worker(task)
    except BrokenProcessPool:
        pass
    results = []
    for item in task:
        try:
            results += in_own_worker([item])
        except BrokenProcessPool:
            results.append(CropResult(item[0], "error", notes=("the worker process died while cropping this image "
                                                                "(killed, or out of memory)",)))
    return results


def crop_images(source: str | os.PathLike, cropper_options: dict | None = None, *, workers: int | None = None,
                cache_folder: str | os.PathLike | None = None, use_cache: bool = True,
                progress: bool = True) -> tuple[list[CropResult], list[str]]:
    """Crop every image in a folder or archive.

    Args:
        source: folder, ``.tar``, ``.tar.gz`` or ``.zip``.
        cropper_options: keyword arguments of ``FaceCropper``.
        workers: processes (default: the number of CPUs); 1 runs in this process.
            Each worker runs its kernels single-threaded: the parallelism is across images.
        cache_folder: where ``CropCache`` lives (default ``default_cache_dir()``).
        use_cache: False to neither read nor write the cache.
        progress: tqdm progress bar.

    Returns:
        ``(results, ignored)``: one ``CropResult`` per image name, in name order, and
        the names that were skipped because they are not named as images.
    """
    cropper = FaceCropper(**dict(cropper_options or {}))
    names, ignored = list_sources(source)
    cache_arg = None
    if use_cache:
        cache_arg = cache_folder if cache_folder is not None else default_cache_dir()
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    results = {result.source: result for result in crop_many(cropper, iter_bytes(source, names), workers=workers,
                                                              cache_folder=cache_arg, progress=progress,
                                                              total=len(names))}
    for name in names:  # a member listed but not yielded (e.g. a damaged archive) is still reported
        results.setdefault(name, CropResult(name, "unreadable", notes=("not found when reading the archive",)))
    return [results[name] for name in names], ignored


def summarize(results: list[CropResult], ignored: list[str] = ()) -> dict:
    """Counts per status, and the names behind every status other than ``face``."""
    counts = {status: 0 for status in STATUSES}
    for result in results:
        counts[result.status] += 1
    return {
        "images": len(results),
        "faces_cropped": sum(r.has_face for r in results),
        "counts": {k: v for k, v in counts.items() if v},
        "problems": {status: [{"source": r.source, "notes": list(r.notes)} for r in results if r.status == status]
                     for status in STATUSES if status != "face" and counts[status]},
        "ignored_not_images": list(ignored),
    }
