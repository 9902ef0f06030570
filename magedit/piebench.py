"""PIE-Bench (Ju et al., "PnP Inversion: Boosting Diffusion-based Editing with 3 Lines of Code",
ICLR 2024; https://github.com/cure-lab/PnPInversion) as its authors distribute it: the reader,
the mask decoder, its metrics computed as its evaluation code computes them, and its published
rows beside ours.

The data set (700 photos, 512 x 512, ten edit types) is given out by its authors on request, so
it is not shipped; ``make_sample`` writes a few of our ``assets/`` photos in exactly its format.

Format: a folder with ``mapping_file.json`` (12-digit id -> entry) and ``annotation_images/``.
An entry holds ``image_path`` (relative to ``annotation_images/``), ``original_prompt`` and
``editing_prompt`` (the changed words in square brackets), ``editing_instruction``,
``editing_type_id`` ("0" to "9"), ``blended_word`` ("source target", may be empty) and ``mask``:
a run-length encoding of the edited region over the row-major 512 x 512 image, a flat list
``[start, length, start, length, ...]``.

The metrics are those of ``evaluation/evaluate.py`` and ``evaluation/matrics_calculator.py`` of
that repository (read at commit f480116), each noted where it is computed. Where they differ from
our Table-1 metrics (``magedit.evaluate``) both are kept under different names: PIE-Bench's
structure distance feeds DINO 0-255 pixel values normalised as if they were 0-1, and it measures
whole images; ours measures the mask's bounding box with 0-1 pixels.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from magedit import images
from magedit.dataset import Item, default_assets

if TYPE_CHECKING:
    from magedit.evaluate import Metrics

MAPPING_FILE = "mapping_file.json"
IMAGES_DIR = "annotation_images"
SIZE = (512, 512)  # every PIE-Bench photo and mask
# editing_type_id -> its name in the paper, and the preset our edit uses for it (tau1: the
# colour and texture presets keep the layout through a long cross-attention injection; edits
# that change what is there use the object preset).
TYPES = {
    "0": ("random", "object"),
    "1": ("change object", "object"),
    "2": ("add object", "object"),
    "3": ("delete object", "object"),
    "4": ("change content", "object"),
    "5": ("change pose", "object"),
    "6": ("change color", "color"),
    "7": ("change material", "texture"),
    "8": ("change background", "texture"),
    "9": ("change style", "texture"),
}
# Our result columns (results.csv), their evaluate.py metric names, with the scale and the
# header of PIE-Bench's tables, in its column order. The source-image CLIP score is computed as
# theirs is but not tabled (their Table 1 has no column for it).
COLUMNS = (
    ("structure_distance", "Structure distance ×10³ (↓)", 1e3),
    ("psnr_unedit_part", "Background PSNR (↑)", 1.0),
    ("lpips_unedit_part", "Background LPIPS ×10³ (↓)", 1e3),
    ("mse_unedit_part", "Background MSE ×10⁴ (↓)", 1e4),
    ("ssim_unedit_part", "Background SSIM ×10² (↑)", 1e2),
    ("clip_similarity_target_image", "CLIP whole (↑)", 1.0),
    ("clip_similarity_target_image_edit_part", "CLIP edited (↑)", 1.0),
)
METRICS = (*(name for name, _, _ in COLUMNS), "clip_similarity_source_image")
# The same metrics of the raw decoded edit (before our compositing puts the photo's own pixels
# back outside the mask): the published rows are of raw prompt-to-prompt outputs.
RAW = "raw_"
RAW_METRICS = tuple(RAW + name for name in METRICS)
# Published rows, SD v1.4 with prompt-to-prompt editing: Ju et al. (ICLR 2024), Table 1, as
# quoted in our issue 17 (the columns the quote gives; the others are left blank, not guessed).
PUBLISHED = {
    "DDIM + P2P": (69.43, 17.87, 208.80, None, None, 25.01, 22.44),
    "Null-text inversion + P2P": (13.44, 27.03, 60.67, None, None, 24.75, 21.86),
    "Negative-prompt inversion + P2P": (16.17, 26.21, 69.01, None, None, 24.61, 21.87),
    "Direct inversion + P2P": (11.65, 27.22, 54.55, None, None, 25.02, 22.10),
}
PUBLISHED_SOURCE = (
    "Ju et al., PnP Inversion (ICLR 2024), Table 1: SD v1.4, prompt-to-prompt editing, 700 "
    "images; MSE and SSIM columns not quoted here"
)
_BRACKETS = re.compile(r"\[([^\[\]]*)\]")


# ----------------------------------------------------------------------------------------------
# Masks


def mask_decode(encoded: Sequence[int], shape: tuple[int, int] = SIZE, border: bool = True):
    """PIE-Bench's mask: (H, W) bool, True in the edited region. As ``mask_decode`` in their
    ``evaluation/evaluate.py``: pairs ``start, length`` over the row-major image, a run that
    would pass the end cut at the end; then, with ``border`` (theirs always), the first and last
    rows and columns set True "to avoid annotation errors in boundary". Without ``border``: the
    annotation alone (what our edit changes; the metrics use their rule)."""
    if len(encoded) % 2:
        raise ValueError(f"a PIE-Bench mask is pairs of start, length; got {len(encoded)} numbers")
    length = shape[0] * shape[1]
    flat = np.zeros(length, bool)
    for start, run in zip(encoded[::2], encoded[1::2], strict=True):
        start, run = int(start), int(run)
        if start < 0 or run < 0:
            raise ValueError(f"a PIE-Bench mask run starts at {start} with length {run}")
        flat[start : start + max(0, min(run, length - start))] = True
    mask = flat.reshape(shape)
    if border:
        mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = True
    return mask


def mask_encode(mask: np.ndarray) -> list[int]:
    """The run-length encoding ``mask_decode(..., border=False)`` reads back: ``[start, length,
    ...]`` of the True runs of the row-major flattened (H, W) mask."""
    flat = np.concatenate([[False], np.asarray(mask, bool).ravel(), [False]])
    edges = np.flatnonzero(flat[1:] != flat[:-1])
    starts, ends = edges[::2], edges[1::2]
    return [int(v) for pair in zip(starts, ends - starts, strict=True) for v in pair]


# ----------------------------------------------------------------------------------------------
# Prompts and items


def plain(prompt: str) -> str:
    """A PIE-Bench prompt without its square brackets (as their evaluation reads it)."""
    return prompt.replace("[", "").replace("]", "")


def bracketed_words(prompt: str) -> list[str]:
    """The words inside the square brackets of a PIE-Bench prompt, in order, each once."""
    words = [w for span in _BRACKETS.findall(prompt) for w in span.split()]
    return list(dict.fromkeys(w.strip(".,;:!?\"'") for w in words if w.strip(".,;:!?\"'")))


@dataclass(frozen=True)
class Entry:
    """One mapping_file.json entry, checked."""

    id: str
    image: Path
    source: str  # without brackets
    target: str
    words: tuple[str, ...]  # the editing prompt's bracketed words, function words left out
    category: str  # editing_type_id
    blended: str
    encoded: tuple[int, ...]


def load(folder: str | os.PathLike[str]) -> list[Entry]:
    """Read and check ``folder/mapping_file.json``: every entry, every image. Raises
    FileNotFoundError/ValueError naming the entry and the fix."""
    from magedit.prompts import STOPWORDS

    folder = Path(folder).expanduser()
    path = folder / MAPPING_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no {MAPPING_FILE} in '{folder}'; give the PIE-Bench folder (the one holding "
            f"{MAPPING_FILE} and {IMAGES_DIR}/)"
        )
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not JSON ({error})") from None
    if not isinstance(mapping, dict) or not mapping:
        raise ValueError(f"{path} must map ids to entries")
    entries = []
    for key, item in mapping.items():
        where = f"{MAPPING_FILE} entry '{key}'"
        if not re.fullmatch(r"[0-9A-Za-z_-]{1,64}", str(key)):
            raise ValueError(f"{where}: the id cannot name a file")
        try:
            image = folder / IMAGES_DIR / item["image_path"]
            category = str(item["editing_type_id"])
            source, target = item["original_prompt"], item["editing_prompt"]
            if not (isinstance(source, str) and isinstance(target, str)):
                raise TypeError("the prompts must be text")
            if not isinstance(item["mask"], list):
                raise TypeError("the mask must be a list of numbers")
            encoded = tuple(int(v) for v in item["mask"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"{where}: needs image_path, original_prompt, editing_prompt, editing_type_id "
                f"and a mask list of numbers ({type(error).__name__}: {error})"
            ) from None
        if category not in TYPES:
            raise ValueError(f"{where}: editing_type_id '{category}' is not one of 0-9")
        if not image.resolve().is_relative_to((folder / IMAGES_DIR).resolve()):
            raise ValueError(f"{where}: image_path '{item['image_path']}' leaves {IMAGES_DIR}/")
        if not image.is_file():
            raise FileNotFoundError(f"{where}: no image '{image}'")
        words = tuple(w for w in bracketed_words(target) if w.lower() not in STOPWORDS)
        entries.append(
            Entry(
                str(key),
                image,
                plain(source).strip(),
                plain(target).strip(),
                words,
                category,
                str(item.get("blended_word") or ""),
                encoded,
            )  # fmt: skip
        )
    return entries


def items(entries: Sequence[Entry]) -> list[Item]:
    """The entries as the runner's items: the type's preset, the annotated region (without the
    border rule) as the mask to edit, the bracketed words as edit words (none: the words the
    target adds), the blended word's target half as the CLIP phrase of our own metric."""

    out = []
    for number, entry in enumerate(entries, 1):
        blended = entry.blended.split()
        out.append(
            Item(
                id=entry.id,
                image=entry.image,
                mask=mask_decode(entry.encoded, border=False),
                source=entry.source,
                target=entry.target,
                words=entry.words,
                type=TYPES[entry.category][1],
                negative_word=None,
                phrase=blended[-1] if blended else None,
                line=number,
                category=entry.category,
                eval_mask=mask_decode(entry.encoded),
            )
        )
    return out


