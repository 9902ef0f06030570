"""Hostile uploads (issue 6, items 1 and 2): every file, array, mask and click anyone can send
gives a valid RGB uint8 array or a readable ``ValueError`` that says what to do.

The corpus is generated in a fixture (PIL, numpy and hand-written PNG chunks); no file on disk is
read. Each case records its decoding time in the test's ``user_properties`` as ``seconds``
(written by ``--junitxml`` with ``-o junit_family=xunit1``; not asserted: the CPUs are shared);
the decompression bomb's memory growth is measured in a fresh process.
"""

from __future__ import annotations

import io
import json
import re
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from magedit import EditConfig
from magedit.images import (
    IMAGE_FORMATS,
    MAX_MASK_COVERAGE,
    check_mask_coverage,
    load_image,
    load_mask,
    mask_to_latent,
)
from magedit.segment import check_prompts

RED, BLUE, WHITE, BLACK = (255, 0, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


# ----------------------------------------------------------------------------------------------
# File builders


def encode(im: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png(width: int, height: int, depth: int, colour: int, row: bytes | None = None) -> bytes:
    """A PNG written chunk by chunk: every row is ``row`` (default zeros), unfiltered.

    colour is the PNG colour type: 0 gray, 2 RGB, 6 RGBA. Zero rows compress ~1000:1, so
    huge headers cost a few kB on disk.
    """
    channels = {0: 1, 2: 3, 6: 4}[colour]
    stride = (width * channels * depth + 7) // 8
    row = bytes(stride) if row is None else row
    assert len(row) == stride
    compressor = zlib.compressobj(9)
    line = b"\x00" + row
    data = b"".join(compressor.compress(line) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", data)
        + _chunk(b"IEND", b"")
    )


def png16(values: np.ndarray) -> bytes:
    """A 16-bit RGB (HxWx3) or RGBA (HxWx4) PNG of ``values`` (uint16); PIL cannot write these."""
    height, width, channels = values.shape
    raw = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, {3: 2, 4: 6}[channels], 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


def corner_photo(width: int = 96, height: int = 64) -> np.ndarray:
    """Blue, with a 16x16 red block in the stored top-left corner (to follow EXIF rotations)."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[...] = BLUE
    pixels[:16, :16] = RED
    return pixels


def exif_jpeg(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(corner_photo()), "JPEG", quality=95, exif=exif)


def noise(height: int = 256, width: int = 256, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def palette_with_transparency() -> bytes:
    im = Image.new("P", (64, 64), 0)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.paste(1, (0, 0, 32, 64))  # left half: index 1, the transparent one
    return encode(im, transparency=1)


def gray_alpha() -> bytes:
    values = np.zeros((64, 64, 2), np.uint8)
    values[:, :32] = (50, 255)  # opaque dark gray
    values[:, 32:] = (0, 0)  # transparent black
    return encode(Image.fromarray(values, "LA"))


def rgba() -> bytes:
    values = np.zeros((64, 64, 4), np.uint8)
    values[:, :32] = (255, 0, 0, 255)
    values[:, 32:] = (0, 0, 0, 0)  # transparent black: white after compositing
    return encode(Image.fromarray(values, "RGBA"))


def sixteen_bit_gray() -> bytes:
    values = np.full((64, 64), 65535, np.uint16)
    values[:, 32:] = 2570  # 10 * 257
    return encode(Image.fromarray(values))


def sixteen_bit_colour(channels: int) -> bytes:
    values = np.zeros((64, 64, channels), np.uint16)
    values[:, :32, :3] = 65535
    values[:, 32:, :3] = 2570
    if channels == 4:
        values[:, :, 3] = 65535
        values[:, :16, 3] = 0  # transparent: white
    return png16(values)


def cmyk_jpeg() -> bytes:
    ink = np.zeros((64, 64, 4), np.uint8)
    ink[:, 32:] = (255, 0, 0, 0)  # cyan ink on the right half
    return encode(Image.fromarray(ink, "CMYK"), "JPEG", quality=95)


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (64, 64), colour) for colour in (RED, BLUE, WHITE)]
    options = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, **options)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    return data


def truncated(fmt: str) -> bytes:
    data = encode(Image.fromarray(noise()), fmt)
    return data[: len(data) // 2]


def corrupt_idat() -> bytes:
    data = bytearray(png(64, 64, 8, 2))
    start = data.find(b"IDAT") + 10  # past the zlib header
    data[start : start + 8] = b"\xff" * 8
    return bytes(data)


def bad_header_crc() -> bytes:
    data = bytearray(png(64, 64, 8, 2))
    data[29:33] = b"\x00\x00\x00\x00"  # IHDR's CRC
    return bytes(data)


def eps() -> bytes:
    # PIL's EPS plugin would hand this to Ghostscript; we never try it.
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n0 0 moveto showpage\n%%EOF\n"


# ----------------------------------------------------------------------------------------------
# The corpus


@dataclass(frozen=True)
class Accept:
    """A decodable case: output (height, width) and pixels ((row, col), rgb, tolerance)."""

    shape: tuple[int, int]
    pixels: tuple[tuple[tuple[int, int], tuple[int, int, int], int], ...] = ()


@dataclass(frozen=True)
class Refuse:
    """A refused case: a regex of the ValueError's message."""

    message: str


@dataclass(frozen=True)
class Case:
    name: str
    filename: str  # the uploaded name: the extension may lie
    make: Callable[[], bytes]
    expect: Accept | Refuse


INCOMPLETE = r"^the image file is incomplete \(cut off\); upload it again or re-save it$"
NOT_IMAGE = r"^the file is not an image that can be read; use a PNG, JPEG or WebP file$"
DAMAGED_PNG = (
    r"^the image file is damaged: its PNG data cannot be read; upload it again or re-save it$"
)
TOO_SMALL = r"use an image at least 64 pixels on each side$"

# Orientation 6 = "rotate 90 degrees clockwise to show": the stored top-left corner goes to the
# top-right; 8 = "rotate 90 counter-clockwise": it goes to the bottom-left; 3 = 180 degrees.
CORPUS = [
    Case("exif orientation 6", "phone.jpg", lambda: exif_jpeg(6),
         Accept((96, 64), (((4, 59), RED, 40), ((4, 4), BLUE, 40), ((91, 59), BLUE, 40)))),
    Case("exif orientation 8", "phone.jpg", lambda: exif_jpeg(8),
         Accept((96, 64), (((91, 4), RED, 40), ((4, 4), BLUE, 40), ((4, 59), BLUE, 40)))),
    Case("exif orientation 3", "phone.jpg", lambda: exif_jpeg(3),
         Accept((64, 96), (((59, 91), RED, 40), ((4, 4), BLUE, 40)))),
    Case("exif orientation 1", "phone.jpg", lambda: exif_jpeg(1),
         Accept((64, 96), (((4, 4), RED, 40), ((59, 91), BLUE, 40)))),
    Case("palette with transparency", "p.png", palette_with_transparency,
         Accept((64, 64), (((10, 10), WHITE, 0), ((10, 50), RED, 0)))),
    Case("grayscale L", "l.png", lambda: encode(Image.new("L", (64, 64), 100)),
         Accept((64, 64), (((0, 0), (100, 100, 100), 0),))),
    Case("1-bit", "bits.png", lambda: encode(Image.new("1", (64, 64), 1)),
         Accept((64, 64), (((0, 0), WHITE, 0),))),
    Case("gray + alpha LA", "la.png", gray_alpha,
         Accept((64, 64), (((0, 0), (50, 50, 50), 0), ((0, 40), WHITE, 0)))),
    Case("16-bit gray I;16", "16.png", sixteen_bit_gray,
         Accept((64, 64), (((0, 0), WHITE, 0), ((0, 40), (10, 10, 10), 0)))),
    Case("16-bit RGB", "rgb16.png", lambda: sixteen_bit_colour(3),
         Accept((64, 64), (((0, 0), WHITE, 0), ((0, 40), (10, 10, 10), 0)))),
    Case("16-bit RGBA", "rgba16.png", lambda: sixteen_bit_colour(4),
         Accept((64, 64), (((0, 0), WHITE, 0), ((0, 20), WHITE, 0), ((0, 40), (10, 10, 10), 0)))),
    Case("CMYK JPEG", "print.jpg", cmyk_jpeg,
         Accept((64, 64), (((32, 8), WHITE, 8), ((32, 56), (0, 255, 255), 8)))),
    Case("RGBA on white", "rgba.png", rgba,
         Accept((64, 64), (((0, 0), RED, 0), ((0, 40), WHITE, 0)))),
    Case("animated GIF", "anim.gif", lambda: animated("GIF"),
         Accept((64, 64), (((9, 9), RED, 0),))),
    Case("animated WebP", "anim.webp", lambda: animated("WEBP"),
         Accept((64, 64), (((9, 9), RED, 0),))),
    Case("animated PNG", "anim.png", lambda: animated("PNG"),
         Accept((64, 64), (((9, 9), RED, 0),))),
    Case("PNG named .jpg", "photo.jpg", lambda: encode(Image.new("RGB", (64, 64), RED)),
         Accept((64, 64), (((0, 0), RED, 0),))),
    Case("JPEG named .png", "photo.png",
         lambda: encode(Image.new("RGB", (64, 64), RED), "JPEG", quality=95),
         Accept((64, 64), (((32, 32), RED, 8),))),
    Case("GIF named .webp", "photo.webp", lambda: encode(Image.new("RGB", (64, 64), BLUE), "GIF"),
         Accept((64, 64), (((0, 0), BLUE, 0),))),
    Case("exactly 64x64", "min.png", lambda: png(64, 64, 8, 2), Accept((64, 64))),
    Case("exactly 4:1", "wide.png", lambda: png(256, 64, 8, 2), Accept((64, 256))),
    Case("exactly 16 MP", "big.png", lambda: png(4000, 4000, 1, 0), Accept((4000, 4000))),
    Case("1x1", "dot.png", lambda: png(1, 1, 8, 2),
         Refuse(r"^the image is 1x1 pixels; " + TOO_SMALL)),
    Case("8000x4", "strip.png", lambda: png(8000, 4, 8, 2),
         Refuse(r"^the image is 8000x4 pixels; " + TOO_SMALL)),
    Case("63 px side", "thin.png", lambda: png(200, 63, 8, 2),
         Refuse(r"^the image is 200x63 pixels; " + TOO_SMALL)),
    Case("aspect 5:1", "banner.png", lambda: png(400, 80, 8, 2),
         Refuse(r"^the image is 400x80 pixels, its long side 5.0 times its short side; crop it so "
                r"the long side is at most 4 times the short side$")),
    Case("20 megapixels", "huge.png", lambda: png(5000, 4000, 1, 0),
         Refuse(r"^the image is 5000x4000 pixels \(20.0 megapixels\); use an image of at most 16 "
                r"megapixels$")),
    Case("15000x15000 1-bit bomb", "bomb.png", lambda: png(15000, 15000, 1, 0),
         Refuse(r"^the image is too large to open safely; use a smaller image$")),
    Case("truncated JPEG", "cut.jpg", lambda: truncated("JPEG"), Refuse(INCOMPLETE)),
    Case("truncated PNG", "cut.png", lambda: truncated("PNG"), Refuse(INCOMPLETE)),
    Case("PNG cut after its header", "cut.png", lambda: truncated("PNG")[:33],
         Refuse(DAMAGED_PNG)),
    Case("PNG with a corrupt zlib stream", "zlib.png", corrupt_idat, Refuse(DAMAGED_PNG)),
    Case("PNG with a bad header checksum", "crc.png", bad_header_crc, Refuse(DAMAGED_PNG)),
    Case("text named .png", "notes.png", lambda: b"this is not a picture\n" * 50,
         Refuse(NOT_IMAGE)),
    Case("empty file", "empty.png", lambda: b"", Refuse(NOT_IMAGE)),
    Case("random bytes", "random.jpg", lambda: np.random.default_rng(2).bytes(5000),
         Refuse(NOT_IMAGE)),
    Case("EPS (Ghostscript)", "vector.png", eps, Refuse(NOT_IMAGE)),
    Case("ICO", "icon.png", lambda: encode(Image.new("RGB", (64, 64)), "ICO"), Refuse(NOT_IMAGE)),
]  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every case written to a file under its uploaded name, in its own folder."""
    root = tmp_path_factory.mktemp("hostile")
    paths = {}
    for number, case in enumerate(CORPUS):
        folder = root / str(number)
        folder.mkdir()
        paths[case.name] = folder / case.filename
        paths[case.name].write_bytes(case.make())
    return paths


def assert_readable(error: ValueError, *secrets: str) -> None:
    """One sentence for a person: the problem, "; ", the fix; no path, errno or traceback."""
    message = str(error)
    assert "; " in message and "\n" not in message and len(message) < 200, message
    for leak in ("Traceback", "Errno", "PIL", *secrets):
        assert leak not in message, message
    assert not re.search(r"/(tmp|root|home|work|etc|usr)\b", message), message


def check_case(case: Case, source: object, secrets: tuple[str, ...] = ()) -> np.ndarray | None:
    if isinstance(case.expect, Refuse):
        with pytest.raises(ValueError, match=case.expect.message) as error:
            load_image(source)
        assert_readable(error.value, *secrets)
        return None
    out = load_image(source)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.flags.c_contiguous
    assert out.shape[:2] == case.expect.shape
    for (row, col), rgb, tolerance in case.expect.pixels:
        difference = np.abs(out[row, col].astype(int) - rgb).max()
        assert difference <= tolerance, (case.name, (row, col), out[row, col].tolist(), rgb)
    return out


@pytest.mark.parametrize("kind", ["path", "str", "bytes", "stream"])
@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_hostile_file(corpus, case: Case, kind: str, request) -> None:
    path = corpus[case.name]
    data = path.read_bytes()
    source = {"path": path, "str": str(path), "bytes": data, "stream": io.BytesIO(data)}[kind]
    start = time.perf_counter()
    check_case(case, source, secrets=(str(path.parent),))
    request.node.user_properties.append(("seconds", round(time.perf_counter() - start, 4)))


# Cases PIL itself can open (lazily, as a caller would) before handing the image to us.
PIL_CANNOT_OPEN = {
    "15000x15000 1-bit bomb",
    "PNG cut after its header",
    "PNG with a bad header checksum",
}
OPENED_BY_CALLER = [
    c
    for c in CORPUS
    if c.name not in PIL_CANNOT_OPEN and getattr(c.expect, "message", "") != NOT_IMAGE
]


@pytest.mark.parametrize("case", OPENED_BY_CALLER, ids=[c.name for c in OPENED_BY_CALLER])
def test_hostile_file_opened_by_the_caller(corpus, case: Case) -> None:
    """A PIL image the caller opened (lazily: no pixel decoded) is checked like a file."""
    with Image.open(corpus[case.name]) as im:
        check_case(case, im)


def test_the_bomb_is_refused_without_growing_memory(corpus) -> None:
    """Peak resident memory (VmHWM, Linux) of a fresh process grows by < 20 MB while the 15000 x
    15000 bomb is refused; decoding it with PIL's limit off grows it by > 200 MB (so the
    measurement would see a decode). VmHWM, not ru_maxrss: a child inherits the parent's
    ru_maxrss across fork, and pytest is larger than the bomb."""
    code = """
import json, re, sys, time
from PIL import Image
from magedit.images import load_image
def peak():  # MB
    status = open("/proc/self/status").read()
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024
data = open(sys.argv[1], "rb").read()
before = peak()
start = time.perf_counter()
try:
    load_image(data)
    error = None
except ValueError as caught:
    error = str(caught)
seconds = time.perf_counter() - start
guarded = peak() - before
Image.MAX_IMAGE_PIXELS = None
Image.open(sys.argv[1]).load()
print(json.dumps({"error": error, "guarded_mb": guarded, "seconds": seconds,
                  "decoded_mb": peak() - before}))
"""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", code, str(corpus["15000x15000 1-bit bomb"])],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
    )
    figures = json.loads(done.stdout)
    assert figures["error"] == "the image is too large to open safely; use a smaller image"
    assert figures["guarded_mb"] < 20, figures
    assert figures["decoded_mb"] > 200, figures


def test_corrupt_exif_metadata_does_not_cost_the_picture() -> None:
    """EXIF whose tag 0x0108 (declared SHORT) holds text: PIL's exif_transpose raises
    struct.error re-encoding it; we read the orientation tag only and rotate."""
    entries = [(0x0108, 2, 4, b"cam\x00"), (0x0112, 3, 1, struct.pack(">HH", 6, 0))]
    ifd = struct.pack(">H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack(">HHI", tag, kind, count) + value
    raw = b"Exif\x00\x00" + b"MM\x00\x2a" + struct.pack(">I", 8) + ifd + struct.pack(">I", 0)
    data = encode(Image.fromarray(corner_photo()), "JPEG", quality=95, exif=raw)
    out = load_image(data)
    assert out.shape == (96, 64, 3)
    assert out[4, 59, 0] > 200 and out[4, 59, 2] < 60  # red block now at the top-right
    # Unreadable EXIF (not even a TIFF header) is ignored: the picture as stored.
    data = encode(Image.fromarray(corner_photo()), "JPEG", quality=95, exif=b"Exif\x00\x00junk")
    assert load_image(data).shape == (64, 96, 3)


def test_eps_never_reaches_ghostscript(monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("the EPS plugin was used")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", fail)
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "load", fail)
    with pytest.raises(ValueError, match=NOT_IMAGE):
        load_image(eps())
    assert "EPS" not in IMAGE_FORMATS


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about corrupt TIFF metadata
def test_mutated_files_give_an_image_or_a_value_error() -> None:
    """A seeded fuzz: 1-8 random bytes changed (half in the first 200 bytes, where headers
    are), a third also cut short, in each format we read. Nothing else may escape."""
    rng = np.random.default_rng(0)
    photo = Image.fromarray(noise(72, 96))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "camera"
    seeds = [
        encode(photo, "PNG"),
        encode(photo, "JPEG", exif=exif),
        encode(photo, "PNG", exif=exif),
        encode(photo.convert("P"), "GIF"),
        encode(photo, "WEBP"),
        encode(photo, "TIFF", exif=exif),
        encode(photo, "BMP"),
        palette_with_transparency(),
    ]
    outcomes = {"image": 0, "refused": 0}
    for data in seeds:
        for _ in range(150):
            mutated = bytearray(data)
            for _ in range(int(rng.integers(1, 9))):
                end = min(len(mutated), 200) if rng.random() < 0.5 else len(mutated)
                mutated[int(rng.integers(0, end))] = int(rng.integers(0, 256))
            if rng.random() < 0.3:
                mutated = mutated[: int(rng.integers(1, len(mutated)))]
            try:
                out = load_image(bytes(mutated))
            except ValueError as error:
                assert_readable(error)
                outcomes["refused"] += 1
            else:
                assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
                outcomes["image"] += 1
    assert outcomes["image"] > 100 and outcomes["refused"] > 100, outcomes


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("a" * 5000, r"^no image file named 'a{79}…' was found; check the file name$"),
        ("no\x00pe.png", r"^no image file named 'no\?pe.png' was found"),
        (Path("/"), r"^no image file named '' was found"),  # a folder
        ([1, 2, 3], r"^cannot read an image from a list; pass a file path"),
        (None, r"^cannot read an image from a NoneType"),
        (memoryview(b"not an image"), NOT_IMAGE),
        (io.StringIO("\x89PNG text"), NOT_IMAGE),  # a file object in text mode
        (bytearray(b""), NOT_IMAGE),
    ],
    ids=["long name", "NUL in name", "folder", "list", "None", "memoryview", "text", "empty"],
)
def test_hostile_sources(source, message) -> None:
    with pytest.raises(ValueError, match=message):
        load_image(source)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((0, 0, 3), np.uint8), r"^the image is 0x0 pixels; use an image at least 64"),
        (np.zeros((1, 1, 3), np.uint8), r"^the image is 1x1 pixels"),
        (np.zeros((4, 8000, 3), np.uint8), r"^the image is 8000x4 pixels; use an image at least"),
        (np.zeros((80, 400, 3), np.uint8), r"400x80 pixels, its long side 5.0 times"),
        (np.full((64, 64, 3), np.nan, np.float32), r"float values outside \[0, 1\]"),
        (np.full((64, 64, 3), np.inf), r"float values outside \[0, 1\]"),
        (np.full((64, 64, 3), -0.5), r"float values outside \[0, 1\]"),
        (np.zeros((64, 64, 3), np.int64), r"dtype int64; pass uint8 values"),
        (np.zeros((64, 64, 3), np.uint16), r"dtype uint16; pass uint8 values"),
        (np.zeros((64, 64, 3), bool), r"boolean \(a mask\?\)"),
        (np.zeros((64, 64, 3), object), r"dtype object"),
        (np.zeros((64, 64, 3), "U1"), r"dtype <U1"),
        (np.zeros((3, 64, 64), np.uint8), r"channels first; pass HxWxC"),
        (np.zeros((64, 64, 2), np.uint8), r"pass HxW, HxWx3 or HxWx4"),
        (np.zeros((2, 64, 64, 3), np.uint8), r"pass HxW, HxWx3 or HxWx4"),
        (np.zeros(64, np.uint8), r"pass HxW, HxWx3 or HxWx4"),
    ],
    ids=lambda v: getattr(v, "shape", None) and f"{v.dtype}{v.shape}",
)
def test_hostile_arrays(array: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        load_image(array)
    assert_readable(error.value)


def test_odd_but_valid_arrays_and_images() -> None:
    base = noise(64, 96)
    out = load_image(base[::-1, ::-1])  # negative strides
    assert out.flags.c_contiguous and np.array_equal(out, base[::-1, ::-1])
    out = load_image(np.asfortranarray(base))
    assert out.flags.c_contiguous and np.array_equal(out, base)
    assert np.array_equal(load_image(base[..., :1]), np.repeat(base[..., :1], 3, axis=2))
    transparent = np.zeros((64, 64, 4), np.uint8)
    assert (load_image(transparent) == 255).all()  # fully transparent: white
    assert (load_image(np.ones((64, 64, 3), np.float64)) == 255).all()
    pil = Image.fromarray(base)
    assert np.array_equal(load_image(pil), base) and pil.size == (96, 64)  # input untouched


# ----------------------------------------------------------------------------------------------
# Masks and clicks (issue 6, item 2)


@pytest.mark.parametrize(
    ("points", "labels", "box", "message"),
    [
        ([(200, 10)], None, None, r"^the point \(200, 10\) is outside the 200x100 image; click"),
        ([(10, 100)], None, None, r"^the point \(10, 100\) is outside the 200x100 image"),
        ([(-1, 10)], None, None, r"^the point \(-1, 10\) is outside"),
        ([(10, -0.5)], None, None, r"^the point \(10, -0.5\) is outside"),
        ([(float("nan"), 10)], None, None, r"^the point \(nan, 10\) is outside"),
        ([(float("inf"), 10)], None, None, r"^the point \(inf, 10\) is outside"),
        ([(1e300, 1e300)], None, None, r"^the point \(1e\+300, 1e\+300\) is outside"),
        ([(1, 2, 3)], None, None, r"^points have shape \(1, 3\); pass a list of \(x, y\) pairs"),
        ([(10, 10)], [2], None, r"^labels are \[2\] for 1 points; pass one label"),
        ([(10, 10)], [1, 0], None, r"^labels are \[1, 0\] for 1 points"),
        ([("a", "b")], None, None, r"^points are \[\('a', 'b'\)\]; pass a list of \(x, y\) pairs"),
        ([(10, 10)], [0], None, r"^no point on the object and no box; click on the object"),
        ([], [1], None, r"^1 labels but no points"),
        (None, None, None, r"^no point on the object and no box"),
        (None, None, (0, 0, 201, 50), r"^the box \(0, 0, 201, 50\) is not inside the 200x100"),
        (None, None, (50, 50, 10, 60), r"^the box \(50, 50, 10, 60\) is not inside"),
        (None, None, (5, 5, 5, 50), r"^the box \(5, 5, 5, 50\) is not inside"),
        (None, None, (0, 0, float("nan"), 5), r"^the box is \(0, 0, nan, 5\); pass \(x0, y0, x1"),
        (None, None, (0, 0, 5), r"^the box is \(0, 0, 5\); pass \(x0, y0, x1, y1\)"),
    ],
)
def test_clicks_are_checked_against_the_image(points, labels, box, message) -> None:
    with pytest.raises(ValueError, match=message) as error:
        check_prompts(points, labels, box, (100, 200))
    assert_readable(error.value)


def test_clicks_on_the_image_edges_are_accepted() -> None:
    coords, labels, box = check_prompts(
        [(0, 0), (199.9, 99.9), (199, 0)], [1, 0, 1], (0, 0, 200, 100), (100, 200)
    )
    assert coords.tolist() == [[0, 0], [199.9, 99.9], [199, 0]]
    assert labels.tolist() == [1, 0, 1] and box.tolist() == [0, 0, 200, 100]


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.zeros((64, 64), bool), r"^the mask is empty: no pixel is marked; paint or click"),
        (np.zeros((64, 64, 4), np.uint8), r"^the mask is empty"),  # transparent layer
        (np.full((64, 64), np.nan), r"^the mask has NaN or infinite values; pass finite values"),
        (np.zeros((2, 64, 64, 1), np.uint8), r"^the mask array has shape \(2, 64, 64, 1\)"),
        (np.zeros((64, 64), object), r"^the mask array has dtype object"),
        (b"not a mask", r"^the file is not a mask that can be read"),
        (png(15000, 15000, 1, 0), r"^the mask is too large to open safely"),
        (png(5000, 4000, 1, 0), r"^the mask is 5000x4000 pixels; use a mask of at most 16"),
    ],
    ids=["empty", "transparent", "nan", "4-d", "object", "bytes", "bomb", "20 MP"],
)
def test_hostile_masks(mask, message) -> None:
    with pytest.raises(ValueError, match=message) as error:
        load_mask(mask, size=(64, 64))
    assert_readable(error.value)


def test_mask_coverage_limits() -> None:
    mask = np.zeros((100, 100), bool)
    mask[:99] = True  # 99.0%: allowed
    assert check_mask_coverage(mask) == pytest.approx(0.99) and MAX_MASK_COVERAGE == 0.99
    mask[99, :50] = True  # 99.5%
    with pytest.raises(ValueError, match=r"^the mask covers 99.5% of the image; MAG-Edit"):
        check_mask_coverage(mask)
    with pytest.raises(ValueError, match=r"^the mask is empty"):
        check_mask_coverage(np.zeros((100, 100), bool))


def test_a_mask_between_the_attention_samples_vanishes() -> None:
    """At 512 x 512 the 16x16 loss maps sample pixels 0, 32, 64, ... (nearest): a 31x31 square
    at 1..31 marks none, the same square at 0..30 marks one cell."""
    mask = np.zeros((512, 512), bool)
    mask[1:32, 1:32] = True
    assert mask_to_latent(mask, (16, 16)).sum() == 0
    assert mask_to_latent(mask, (64, 64)).sum() == 9  # latent samples 8, 16, 24 on each axis
    moved = np.roll(mask, -1, axis=(0, 1))
    assert mask_to_latent(moved, (16, 16)).sum() == 1


@pytest.fixture
def no_model_work(tiny_pipe, monkeypatch):
    """The tiny pipeline with every model call failing: checks must need none."""

    def fail(*args, **kwargs):
        raise AssertionError("model work before the inputs were checked")

    for name in ("_eps", "encode_prompt", "encode_image", "decode_latents", "invert"):
        monkeypatch.setattr(tiny_pipe, name, fail)
    return tiny_pipe


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("empty", r"^the mask is empty: no pixel is marked"),
        (
            "between samples",
            r"^the mask is too small: it vanishes at the 16x16 attention resolution",
        ),
        ("speck", r"^the mask is too small: it vanishes at the 16x16"),
        ("whole image", r"^the mask covers 100.0% of the image; MAG-Edit changes a region"),
        ("all but a corner", r"^the mask covers 99.8% of the image"),
        ("2 MP speck", r"^the mask is too small: it vanishes at the 16x12"),
    ],
)
def test_bad_masks_are_refused_before_any_model_work(no_model_work, name, message) -> None:
    size = (1200, 1600) if name == "2 MP speck" else (512, 512)
    mask = np.zeros(size, bool)
    if name == "between samples":
        mask[1:32, 1:32] = True
    elif name == "speck":
        mask[100, 100] = True
    elif name == "whole image":
        mask[:] = True
    elif name == "all but a corner":
        mask[:] = True
        mask[:20, :20] = False  # 99.8%
    elif name == "2 MP speck":
        mask[601:621, 801:821] = True  # 20 px of 1600: between two samples 100 px apart
    photo = np.zeros((*size, 3), np.uint8)
    with pytest.raises(ValueError, match=message) as error:
        no_model_work.prepare(photo, "a photo of a red sofa", "a photo of a green sofa", mask)
    assert_readable(error.value)


def test_a_good_mask_passes_the_checks_without_model_work(no_model_work) -> None:
    mask = np.zeros((512, 512), bool)
    mask[0:31, 0:31] = True  # one attention cell, 0.4% of the image
    prepared = no_model_work.prepare(
        np.zeros((512, 512, 3), np.uint8), "a photo of a red sofa", "a photo of a green sofa", mask
    )
    (region,) = prepared.regions
    assert int(region.attention_mask.sum()) == 1 and region.positions == [[5]]
    assert region.latent_mask.shape == (1, 1, 64, 64) and int(region.latent_mask.sum()) == 16
    assert EditConfig().resolution == 512


def test_hostile_photos_are_refused_by_prepare_before_any_model_work(no_model_work, corpus):
    """``prepare`` reads the photo itself: every file the loader refuses is refused there too,
    in the same readable words, before any model work."""
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    refused = [case for case in CORPUS if isinstance(case.expect, Refuse)]
    assert len(refused) > 5
    for case in refused:
        with pytest.raises(ValueError, match=case.expect.message) as error:
            no_model_work.prepare(
                corpus[case.name], "a photo of a red sofa", "a photo of a green sofa", mask
            )
        assert_readable(error.value, case.filename)
