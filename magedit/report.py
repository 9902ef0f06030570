"""The evidence of one edit: what it left outside the mask and what it did to the attention inside.

Every result carries one (page, command line, API, ``magedit bench``), computed once per edit by
:func:`measure`, from the result alone:

- outside the mask (grown by the composite's feather band): PSNR and SSIM against the photo,
  and the number of changed pixels, for the composited result (the photo's own pixels: infinite
  PSNR, 0 changed) and for the raw decode at the photo's size, which is what shows leakage;
- inside the mask: the edit words' attention ratio (Eq. 5's token ratio; Eq. 6's spatial ratio
  for that constraint) at the first step before any guidance, and after the last guided step;
- a leakage map: where the raw decode differs from the photo outside the mask;
- the local and the whole CLIP score of the result against the target prompt, when CLIP's
  weights are at hand (``evaluate.ClipScorer``); otherwise the reason, never a made-up number.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from magedit import evaluate, images

if TYPE_CHECKING:
    from magedit.evaluate import ClipScorer
    from magedit.pipeline import EditResult

# The leakage map's colour scale: a difference of this much (0-255, mean over channels) is full
# red; the photo under it is shown greyed.
LEAKAGE_FULL_SCALE = 32.0


@dataclasses.dataclass(frozen=True)
class EditReport:
    """The numbers of one edit (see the module's docstring). Floats are ``inf`` for an identical
    region and ``nan`` where nothing is left to measure."""

    psnr_outside: float  # dB, the composited result vs the photo, outside the grown mask
    ssim_outside: float
    changed_outside: int  # pixels outside the grown mask that differ from the photo's
    raw_psnr_outside: float  # the same three for the raw decode, resized to the photo's size
    raw_ssim_outside: float
    raw_changed_outside: int
    outside_pixels: int  # how many pixels "outside" counts
    ratio_before: float  # the edit words' in-mask ratio at step 1, before any guidance
    ratio_after: float  # ... after the last guided step (the step's denoising call)
    ratio_name: str  # "token ratio" (Eq. 5) or "spatial ratio" (Eq. 6)
    clip_local: float | None  # 100 x cosine, the result cropped to the mask vs the phrase
    clip_whole: float | None  # 100 x cosine, the whole result vs the target prompt
    clip_note: str  # why the CLIP scores are missing ("" when they are there)
    phrase: str  # what the local CLIP score read

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: infinities and NaNs as the strings "inf" and "nan"."""

        def plain(value: Any) -> Any:
            if isinstance(value, float) and not math.isfinite(value):
                return str(value)
            return value

        return {k: plain(v) for k, v in dataclasses.asdict(self).items()}


def outside_region(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: outside the mask grown by the composite's feather band, where the composited
    result is the photo's own pixels."""
    return ~images.dilate(mask, images.composite_band(mask.shape))


def raw_at_photo_size(result: EditResult) -> np.ndarray:
    """The raw decode (processing size) resized to the photo's size: what the composite pastes."""
    return images.resize_image(result.image, result.composited.shape[:2])


def measure(
    result: EditResult,
    original: np.ndarray,
    clip: ClipScorer | None = None,
    clip_note: str = "",
    phrase: str | None = None,
) -> EditReport:
    """The report of ``result``, an edit of ``original`` (HWC uint8, the photo). ``clip``: the
    scorer of the CLIP scores (None: they are left out, with ``clip_note`` saying why);
    ``phrase``: what the local score reads (default: the edit words and, for a token-ratio
    edit, the noun after them: ``evaluate.target_phrase``)."""
    from magedit.prompts import STOPWORDS

    mask = result.mask
    band = images.composite_band(mask.shape)
    outside = outside_region(mask)
    raw = raw_at_photo_size(result)

    def changed(image: np.ndarray) -> int:
        return int(np.any(image[outside] != original[outside], axis=-1).sum())

    words = [w for region in result.words for w in region]
    if phrase is None:
        noun = result.config.constraint == "token_ratio"
        phrase = evaluate.target_phrase(result.target_prompt, words, STOPWORDS, noun=noun)
    clip_local = clip_whole = None
    if clip is not None:
        box = images.mask_bbox(mask)
        clip_local = clip.score(evaluate.crop(result.composited, box), phrase)
        clip_whole = clip.score(result.composited, result.target_prompt)
    before, after = ratios(result)
    return EditReport(
        psnr_outside=evaluate.psnr_outside(original, result.composited, mask, band),
        ssim_outside=evaluate.ssim_outside(original, result.composited, mask, band),
        changed_outside=changed(result.composited),
        raw_psnr_outside=evaluate.psnr_outside(original, raw, mask, band),
        raw_ssim_outside=evaluate.ssim_outside(original, raw, mask, band),
        raw_changed_outside=changed(raw),
        outside_pixels=int(outside.sum()),
        ratio_before=before,
        ratio_after=after,
        ratio_name=result.config.constraint.replace("_", " "),
        clip_local=clip_local,
        clip_whole=clip_whole,
        clip_note="" if clip is not None else clip_note or "no CLIP model was given",
        phrase=phrase,
    )


def ratios(result: EditResult) -> tuple[float, float]:
    """The edit words' in-mask ratio before guidance (step 1, first iteration: z_T untouched;
    without guidance, step 1's) and after the last guided step (its denoising call's maps, after
    the step's updates; without guidance, the step where it would have ended)."""
    config = result.config
    steps = {row["step"]: row["ratio"] for row in result.steps}
    guided = [row for row in result.losses if row["step"] == 1]
    before = guided[0]["ratio"] if guided else steps.get(1, math.nan)
    last = max(1, config.steps - config.tau2)
    return float(before), float(steps.get(last, math.nan))


def leakage_map(result: EditResult, original: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 at the photo's size: the photo greyed, the mask's region dimmed, and in red
    where the raw decode differs from the photo outside the grown mask (full red at a mean
    difference of LEAKAGE_FULL_SCALE out of 255)."""
    raw = raw_at_photo_size(result).astype(np.float32)
    photo = original.astype(np.float32)
    difference = np.abs(raw - photo).mean(-1)
    outside = outside_region(result.mask)
    strength = np.clip(difference / LEAKAGE_FULL_SCALE, 0, 1) * outside
    grey = photo.mean(-1, keepdims=True) * np.where(outside, 0.8, 0.35)[..., None]
    red = np.array([255.0, 40.0, 40.0], np.float32)
    out = grey * (1 - strength[..., None]) + red * strength[..., None]
    return np.rint(np.clip(out, 0, 255)).astype(np.uint8)


def side_by_side(panels: list[tuple[str, np.ndarray]], height: int = 320) -> np.ndarray:
    """(h, w, 3) uint8: the images side by side at ``height`` pixels, each with its label above
    it ("MAG-Edit · 6.1 s"), on white."""
    from PIL import Image, ImageDraw

    label_height, gap = 22, 6
    scaled = []
    for label, image in panels:
        width = max(1, round(image.shape[1] * height / image.shape[0]))
        scaled.append((label, images.resize_image(image, (height, width))))
    total = sum(image.shape[1] for _, image in scaled) + gap * (len(scaled) + 1)
    sheet = Image.new("RGB", (total, height + label_height + 2 * gap), "white")
    draw = ImageDraw.Draw(sheet)
    x = gap
    for label, image in scaled:
        draw.text((x + 2, gap), label, fill=(20, 20, 20))
        sheet.paste(Image.fromarray(image), (x, gap + label_height))
        x += image.shape[1] + gap
    return np.asarray(sheet)