# ----------------------------------------------------------------------------------------------
# Metrics, as evaluation/matrics_calculator.py computes them


class PieMetrics:
    """PIE-Bench's metrics of one edit, with the models loaded once.

    ``metrics``: our ``evaluate.Metrics`` (its DINO ViT-B/8 and CLIP ViT-L/14, the models theirs
    load). PSNR, MSE, SSIM and LPIPS are torchmetrics', called as theirs are. LPIPS needs
    torchvision's SqueezeNet weights: when they cannot be had (offline, not cached), its column
    is NaN and ``skipped`` says why.
    """

    def __init__(self, metrics: Metrics, lpips: bool = True):
        self.metrics = metrics
        self.clip, self.dino = metrics.clip, metrics.dino
        self.skipped: dict[str, str] = {}
        self._lpips = None
        if lpips:
            try:
                from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

                self._lpips = LearnedPerceptualImagePatchSimilarity(net_type="squeeze")
            except Exception as error:  # a download that cannot happen: any error of the hub
                reason = " ".join(str(error).split())[:160]
                self.skipped["lpips_unedit_part"] = (
                    "not measured: LPIPS needs torchvision's SqueezeNet 1.1 weights, which could "
                    f"not be loaded ({type(error).__name__}: {reason})"
                )
        else:
            self.skipped["lpips_unedit_part"] = "not measured: LPIPS is off (random-weight run)"

    def measure(
        self, source: np.ndarray, edited: np.ndarray, mask: np.ndarray, source_prompt: str,
        target_prompt: str,
    ) -> dict[str, float]:  # fmt: skip
        """The eight metrics of evaluate.py's default list for one item. ``source``/``edited``:
        (512, 512, 3) uint8; ``mask``: their decoded mask (border rule included)."""
        import torch
        from torchmetrics.functional.image import (
            peak_signal_noise_ratio,
            structural_similarity_index_measure,
        )
        from torchmetrics.functional.regression import mean_squared_error

        if source.shape != edited.shape or source.shape[:2] != mask.shape:
            raise ValueError(
                f"the photo {source.shape}, the edit {edited.shape} and the mask {mask.shape} "
                "must be one size"
            )
        keep = (~mask).astype(np.float32)[..., None]  # 1 - mask, on every channel

        def tensor(image: np.ndarray, batch: bool = True) -> torch.Tensor:
            # calculate_psnr & co.: /255, times the mask, HWC -> (1,) C, H, W float32
            x = torch.from_numpy(image.astype(np.float32) / 255 * keep).permute(2, 0, 1)
            return x[None] if batch else x

        scores: dict[str, float] = {}
        scores["structure_distance"] = self.structure_distance(source, edited)
        if keep.sum() == 0:  # their "nan" when nothing is left outside the mask
            for name in ("psnr", "lpips", "mse", "ssim"):
                scores[f"{name}_unedit_part"] = math.nan
        else:
            # calculate_metric passes (src_image, tgt_image) as (img_pred, img_gt)
            a, b = tensor(source), tensor(edited)
            scores["psnr_unedit_part"] = float(peak_signal_noise_ratio(a, b, data_range=1.0))
            scores["mse_unedit_part"] = float(
                mean_squared_error(
                    tensor(source, False).contiguous(), tensor(edited, False).contiguous()
                )
            )
            scores["ssim_unedit_part"] = float(
                structural_similarity_index_measure(a, b, data_range=1.0)
            )
            scores["lpips_unedit_part"] = (
                float(self._lpips(a * 2 - 1, b * 2 - 1)) if self._lpips is not None else math.nan
            )
        scores["clip_similarity_source_image"] = self.clip.score(source, source_prompt)
        scores["clip_similarity_target_image"] = self.clip.score(edited, target_prompt)
        # calculate_clip_similarity with a mask: np.uint8(img * mask) on every channel
        inside = np.uint8(edited * mask[..., None])
        scores["clip_similarity_target_image_edit_part"] = (
            self.clip.score(inside, target_prompt) if mask.any() else math.nan
        )
        return scores

    def structure_distance(self, source: np.ndarray, edited: np.ndarray) -> float:
        """LossG.calculate_global_ssim_loss(source, edited): both whole images as float 0-255
        (not divided by 255), torchvision's Resize(224, max_size=480) then ImageNet's
        Normalize, DINO ViT-B/8's last-block keys, their cosine self-similarity, the MSE."""
        import torch
        import torch.nn.functional as F
        from torchvision.transforms import functional as TF

        from magedit.evaluate import IMAGENET_MEAN, IMAGENET_STD

        def keys(image: np.ndarray) -> torch.Tensor:
            x = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)
            x = TF.resize(x, 224, max_size=480, antialias=True)
            x = TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)
            return F.normalize(self.dino.keys_of(x[None]), dim=-1)

        # calculate_structure_distance(src, tgt) -> calculate_global_ssim_loss(tgt, src): the
        # source's self-similarity against the target's, F.mse_loss(source's, target's)
        a, b = keys(source), keys(edited)
        return float(F.mse_loss(a @ a.T, b @ b.T))


