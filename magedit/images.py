"""Load, check and resize images and masks; composite an edit back onto the original photo.

Long because uploads come from anyone: most of it is reading hostile files safely (format from
the content, size from the header before decoding, EXIF orientation, 16-bit and float arrays)
and saying in words what is wrong.

Formats used throughout this module:

- image: ``np.ndarray`` HWC ``uint8`` RGB, values in [0, 255], C-contiguous.
- mask: ``np.ndarray`` HxW ``bool``, True inside the region to edit.
- image tensor: ``torch.Tensor`` (1, 3, H, W) float in [-1, 1] (what the VAE encodes).
- mask tensor: ``torch.Tensor`` (1, 1, h, w) float holding 0 and 1.
- sizes are ``(height, width)`` in pixels; error messages say ``WIDTHxHEIGHT`` as people do.

Every function is pure (no global state). torch is imported inside the functions that need it,
so the UI can load and check images without paying for it.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import struct
import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Union

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

if TYPE_CHECKING:
    import torch

ImageSource = str | os.PathLike | bytes | bytearray | IO[bytes] | Image.Image | np.ndarray
MaskSource = Union[ImageSource, "torch.Tensor"]
SizeCheck = Callable[[Image.Image], None]

MIN_SIDE = 64
MAX_PIXELS = 16_000_000
MAX_ASPECT = 4.0
# Masks covering more than this share of the image are refused: MAG-Edit edits a region.
MAX_MASK_COVERAGE = 0.99

# The file formats we decode (PIL plugin names): what cameras, phones and browsers produce; the
# JPEG plugin also opens MPO, a camera JPEG holding several pictures. Uploads come from anyone;
# PIL's other plugins are rarely used code, and its EPS plugin runs Ghostscript on the file, so
# they are never tried.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")

# What PIL raises for a file it cannot decode: truncated data (OSError), a broken header
# (SyntaxError, ValueError, struct.error, IndexError, KeyError from a plugin's tables), a cut-off
# stream (EOFError) or a corrupt zlib stream inside a PNG.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)

# The first bytes of the formats we read (WebP is RIFF....WEBP), to tell a damaged image from a
# file that is no image at all. BMP's "BM" is too short to be sure of.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)

# EXIF Orientation (tag 0x0112) -> the transpose that shows the picture upright (EXIF 2.3, 4.6.4;
# the table of PIL's ImageOps.exif_transpose).
_ORIENTATION_TAG = 0x0112
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


# ----------------------------------------------------------------------------------------------
# Images


def load_image(
    source: ImageSource,
    *,
    min_side: int = MIN_SIDE,
    max_pixels: int = MAX_PIXELS,
    max_aspect: float = MAX_ASPECT,
) -> np.ndarray:
    """Read an image from a file, bytes or an array as HWC ``uint8`` RGB in [0, 255].

    Args:
        source: a path (str or Path), the file's bytes, a binary file object, a PIL image, or a
            numpy array HxW / HxWx3 / HxWx4 (channels last) of ``uint8`` in [0, 255] or floats
            in [0, 1].
        min_side: the shortest side allowed, in pixels.
        max_pixels: the largest width * height allowed. Checked from the file header before any
            pixel is decoded, so decompression bombs are refused without allocating them.
        max_aspect: the largest long side / short side ratio allowed.

    Returns:
        A new C-contiguous (H, W, 3) ``uint8`` array, EXIF orientation applied.

    Conversions: the first frame of animated GIF/WebP/APNG files; transparent pixels (RGBA, LA,
    PA, palette with transparency) are composited onto white; 16-bit images (I;16, I;16B, and
    I, which is read as 16-bit data) are scaled to 8 bits as ``round(v / 257)`` so 65535 -> 255;
    32-bit float (F) images in [0, 1] are scaled by 255 and those in [0, 255] are kept; grayscale,
    1-bit, CMYK, YCbCr and LAB are converted to RGB by PIL.

    Raises:
        ValueError: the source is not a readable, complete image, or its size breaks a limit.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, min_side, max_pixels, max_aspect)

    def check(im: Image.Image) -> None:
        _check_size(im.width, im.height, min_side, max_pixels, max_aspect)

    return _pil_to_rgb(_read_pil(source, check, "image"))


