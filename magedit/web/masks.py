"""One session's photo and the one mask in use: where it came from (clicks, brush, mask file,
example), how much of the photo it covers, and the canvas that shows it.

The state lives in the session's ``gr.State`` (a frozen ``MaskState``; every handler returns a
new one). It holds the photo's file and hash, not its pixels, and its masks bit-packed (a 16 MP
mask is 2 MB), so a visitor costs little memory. No gradio here: the handlers in ``layout`` call
these functions, and the tests call them without a browser.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from magedit import images
from magedit.web.limits import DISPLAY_SIDE

# Where the mask in use came from, as the label names it.
SOURCES = {
    "clicks": "your clicks",
    "file": "the mask file",
    "example": "the example's mask",
    "recipe": "the recipe's mask",
}
CLICK_MODES = ("object", "background")  # what a click adds: label 1 or label 0
POINT_COLORS = {1: (22, 163, 74), 0: (220, 38, 38)}  # by label: green on the object, red off it
REGION_COLORS = ((255, 45, 85), (45, 140, 255))  # the first region red, the second blue
# The first region's tint on a red object, where red would not stand out (a red sofa): cyan,
# red's complement. "Red" is a region whose mean red exceeds its green and blue by REDDISH.
CYAN = (0, 200, 220)
REDDISH = 60


def first_region_tint(shown: np.ndarray, mask: np.ndarray) -> tuple[int, int, int]:
    """The tint of the mask in use on ``shown``: red, or cyan on a red object, so that the mask
    is visible on any object."""
    if not mask.any():
        return REGION_COLORS[0]
    red, green, blue = shown[mask].reshape(-1, 3).mean(0)
    return CYAN if red - max(green, blue) > REDDISH else REGION_COLORS[0]


ADD_RGBA = (255, 45, 85, 153)  # the brush's "add" colour, #ff2d55 at 60%
REMOVE_RGBA = (45, 140, 255, 153)  # its "remove" colour, #2d8cff at 60%


@dataclasses.dataclass(frozen=True)
class Packed:
    """A bool mask stored 8 pixels to a byte."""

    bits: np.ndarray
    shape: tuple[int, int]

    @classmethod
    def of(cls, mask: np.ndarray) -> Packed:
        return cls(np.packbits(mask, axis=None), tuple(mask.shape))

    def unpack(self) -> np.ndarray:
        count = self.shape[0] * self.shape[1]
        return np.unpackbits(self.bits, count=count).astype(bool).reshape(self.shape)


@dataclasses.dataclass(frozen=True, eq=False)
class MaskState:
    """One session's photo and mask. ``size`` is (H, W) of the photo; points are (x, y) in its
    pixels. The mask in use is ``base`` (the chosen click candidate, or the file's or the
    example's mask) grown by ``grow`` pixels, then the brush: ``added`` pixels in, ``removed``
    out. ``region2`` is the second region's mask (multi-region edits), if any."""

    photo: str | None = None  # the photo's file (Gradio's upload cache), read when editing
    key: str | None = None  # the photo's hash: its Segment Anything embedding's key
    size: tuple[int, int] | None = None
    source: str | None = None  # a key of SOURCES
    base: Packed | None = None
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    candidates: tuple[Packed, ...] = ()
    scores: tuple[float, ...] = ()
    index: int = 0
    grow: int = 0
    added: Packed | None = None
    removed: Packed | None = None
    example: str | None = None  # the example's name, when the photo came from one
    region2: Packed | None = None

    @property
    def mask(self) -> np.ndarray | None:
        """The mask in use, (H, W) bool, or None when nothing is marked."""
        if self.base is None and self.added is None:
            return None
        mask = np.zeros(self.size, bool) if self.base is None else self.base.unpack()
        if self.grow and mask.any():
            mask = images.dilate(mask, self.grow)
        if self.added is not None:
            mask |= self.added.unpack()
        if self.removed is not None:
            mask &= ~self.removed.unpack()
        return mask if mask.any() else None

    @property
    def brushed(self) -> bool:
        return self.added is not None or self.removed is not None

    def label(self) -> str:
        """What the mask in use is, in one line (plain text)."""
        if self.size is None:
            return "No photo yet: upload one or pick an example."
        mask = self.mask
        if mask is None:
            if self.points:
                return "No usable mask for these points: click again, or undo the last point."
            return "No mask yet: click the object to edit on the photo."
        source = SOURCES.get(self.source or "", "the brush")
        if self.source == "clicks":
            objects = sum(self.labels)
            source += (
                f" ({objects} on the object, {len(self.labels) - objects} off it; candidate "
                f"{self.index + 1} of {len(self.candidates)}, score {self.scores[self.index]:.2f})"
            )
        elif self.source == "example" and self.example:
            source += f" ({self.example})"
        extras = []
        if self.grow:
            extras.append(f"grown {self.grow} px")
        if self.brushed and self.source is not None:
            extras.append("refined with the brush")
        extra = f", {', '.join(extras)}" if extras else ""
        text = f"Mask in use: from {source}{extra} · {mask.mean():.1%} of the photo"
        if self.region2 is not None:
            text += f" · second region {self.region2.unpack().mean():.1%}"
        return text


# ------------------------------------------------------------------------------ the photo
class DisplayCache:
    """Photos at display size (long side at most DISPLAY_SIDE), by hash: a click re-draws the
    canvas without decoding the photo again. Bounded; thread-safe."""

    def __init__(self, size: int = 32):
        self.size = size
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, state: MaskState) -> np.ndarray:
        with self._lock:
            found = self._items.get(state.key)
            if found is not None:
                self._items.move_to_end(state.key)
                return found
        shown = display(images.load_image(state.photo))
        with self._lock:
            self._items[state.key] = shown
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return shown

    def put(self, key: str, photo: np.ndarray) -> np.ndarray:
        shown = display(photo)
        with self._lock:
            self._items[key] = shown
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return shown


