"""What the web page's tests share: a test photo with a known object, files written from it,
brush values shaped as Gradio gives them, the handlers' services on the tiny models, and a UNet
double for faults during a job."""

from __future__ import annotations

import struct
import types
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from magedit.web import events
from magedit.web.admission import Admission
from magedit.web.job import Line
from magedit.web.limits import TIME_LIMIT
from magedit.web.services import Services

SOURCE = "a photo of a red sofa in a living room"
TARGET = "a photo of a green sofa in a living room"
SOURCE2 = "a photo of a red sofa and a table in a living room"
TARGET2 = "a photo of a green sofa and a wooden table in a living room"
H, W = 192, 256
BOX = (slice(48, 144), slice(64, 192))  # the sofa (rows, columns)
TABLE = (slice(150, 190), slice(10, 60))  # the second region
OBJECT = (128, 96)  # (x, y) on the sofa
BACKGROUND = (20, 170)
ADD = (255, 45, 85, 153)  # the brush's colours, as the editor paints them
REMOVE = (45, 140, 255, 153)


def photo(height: int = H, width: int = W) -> np.ndarray:
    """A colour gradient with a dark red rectangle (the sofa) over BOX (scaled to the size)."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 / width, y * 255 / height, 128 + 0 * x], -1)
    image = image.round().astype(np.uint8)
    image[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = (150, 30, 30)
    return image


def box(where, size: tuple[int, int] = (H, W)) -> np.ndarray:
    mask = np.zeros(size, bool)
    mask[where] = True
    return mask


def write_photo(folder: Path, name: str = "photo.png", image: np.ndarray | None = None) -> str:
    path = Path(folder) / name
    Image.fromarray(photo() if image is None else image).save(path)
    return str(path)


def write_mask(folder: Path, where, name: str = "mask.png", size=(H, W)) -> str:
    path = Path(folder) / name
    Image.fromarray(box(where, size).astype(np.uint8) * 255).save(path)
    return str(path)


def painted(*strokes: tuple[object, tuple[int, int, int, int]], size=(H, W)) -> dict:
    """A gr.ImageEditor value (type="numpy", image_mode="RGBA") with one layer holding the
    strokes: (where, RGBA colour) each, painted over a background of ``size``."""
    layer = np.zeros((*size, 4), np.uint8)
    for where, colour in strokes:
        layer[where] = colour
    background = np.dstack([photo(*size), np.full(size, 255, np.uint8)])
    return {"background": background, "layers": [layer], "composite": background}


def png_header(width: int, height: int) -> bytes:
    """A small, valid PNG whose header claims width x height RGB pixels (all rows zero; a few
    kB at most, since zero rows compress about 1000:1)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(bytes(1 + 3 * min(width, 4096)) * 4, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def request(session: str = "s1", host: str | None = None):
    """What the handlers read of a gr.Request: a session, by default on an address of its own
    (the page admits two edits per address)."""
    host = host or f"host-of-{session}"
    return types.SimpleNamespace(
        session_hash=session, headers={}, client=types.SimpleNamespace(host=host)
    )


def services(pipe=None, segmenter=None, output_dir: Path | None = None, **changes):
    """The handlers' services on the given models (None: loading it fails the test)."""

    def missing(what):
        def load():
            raise AssertionError(f"the handler loaded {what}")

        return load

    more = changes.get("more_pipelines", ())
    changes.setdefault("line", Line(slots=1 + len(more)))
    return Services(
        pipeline=(lambda: pipe) if pipe is not None else missing("the pipeline"),
        segmenter=(lambda: segmenter) if segmenter is not None else missing("Segment Anything"),
        output_dir=Path(output_dir) if output_dir is not None else Path("/nonexistent"),
        time_limit=changes.pop("time_limit", TIME_LIMIT),
        admission=Admission(),
        **changes,
    )


# The settings of the tests' edits: the paper's preset, quick enough for the tiny model.
QUICK = {
    "preset": "color",
    "iterations": 1,
    "granularity": 2.5,
    "steps": 6,
    "guidance": 7.5,
    "inversion": "direct",
    "resolution": 256,
}


def edit_request(path: str | None, mask: np.ndarray | None = None, **changes) -> events.Request:
    """A page request for the sofa edit: quick settings, the sofa as the region."""
    region2 = changes.pop("region2", None)
    region2_words = changes.pop("region2_words", "")
    region2_weight = changes.pop("region2_weight", 1.0)
    settings = dict(QUICK)
    for name in list(changes):
        if name in settings:
            settings[name] = changes.pop(name)
    text = {"source": SOURCE, "target": TARGET, "words": "", "negative_word": "", **changes}
    first = box(BOX) if mask is None else mask
    return events.Request(
        photo=path,
        settings=settings,
        regions=[(first, text["words"], 1.0), (region2, region2_words, region2_weight)],
        region2_words=region2_words,
        **text,
    )


def unet_double(pipe, monkeypatch, fault) -> list[int]:
    """Replace the pipeline's UNet call by ``fault(calls, latents, t, emb, real)``; returns the
    list of the calls' batch sizes, appended before each call."""
    real = pipe._eps
    calls: list[int] = []

    def eps(latents, t, emb):
        calls.append(latents.shape[0])
        return fault(calls, latents, t, emb, real)

    monkeypatch.setattr(pipe, "_eps", eps)
    return calls