# ----------------------------------------------------------------------------------------------
# Table


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _cell(value: float | None, scale: float = 1.0) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value * scale:.2f}"


def markdown_table(rows: Sequence[dict[str, str]], skipped: dict[str, str] | None = None) -> str:
    """PIE-Bench's table: the published rows, then ours per method, overall and per edit type,
    in its column order and scales."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    header = "| Method | " + " | ".join(title for _, title, _ in COLUMNS) + " | Edits |"
    rule = "|---|" + "---|" * (len(COLUMNS) + 1)

    def number(row: dict[str, str], name: str) -> float:
        try:
            return float(row.get(name, "nan") or "nan")
        except ValueError:
            return math.nan

    def line(label: str, group: list[dict[str, str]], prefix: str = "") -> str:
        cells = [
            _cell(_mean([number(r, prefix + name) for r in group]), s) for name, _, s in COLUMNS
        ]
        return f"| {label} | " + " | ".join(cells) + f" | {len(group)} |"

    items = len({r["item"] for r in rows})
    lines = ["# PIE-Bench", "", f"{items} items, {len(rows)} edits."]
    if rows:
        settings = ", ".join(f"{k} {rows[0].get(k, '')}" for k in ("steps", "resolution",
                                                                  "inversion", "model"))  # fmt: skip
        lines += ["", f"Settings: {settings}."]
    lines += ["", "## Overall", "", header, rule]
    for label, values in PUBLISHED.items():
        lines.append(
            f"| {label} (published) | " + " | ".join(_cell(v) for v in values) + " | 700 |"
        )
    for method in methods:
        group = [r for r in rows if r["method"] == method]
        lines.append(line(f"{method} (ours, as delivered)", group))
        lines.append(line(f"{method} (ours, raw decode)", group, RAW))
    lines += [
        "",
        f'Published rows: {PUBLISHED_SOURCE}. Ours "as delivered" is the composited result '
        "(outside the grown mask the photo's own pixels, so the background columns are near "
        'perfect by construction); "raw decode" is the decoded edit before compositing, the '
        "like of the published rows.",
        "",
    ]
    for name, reason in (skipped or {}).items():
        lines.append(f"- {name}: {reason}.")
    lines += [
        "",
        "## By edit type (as delivered)",
        "",
        header.replace("Method", "Edit type · method"),
        rule,
    ]
    for category, (title, _) in TYPES.items():
        for method in methods:
            group = [r for r in rows if r["method"] == method and r.get("category") == category]
            if group:
                lines.append(line(f"{category} {title} · {method}", group))
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# Sample


def make_sample(out: str | os.PathLike[str], assets: str | os.PathLike[str] | None = None):
    """Write our ``assets/`` examples as a PIE-Bench folder in ``out``: each photo centre-cropped
    and resized to 512 x 512 under ``annotation_images/<type>/<id>.jpg``, its mask run-length
    encoded, the edit words in brackets in the editing prompt (the source's replaced words in
    brackets in the original prompt), a 12-digit id. Returns the mapping file's path."""
    from PIL import Image

    from magedit.files import write_bytes

    assets = Path(assets) if assets is not None else default_assets()
    examples = json.loads((assets / "examples.json").read_text(encoding="utf-8"))
    out = Path(out).expanduser()
    if (out / MAPPING_FILE).exists():
        raise FileExistsError(f"'{out}' already holds a {MAPPING_FILE}; choose an empty folder")
    category_of = {"color": "6", "texture": "7", "object": "1"}
    mapping = {}
    for number, example in enumerate(examples):
        key = f"{number + 1:012d}"
        photo = images.load_image(assets / example["image"])
        mask = images.load_mask(assets / example["mask"], size=photo.shape[:2])
        side = min(photo.shape[:2])
        top, left = (photo.shape[0] - side) // 2, (photo.shape[1] - side) // 2
        photo = images.resize_image(photo[top : top + side, left : left + side], SIZE)
        mask = images.resize_mask(mask[top : top + side, left : left + side], SIZE)
        category = category_of[example["preset"]]
        relative = f"{category}_{TYPES[category][0].replace(' ', '_')}/{key}.jpg"
        target = out / IMAGES_DIR / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo).save(target, quality=95)
        words = example["words"]
        negative = example.get("negative_word")
        mapping[key] = {
            "image_path": relative,
            "original_prompt": _bracket(example["source"], [negative] if negative else []),
            "editing_prompt": _bracket(example["target"], words),
            "editing_instruction": f"Make it {' '.join(words)}",
            "editing_type_id": category,
            "blended_word": f"{negative} {words[-1]}" if negative else "",
            "mask": mask_encode(mask),
        }
    path = out / MAPPING_FILE
    lines = ",\n".join(f" {json.dumps(key)}: {json.dumps(entry)}" for key, entry in mapping.items())
    write_bytes(path, ("{\n" + lines + "\n}\n").encode())
    load(out)  # the sample must read back
    return path


def _bracket(prompt: str, words: Sequence[str]) -> str:
    """``prompt`` with the first run of ``words`` (consecutive, as they appear) in brackets."""
    tokens = prompt.split()
    lowered = [t.lower().strip(".,;:!?") for t in tokens]
    wanted = [w.lower() for w in words]
    for start in range(len(tokens)):
        if wanted and lowered[start : start + len(wanted)] == wanted:
            end = start + len(wanted)
            return " ".join([*tokens[:start], "[" + " ".join(tokens[start:end]) + "]",
                             *tokens[end:]])  # fmt: skip
    return prompt