DISPLAYS = DisplayCache()


def display(photo: np.ndarray) -> np.ndarray:
    """The photo at most DISPLAY_SIDE pixels long."""
    height, width = photo.shape[:2]
    scale = DISPLAY_SIDE / max(height, width)
    if scale >= 1:
        return photo
    return images.resize_image(photo, (max(1, round(height * scale)), max(1, round(width * scale))))


def new_photo(path: str, example: str | None = None) -> tuple[MaskState, np.ndarray]:
    """A photo uploaded (or an example, or a result used as input): its state, no mask, and
    the photo at display size. ValueError (from images.load_image) says what is wrong."""
    photo = images.load_image(path)
    key = images.image_hash(photo)
    state = MaskState(photo=str(path), key=key, size=photo.shape[:2], example=example)
    return state, DISPLAYS.put(key, photo)


def to_photo(state: MaskState, x: float, y: float, shown: tuple[int, int]) -> tuple[float, float]:
    """A click at (x, y) on the shown canvas, (h, w) pixels, in the photo's pixels."""
    (height, width), (h, w) = state.size, shown
    return x * width / w, y * height / h


# --------------------------------------------------------------------------- mask changes
def with_base(state: MaskState, mask: np.ndarray, source: str, **changes: Any) -> MaskState:
    """The state with ``mask`` (at the photo's size) as the base of the mask in use; the brush
    starts afresh."""
    return dataclasses.replace(
        state, base=Packed.of(mask), source=source, added=None, removed=None, **changes
    )


def with_candidates(state: MaskState, candidates: list, points, labels) -> MaskState:
    """Segment Anything's candidates for the clicks (best first): the first is in use."""
    packed = tuple(Packed.of(c.mask) for c in candidates)
    return dataclasses.replace(
        state,
        points=tuple(points),
        labels=tuple(labels),
        candidates=packed,
        scores=tuple(float(c.score) for c in candidates),
        index=0,
        base=packed[0] if packed else None,
        source="clicks" if packed else None,
        added=None,
        removed=None,
    )


def next_candidate(state: MaskState) -> MaskState:
    index = (state.index + 1) % len(state.candidates)
    return dataclasses.replace(
        state, index=index, base=state.candidates[index], added=None, removed=None
    )


def cleared(state: MaskState) -> MaskState:
    """The photo with no clicks and no mask."""
    return MaskState(
        photo=state.photo, key=state.key, size=state.size, example=state.example,
        region2=state.region2, grow=state.grow,
    )  # fmt: skip