def processing_size(
    height: int, width: int, long_side: int = 512, multiple: int = 64
) -> tuple[int, int]:
    """The (height, width) in pixels the diffusion model works at for an image of this size.

    The long side becomes ``long_side``, the aspect ratio is kept, and each side is rounded to
    the nearest multiple of ``multiple`` (halves round up), at least ``multiple``. The image is
    never cropped. Examples: (512, 512) -> (512, 512); (480, 640) -> (384, 512);
    (1000, 3000) -> (192, 512) since 512 * 1000 / 3000 = 170.7 is nearest to 192.
    """
    for name, value in (("height", height), ("width", width), ("long_side", long_side)):
        if value < 1:
            raise ValueError(f"{name} is {value}; use a positive number of pixels")
    if multiple < 1 or long_side < multiple:
        raise ValueError(
            f"multiple is {multiple} and long_side is {long_side}; use 1 <= multiple <= long_side"
        )
    scale = long_side / max(height, width)

    def snap(side: float) -> int:
        return max(multiple, math.floor(side / multiple + 0.5) * multiple)

    return snap(height * scale), snap(width * scale)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an HWC ``uint8`` image to ``size`` = (height, width) with PIL's Lanczos filter.

    Returns a new array; a copy of the input when it already has that size.
    """
    _check_image_array(image, "image")
    height, width = _check_size_arg(size)
    if image.shape[:2] == (height, width):
        return image.copy()
    resized = Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(resized).copy()


def image_to_tensor(
    image: np.ndarray, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """An HWC ``uint8`` image as a (1, 3, H, W) tensor in [-1, 1] on ``device``.

    Computed as ``torch.from_numpy(image).float() / 127.5 - 1`` in float32 on the CPU and only
    then cast to ``dtype`` (default float32) and moved: this is the formula of the null-text /
    prompt-to-prompt code, so our latents match theirs bit for bit.
    """
    import torch

    _check_image_array(image, "image")
    tensor = torch.from_numpy(np.ascontiguousarray(image)).float() / 127.5 - 1  # (H, W, 3)
    tensor = tensor.permute(2, 0, 1).unsqueeze(0).contiguous()  # (1, 3, H, W)
    return tensor.to(device=device, dtype=torch.float32 if dtype is None else dtype)


def tensor_to_image(tensor: torch.Tensor) -> np.ndarray:
    """A (1, 3, H, W) or (3, H, W) tensor with values in [0, 1] as an HWC ``uint8`` image.

    Values are clamped to [0, 1] and converted in float32 as ``round(x * 255)`` with torch's
    round-half-to-even (the null-text code truncates instead; the two differ by at most 1).
    """
    import torch

    if tensor.ndim == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ValueError(
            f"the tensor has shape {tuple(tensor.shape)}; pass (1, 3, H, W) or (3, H, W)"
        )
    pixels = (tensor.detach().to("cpu", torch.float32).clamp(0, 1) * 255).round()
    return np.ascontiguousarray(pixels.to(torch.uint8).permute(1, 2, 0).numpy())


def image_hash(image: np.ndarray) -> str:
    """SHA-256 hex digest of an array's shape, dtype and bytes (a cache key for inversions)."""
    digest = hashlib.sha256(f"{image.shape}|{image.dtype.str}|".encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# Masks


def load_mask(source: MaskSource, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a mask as an HxW ``bool`` array, True inside the region to edit.

    Args:
        source: a path, bytes, a file object, a PIL image, a numpy array (bool, integer or float;
            HxW or HxWxC channels last) or a torch tensor (H, W), (1, H, W) or (1, 1, H, W).
        size: (height, width) of the image the mask belongs to. A mask of another size but the
            same shape (aspect ratio, up to a pixel) is resized to it with ``resize_mask``
            (nearest-neighbour, as the pipeline samples its masks); another shape is refused.

    A pixel is inside when any of its colour channels is non-zero. When the source has an alpha
    channel that is not fully opaque, pixels with alpha 0 are outside whatever their colour:
    brush layers are transparent where nothing was painted. (So a layer painted in pure black is
    empty; paint masks in a non-black colour.)

    Raises:
        ValueError: the source is unreadable, no pixel is inside (before or after resizing), or
            its shape is not the photo's.
    """
    torch = sys.modules.get("torch")  # if torch was never imported, source cannot be a tensor
    if torch is not None and isinstance(source, torch.Tensor):
        mask = _mask_from_array(_tensor_mask_to_array(source))
    elif isinstance(source, np.ndarray):
        mask = _mask_from_array(source)
    else:

        def check(im: Image.Image) -> None:
            if im.width * im.height > MAX_PIXELS:
                raise ValueError(
                    f"the mask is {im.width}x{im.height} pixels; use a mask of at most "
                    f"{MAX_PIXELS / 1e6:g} megapixels"
                )

        mask = _mask_from_pil(_read_pil(source, check, "mask"))

    if not mask.any():
        raise ValueError("the mask is empty: no pixel is marked; paint or click the region to edit")
    if size is None:
        return mask
    height, width = _check_size_arg(size)
    if mask.shape == (height, width):
        return mask
    mask_height, mask_width = mask.shape
    # Scaled to the photo only when it has the photo's shape (up to a pixel of rounding, as a
    # mask painted on a smaller display of the photo has): another shape would be stretched and
    # the edit would land in the wrong place.
    if abs(mask_width * height / mask_height - width) > 1 + 0.01 * width:
        raise ValueError(
            f"the mask is {mask_width}x{mask_height} pixels and the photo {width}x{height}: "
            "another shape, so it would be stretched onto the wrong place; give a mask of the "
            "photo's size (or of the same shape, scaled)"
        )
    out = resize_mask(mask, (height, width))
    if not out.any():
        raise ValueError(
            f"the mask marks {int(mask.sum())} pixels of {mask.shape[1]}x{mask.shape[0]} and none "
            f"is left at {width}x{height}; paint a larger region"
        )
    return out


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An HxW ``bool`` mask resized to ``size`` = (height, width) by nearest-neighbour sampling.

    Output pixel (i, j) is input pixel (floor(i * H / height), floor(j * W / width)): torch's
    ``F.interpolate(mode="nearest")``, which the MAG-Edit code uses for the latent and attention
    masks, with the scale and the product computed in float32 as torch computes them, so the
    result is the same bit for bit. Returns a new array (a copy when the size is unchanged).
    """
    _check_mask_array(mask)
    height, width = _check_size_arg(size)
    rows = _nearest_indices(mask.shape[0], height)
    cols = _nearest_indices(mask.shape[1], width)
    return mask[np.ix_(rows, cols)]


def mask_to_latent(
    mask: np.ndarray | torch.Tensor,
    size: tuple[int, int],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A mask resized to ``size`` = (h, w) as a float (1, 1, h, w) tensor of 0s and 1s.

    ``mask`` is HxW (numpy or tensor) or a tensor (1, H, W) / (1, 1, H, W); a pixel is inside
    when it is non-zero. The result is ``resize_mask`` of it: bit for bit the MAG-Edit code's
    ``(F.interpolate(mask_1x1HW.float(), size=size) != 0).float()`` (default "nearest" mode,
    source index ``floor(i * H / h)``) for the latent and every attention resolution. Computed
    on the CPU, then moved to ``device``.
    """
    import torch

    if isinstance(mask, np.ndarray):
        if mask.ndim != 2:
            raise ValueError(f"the mask array has shape {mask.shape}; pass an HxW mask")
        array = mask != 0
    else:
        tensor = mask
        while tensor.ndim < 4:
            tensor = tensor.unsqueeze(0)
        if tensor.ndim != 4 or tensor.shape[:2] != (1, 1):
            raise ValueError(
                f"the mask has shape {tuple(mask.shape)}; pass (H, W), (1, H, W) or (1, 1, H, W)"
            )
        array = tensor[0, 0].detach().cpu().numpy() != 0
    latent = torch.from_numpy(resize_mask(array, size)).float()[None, None]  # (1, 1, h, w)
    return latent if device is None else latent.to(device)


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Grow (pixels > 0) or shrink (pixels < 0) an HxW ``bool`` mask by a disk of that radius.

    The disk holds the offsets (dy, dx) with dy^2 + dx^2 <= pixels^2: growing adds every pixel
    whose Euclidean distance to the mask is at most ``|pixels|``, shrinking removes every mask
    pixel at most that far from a pixel outside it. Pixels beyond the image border count as
    outside when growing and do not erode the mask when shrinking, so a region that touches the
    border keeps touching it. 0 returns a copy. Returns a new array. Well under a second on a
    4000 x 3000 mask at any radius: one distance transform.
    """
    _check_mask_array(mask)
    if pixels == 0 or not mask.any():
        return mask.copy()
    radius = abs(int(pixels))
    height, width = mask.shape
    x0, y0, x1, y1 = mask_bbox(mask)
    # Only pixels within `radius` of the mask's bounding box can change either way.
    top, bottom = max(y0 - radius, 0), min(y1 + radius, height)
    left, right = max(x0 - radius, 0), min(x1 + radius, width)
    crop = mask[top:bottom, left:right]
    out = mask.copy()
    if pixels > 0:
        # The distance of each pixel to the nearest mask pixel; sqrt of an integer, so the
        # comparison is exactly dy^2 + dx^2 <= radius^2.
        out[top:bottom, left:right] = ndimage.distance_transform_edt(~crop) <= radius
    elif not crop.all():  # else nothing outside the mask is in reach, and the border never erodes
        out[top:bottom, left:right] = ndimage.distance_transform_edt(crop) > radius
    return out


def feather(mask: np.ndarray, pixels: float) -> np.ndarray:
    """Soften an HxW ``bool`` mask into a ``float32`` alpha in [0, 1] with a Gaussian blur.

    ``pixels`` is the standard deviation of the Gaussian (PIL's ``GaussianBlur`` radius); the
    blur works on 8 bits, so alpha is a multiple of 1/255 and exactly 1 far inside the mask.
    0 returns the mask as 0.0 / 1.0.
    """
    _check_mask_array(mask)
    if pixels < 0:
        raise ValueError(f"feather is {pixels} pixels; use 0 or more")
    if pixels == 0:
        return mask.astype(np.float32)
    blurred = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(pixels))
    return np.asarray(blurred, dtype=np.float32) / 255


def composite_band(shape: tuple[int, ...]) -> int:
    """How far past the mask, in pixels, ``composite`` lets an edit reach by default in an image
    of ``shape`` (H, W) or (H, W, C): 1% of the long side, rounded (halves to even), at least 2.
    Every pixel farther from the mask is the original's, so pixel metrics are measured outside
    this band."""
    return max(2, round(0.01 * max(shape[:2])))


def composite(
    original: np.ndarray,
    edited: np.ndarray,
    mask: np.ndarray,
    *,
    dilate_px: int | None = None,
    feather_px: float | None = None,
) -> np.ndarray:
    """Paste the edited region onto the full-resolution original.

    Args:
        original: HWC ``uint8`` RGB at the photo's own resolution.
        edited: HWC ``uint8`` RGB of any size (the processing size); resized to the original's
            size with Lanczos.
        mask: HxW ``bool`` at the original's resolution.
        dilate_px: how far past the mask the edit may reach, in pixels; default
            ``composite_band(original.shape)``, 1% of the long side, at least 2.
        feather_px: standard deviation of the blend's Gaussian ramp; default ``dilate_px / 4``.

    The blend weight is ``feather(dilate(mask, dilate_px // 2), feather_px)`` times the region
    ``dilate(mask, dilate_px)``: the ramp is centred in the band around the mask, so it is about
    0.98 on the mask's edge, 1 deep inside it, near 0 at the region's edge and 0 beyond it.

    Guarantee: every pixel outside ``dilate(mask, dilate_px)`` is bit-identical to the
    original's (selected with ``np.where``, no arithmetic), and pixels deep inside the mask are
    the resized edit's.

    Returns:
        A new HWC ``uint8`` array with the original's shape.
    """
    _check_image_array(original, "original image")
    _check_image_array(edited, "edited image")
    _check_mask_array(mask)
    height, width = original.shape[:2]
    if mask.shape != (height, width):
        raise ValueError(
            f"the mask is {mask.shape[1]}x{mask.shape[0]} pixels but the image is "
            f"{width}x{height}; load the mask with load_mask(..., size=image.shape[:2])"
        )
    if dilate_px is None:
        dilate_px = composite_band(original.shape)
    if dilate_px < 0:
        raise ValueError(f"dilate_px is {dilate_px}; use 0 or more pixels")
    if feather_px is None:
        feather_px = dilate_px / 4

    edited = resize_image(edited, (height, width))
    region = dilate(mask, dilate_px)
    alpha = feather(dilate(mask, dilate_px // 2), feather_px) * region  # (H, W), 0 off region
    blended = edited.astype(np.float32)  # original + alpha * (edited - original), in place
    blended -= original
    blended *= alpha[..., None]
    blended += original
    np.rint(blended, out=blended)
    np.clip(blended, 0, 255, out=blended)
    return np.where(region[..., None], blended.astype(np.uint8), original)


# ----------------------------------------------------------------------------------------------
# Mask tools: refine the masks that clicks give. Each takes and returns HxW bool masks.


def mask_union(*masks: np.ndarray) -> np.ndarray:
    """Pixels inside any of the masks (several clicked regions edited as one). A new array."""
    if not masks:
        raise ValueError("mask_union needs at least one mask")
    _check_same_shape(masks)
    out = masks[0].copy()
    for mask in masks[1:]:
        out |= mask
    return out


def fill_holes(mask: np.ndarray, max_area: int | None = None) -> np.ndarray:
    """Fill the holes of a mask that hold at most ``max_area`` pixels (None: every hole).

    A hole is a 4-connected region outside the mask that does not touch the image's border.
    (4-connected holes pair with the 8-connected objects of ``remove_specks``: a diagonal chain of
    mask pixels closes a hole.) Returns a new array. A fraction of a second on a 4000 x 3000 mask.
    """
    _check_mask_array(mask)
    if max_area is not None and max_area < 0:
        raise ValueError(f"max_area is {max_area}; use 0 or more pixels, or None for every hole")
    labels, count = ndimage.label(~mask)  # 4-connected regions outside the mask, labels 1..count
    hole = np.ones(count + 1, bool)
    hole[0] = False  # label 0 is the mask itself
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        hole[edge] = False
    if max_area is not None:
        hole &= np.bincount(labels.ravel(), minlength=count + 1) <= max_area
    return mask | hole[labels]


def remove_specks(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop the 8-connected parts of a mask smaller than ``min_area`` pixels.

    Returns a new array. A fraction of a second on a 4000 x 3000 mask.
    """
    _check_mask_array(mask)
    if min_area < 0:
        raise ValueError(f"min_area is {min_area}; use 0 or more pixels")
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))  # 8-connected parts
    keep = np.bincount(labels.ravel(), minlength=count + 1) >= min_area
    keep[0] = False  # label 0 is outside the mask
    return keep[labels]


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The mask's bounding box ``(x0, y0, x1, y1)`` in pixels, PIL's convention: x0, y0 are the
    first column and row inside, x1, y1 one past the last (width = x1 - x0).

    Raises:
        ValueError: the mask is empty.
    """
    _check_mask_array(mask)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        raise ValueError("the mask is empty, so it has no bounding box; click or paint a region")
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def check_mask_coverage(mask: np.ndarray) -> float:
    """The share of the image the mask covers, in [0, 1].

    Raises:
        ValueError: the mask is empty, or covers more than ``MAX_MASK_COVERAGE`` of the image.
    """
    _check_mask_array(mask)
    coverage = float(mask.mean())
    if coverage == 0:
        raise ValueError("the mask is empty: no pixel is marked; paint or click the region to edit")
    if coverage > MAX_MASK_COVERAGE:
        raise ValueError(
            f"the mask covers {coverage:.1%} of the image; MAG-Edit changes a region, so mask "
            "only the object to edit"
        )
    return coverage


def mask_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    color: tuple[int, int, int] = (255, 64, 64),
    alpha: float = 0.45,
    outline: int = 2,
) -> np.ndarray:
    """The image with the mask tinted in ``color`` and outlined, for display.

    Inside the mask each pixel is ``round((1 - alpha) * pixel + alpha * color)``; the mask's
    inner band of ``outline`` pixels (``mask & ~dilate(mask, -outline)``) is ``color`` itself, so
    the outline never covers pixels outside the mask (nor runs along the image's border). Pixels
    outside the mask are the image's.

    Returns:
        A new HWC ``uint8`` array of the image's shape.
    """
    _check_image_array(image, "image")
    _check_mask_array(mask)
    if mask.shape != image.shape[:2]:
        raise ValueError(
            f"the mask is {mask.shape[1]}x{mask.shape[0]} pixels but the image is "
            f"{image.shape[1]}x{image.shape[0]}; pass the mask made for this image"
        )
    if len(color) != 3 or not all(0 <= c <= 255 for c in color):
        raise ValueError(f"color is {color}; pass (red, green, blue) with values in [0, 255]")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha is {alpha}; use a value in [0, 1]")
    if outline < 0:
        raise ValueError(f"outline is {outline}; use 0 or more pixels")
    out = image.copy()
    tint = np.asarray(color, np.float32)
    inside = image[mask].astype(np.float32)
    out[mask] = np.rint(inside * (1 - alpha) + tint * alpha).astype(np.uint8)
    if outline > 0:
        out[mask & ~dilate(mask, -outline)] = np.asarray(color, np.uint8)
    return out


# ----------------------------------------------------------------------------------------------
# Helpers


def _read_pil(source: ImageSource, check: SizeCheck, what: str) -> Image.Image:
    """Open ``source``, run ``check`` on the header, decode fully and apply EXIF orientation."""
    if isinstance(source, Image.Image):
        return _decode(source, check, what)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            found = path.is_file()
        except OSError:  # a name too long for the file system, a loop of links
            found = False
        if not found:
            raise ValueError(
                f"no {what} file named '{_short(path.name)}' was found; check the file name"
            )
        stream: IO[bytes] | Path = path
    elif isinstance(source, (bytes, bytearray, memoryview)):
        stream = io.BytesIO(bytes(source))
    elif hasattr(source, "read"):
        stream = source
    else:
        raise ValueError(
            f"cannot read {_a(what)} from a {type(source).__name__}; pass a file path, bytes, "
            "a file object, a PIL image or a numpy array"
        )
    # Image.open tries only the plugins already imported when given `formats`; importing them
    # all is cheap and happens once.
    Image.init()
    try:
        im = Image.open(stream, formats=IMAGE_FORMATS)
    except _DECODE_ERRORS as error:
        raise ValueError(_unreadable(what, error, _signature_format(stream))) from None
    with im:
        return _decode(im, check, what)


def _decode(im: Image.Image, check: SizeCheck, what: str) -> Image.Image:
    check(im)  # the header's size, before any pixel is decoded
    try:
        im.load()  # a file opens on its first frame, so animations give their first frame
    except _DECODE_ERRORS as error:
        raise ValueError(_unreadable(what, error, im.format)) from None
    method = _UPRIGHT.get(_orientation(im))
    return im if method is None else im.transpose(method)


def _orientation(im: Image.Image) -> int:
    """The EXIF (or XMP) Orientation of a loaded image, 1 (as stored) when absent or unreadable.

    Reads the tag only: ``ImageOps.exif_transpose`` also re-encodes the EXIF block, which raises
    ``struct.error`` on corrupt metadata that photos from the wild carry. Broken metadata must
    not cost the picture, so any error while parsing it means "no orientation".
    """
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - PIL's EXIF parser raises many kinds on corrupt data
        return 1
    return value if isinstance(value, int) else 1


def _short(name: str, limit: int = 80) -> str:
    """``name`` cut to ``limit`` characters, control characters shown as "?", for messages."""
    name = "".join(c if c.isprintable() else "?" for c in name)
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _signature_format(stream: IO[bytes] | Path) -> str | None:
    """The format whose signature starts the file (PNG, JPEG, GIF, WebP, TIFF), else None."""
    try:
        if isinstance(stream, Path):
            with stream.open("rb") as f:
                head = f.read(12)
        else:
            position = stream.tell()
            stream.seek(0)
            head = stream.read(12)
            stream.seek(position)
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(head, bytes):  # a file object in text mode
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return name
    return None


def _unreadable(what: str, error: BaseException, fmt: str | None = None) -> str:
    """The message for a file PIL could not open or decode; ``fmt``: the format it claims."""
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"the {what} is too large to open safely; use a smaller {what}"
    if "truncated" in str(error) or isinstance(error, EOFError):
        return f"the {what} file is incomplete (cut off); upload it again or re-save it"
    if fmt is not None:
        return (
            f"the {what} file is damaged: its {fmt} data cannot be read; upload it again or "
            "re-save it"
        )
    return f"the file is not {_a(what)} that can be read; use a PNG, JPEG or WebP file"


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _check_size(width: int, height: int, min_side: int, max_pixels: int, max_aspect: float):
    if width * height > max_pixels:
        raise ValueError(
            f"the image is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels); "
            f"use an image of at most {max_pixels / 1e6:g} megapixels"
        )
    if min(width, height) < min_side:
        raise ValueError(
            f"the image is {width}x{height} pixels; use an image at least {min_side} pixels "
            "on each side"
        )
    ratio = max(width, height) / max(min(width, height), 1)
    if ratio > max_aspect:
        raise ValueError(
            f"the image is {width}x{height} pixels, its long side {ratio:.1f} times its short "
            f"side; crop it so the long side is at most {max_aspect:g} times the short side"
        )


def _pil_to_rgb(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode == "I" or mode.startswith("I;16"):
        return _gray_to_rgb(_sixteen_bit_to_uint8(np.asarray(im)))
    if mode == "F":
        return _gray_to_rgb(_float_to_uint8(np.asarray(im), "image"))
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif "A" in im.getbands() or "a" in im.getbands():  # LA, PA, RGBA, RGBa
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    try:
        rgb = im.convert("RGB")
    except ValueError:
        raise ValueError(
            f"the image has colour mode {mode}, which cannot be converted to RGB; "
            "save it as an 8-bit PNG or JPEG"
        ) from None
    return np.array(rgb, dtype=np.uint8, order="C")


def _sixteen_bit_to_uint8(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.int64)
    if values.min() < 0 or values.max() > 65535:
        raise ValueError(
            f"the image has integer pixels from {values.min()} to {values.max()}; "
            "save it as an 8- or 16-bit image"
        )
    return np.rint(values / 257).astype(np.uint8)


def _float_to_uint8(values: np.ndarray, what: str) -> np.ndarray:
    values = values.astype(np.float32)
    if not np.isfinite(values).all():
        raise ValueError(f"the {what} has NaN or infinite values; pass finite values")
    low, high = float(values.min()), float(values.max())
    if low >= 0 and high <= 1:
        return np.rint(values * 255).astype(np.uint8)
    if low >= 0 and high <= 255:
        return np.rint(values).astype(np.uint8)
    raise ValueError(f"the {what} has float values from {low:g} to {high:g}; pass values in [0, 1]")


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))


def _array_to_rgb(
    array: np.ndarray, min_side: int, max_pixels: int, max_aspect: float
) -> np.ndarray:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] > 4:
        raise ValueError(
            f"the image array has shape {array.shape}, channels first; pass HxWxC "
            "(e.g. array.transpose(1, 2, 0))"
        )
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ValueError(f"the image array has shape {array.shape}; pass HxW, HxWx3 or HxWx4")
    if array.dtype == np.bool_:
        raise ValueError(
            "the image array is boolean (a mask?); pass uint8 values in [0, 255] or floats "
            "in [0, 1]"
        )
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"the image array has dtype {array.dtype}; pass uint8 values in [0, 255] or floats "
            "in [0, 1]"
        )
    _check_size(array.shape[1], array.shape[0], min_side, max_pixels, max_aspect)
    if array.dtype != np.uint8:
        values = array.astype(np.float32)
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise ValueError(
                "the image array has float values outside [0, 1]; pass floats in [0, 1] or "
                "uint8 in [0, 255]"
            )
        array = np.rint(values * 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        return _gray_to_rgb(array)
    if array.shape[2] == 4:
        return _pil_to_rgb(Image.fromarray(np.ascontiguousarray(array), "RGBA"))
    return np.array(array, dtype=np.uint8, order="C")


def _mask_from_pil(im: Image.Image) -> np.ndarray:
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    bands = im.getbands()
    if "A" in bands or "a" in bands:
        return _mask_from_array(np.asarray(im.convert("RGBA")))
    if len(bands) == 1:  # 1, L, I, I;16, F
        return np.asarray(im) != 0
    return _mask_from_array(np.asarray(im.convert("RGB")))


def _mask_from_array(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (2, 3, 4)):
        raise ValueError(
            f"the mask array has shape {array.shape}; pass HxW or HxWxC with C = 1, 2, 3 or 4"
        )
    if not (array.dtype == np.bool_ or np.issubdtype(array.dtype, np.number)):
        raise ValueError(f"the mask array has dtype {array.dtype}; pass bool, integers or floats")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError("the mask has NaN or infinite values; pass finite values")
    if array.ndim == 2:
        return array != 0
    has_alpha = array.shape[2] in (2, 4)
    colour = array[..., :-1] if has_alpha else array
    inside = (colour != 0).any(axis=2)
    if has_alpha:
        alpha = array[..., -1]
        opaque = np.iinfo(array.dtype).max if np.issubdtype(array.dtype, np.integer) else 1
        if (alpha != opaque).any():
            inside &= alpha != 0
    return inside


def _tensor_mask_to_array(tensor: torch.Tensor) -> np.ndarray:
    while tensor.ndim > 2 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 2:
        raise ValueError(
            f"the mask tensor has shape {tuple(tensor.shape)}; pass (H, W), (1, H, W) or "
            "(1, 1, H, W)"
        )
    return tensor.detach().cpu().numpy()


def _nearest_indices(source: int, target: int) -> np.ndarray:
    """The source index of each of ``target`` nearest-neighbour samples, floor(i * source /
    target), in float32 as torch's nearest interpolation computes it: exact integer arithmetic
    gives another index for a few sizes (2 -> 82 rows: row 41 is 41 * 2 / 82 = 1, but
    41 * float32(2 / 82) is just below 1, so torch takes row 0)."""
    scale = np.float32(source) / np.float32(target)
    index = np.floor(np.arange(target, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(index, source - 1)


def _check_image_array(image: np.ndarray, what: str) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"the {what} is {kind}; pass an HWC uint8 RGB array (use load_image)")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"the {what} has shape {image.shape}; pass an HxWx3 RGB array")


def _check_mask_array(mask: np.ndarray) -> None:
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.ndim != 2:
        shape = getattr(mask, "shape", None)
        dtype = getattr(mask, "dtype", type(mask).__name__)
        raise ValueError(
            f"the mask is {dtype} with shape {shape}; pass an HxW bool array (use load_mask)"
        )


def _check_size_arg(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size is {size}; pass (height, width) in pixels, both at least 1")
    return int(size[0]), int(size[1])


def _check_same_shape(masks: Sequence[np.ndarray]) -> None:
    for mask in masks:
        _check_mask_array(mask)
    shapes = {mask.shape for mask in masks}
    if len(shapes) > 1:
        sizes = ", ".join(f"{w}x{h}" for h, w in sorted(shapes))
        raise ValueError(f"the masks have different sizes ({sizes}); pass masks of one image")