def brushed(state: MaskState, editor: dict[str, Any] | None) -> MaskState:
    """The brush's painting (a gr.ImageEditor value over the displayed photo) as the refinement
    of the mask in use: red strokes add pixels, blue ones remove them."""
    added, removed = brush_strokes(editor, state.size)
    return dataclasses.replace(
        state,
        added=Packed.of(added) if added.any() else None,
        removed=Packed.of(removed) if removed.any() else None,
    )


def brush_strokes(
    editor: dict[str, Any] | None, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(added, removed): the pixels an editor value's layers paint in the "add" colour (or any
    colour at least as red as it is blue) and in the "remove" colour, (H, W) bool at ``size``.
    Layers are the shown photo's size and are scaled to ``size``."""
    add = np.zeros(size, dtype=bool)
    remove = np.zeros(size, dtype=bool)
    for layer in (editor or {}).get("layers") or []:
        if layer is None:
            continue
        array = np.asarray(layer)
        painted = _painted(array)
        if not painted.any():
            continue
        bluer = painted & _bluer(array)
        for target, pixels in ((add, painted & ~bluer), (remove, bluer)):
            if pixels.any():
                target |= images.load_mask(pixels, size=size)
    return add, remove


def painted_mask(editor: dict[str, Any] | None, size: tuple[int, int]) -> np.ndarray | None:
    """Every painted pixel of an editor value (any colour) at ``size``, or None."""
    added, removed = brush_strokes(editor, size)
    mask = added | removed
    return mask if mask.any() else None


def _painted(layer: np.ndarray) -> np.ndarray:
    """An editor layer's painted pixels: alpha > 0 for RGBA, non-zero for masks without alpha."""
    if layer.ndim == 3 and layer.shape[2] in (2, 4):
        return layer[..., -1] > 0
    if layer.ndim == 3:
        return (layer != 0).any(axis=2)
    return layer != 0


def _bluer(layer: np.ndarray) -> np.ndarray:
    """Pixels of an RGB(A) layer more blue than red (the "remove" brush)."""
    if layer.ndim == 3 and layer.shape[2] >= 3:
        return layer[..., 2].astype(int) > layer[..., 0].astype(int)
    return np.zeros(layer.shape[:2], dtype=bool)


# ------------------------------------------------------------------------------ drawing
def _at(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A photo-size mask at the display size (as the pipeline samples masks; a sliver may
    vanish: it is only shown)."""
    return mask if mask.shape == shape else images.resize_mask(mask, shape)


def render(state: MaskState, shown: np.ndarray, *, points: bool = True) -> np.ndarray:
    """The canvas: the shown photo with the mask in use tinted and outlined (red, or a colour
    that stands out from a red-ish region: ``first_region_tint``), the second region's in blue,
    and the clicks as green (object) and red (background) dots."""
    out = shown
    h, w = shown.shape[:2]
    for first, mask in ((True, state.mask), (False, _region2(state))):
        if mask is not None:
            small = _at(mask, (h, w))
            if small.any():
                colour = first_region_tint(shown, small) if first else REGION_COLORS[1]
                out = images.mask_overlay(out, small, color=colour)
    if not points or not state.points:
        return out if out is not shown else shown.copy()
    out = out.copy() if out is shown else out
    radius = max(3, round(max(h, w) / 150))
    rows, cols = np.ogrid[:h, :w]
    height, width = state.size
    for (x, y), label in zip(state.points, state.labels, strict=True):
        cx, cy = x * w / width, y * h / height
        distance = (cols - cx) ** 2 + (rows - cy) ** 2
        out[distance <= (radius + 1.5) ** 2] = (255, 255, 255)  # a white ring on any colour
        out[distance <= radius**2] = POINT_COLORS[label]
    return out


def _region2(state: MaskState) -> np.ndarray | None:
    return None if state.region2 is None else state.region2.unpack()


def brush_background(state: MaskState, shown: np.ndarray) -> dict[str, Any]:
    """The brush editor's value: the canvas without the dots, and no paint."""
    background = render(state, shown, points=False)
    return {"background": background, "layers": [], "composite": background}
