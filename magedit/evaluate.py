"""The paper's metrics (appendix C.3) and the ones users also need, each a small function.

- Local CLIP score: CLIP ViT-L/14 (``openai/clip-vit-large-patch14``) between the edited image
  cropped to the mask's bounding box and the target phrase ("red car": the edit words and the
  noun they modify), ``100 * max(cos, 0)`` as torchmetrics' CLIPScore (the paper's figures,
  about 20, are on this scale).
- DINO-ViT self-similarity distance (Splice, Tumanyan et al.): the keys of the last block of DINO
  ViT-B/8 (``facebook/dino-vitb8``) for every token (CLS included), heads concatenated; their
  cosine self-similarity matrix for the cropped source and the cropped edit; the mean squared
  difference of the two matrices (Splice's structure loss, ``F.mse_loss``).
- PSNR and SSIM outside the mask, and the share of the edit words' attention inside the mask.

The runner that applies them to a dataset is ``magedit.bench``. Models load only when asked
(``ClipScorer.from_pretrained``), never at import; ``tiny()`` builds random-weight models from the
configs in ``magedit/data/tiny/`` for offline tests (their numbers mean nothing).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from magedit import images

CLIP_MODEL = "openai/clip-vit-large-patch14"  # appendix C.3
DINO_MODEL = "facebook/dino-vitb8"  # Splice's ViT-B/8, as the paper's footnote 10
TINY_DIR = Path(__file__).resolve().parent / "data" / "tiny"
# CLIP's and ImageNet's (DINO's) normalisation, from the models' preprocessor configs.
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Splice resizes DINO's input so the short side is 224 and the long side at most 480.
DINO_MAX_SIDE = 480
# Mask size buckets (fraction of the image's pixels). MAG-Bench sorts its masks into small,
# medium and large without saying where the borders are; these are ours.
SIZE_BUCKETS = (("small", 0.05), ("medium", 0.20), ("large", 1.0))
# At most this many words after the edit words join the CLIP phrase (the noun they modify).
PHRASE_NOUN = 2
# SSIM of Wang et al. (2004): 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03.
SSIM_SIGMA, SSIM_RADIUS, SSIM_K1, SSIM_K2 = 1.5, 5, 0.01, 0.03


# ----------------------------------------------------------------------------------------------
# Regions and phrases


def crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """HWC image -> the (y1 - y0, x1 - x0, C) window of ``box`` (a copy)."""
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]):
        raise ValueError(
            f"crop box {box} is not inside the {image.shape[1]}x{image.shape[0]} image; make the "
            "box from a mask of this image's size"
        )
    return image[y0:y1, x0:x1].copy()


def size_bucket(coverage: float) -> str:
    """``small`` (< 5% of the image), ``medium`` (< 20%) or ``large`` for a mask's coverage."""
    for name, limit in SIZE_BUCKETS:
        if coverage < limit:
            return name
    return SIZE_BUCKETS[-1][0]


def target_phrase(
    target: str, words: Sequence[str], stopwords: frozenset[str], *, noun: bool = True
) -> str:
    """The phrase the local CLIP score reads (appendix C.3: "red car" for a car turned red).

    The target prompt's words from the first edit word to the last; with ``noun``, followed by
    the words after them up to the next function word or punctuation, at most ``PHRASE_NOUN``
    words (the noun they modify): "a red car on a road", ["red"] -> "red car"; "under a starry
    evening sky", ["starry"] -> "starry evening sky". Object edits pass ``noun=False``: their
    edit words name the new object ("a dog sitting on a bed", ["dog"] -> "dog"). Words are
    matched case-insensitively, without the punctuation around them. Raises ValueError if an
    edit word is not in the target."""
    tokens = target.split()
    bare = [re.sub(r"^[\W_]+|[\W_]+$", "", t).lower() for t in tokens]
    places = []
    for word in words:
        parts = word.lower().split()
        found = [i for i in range(len(bare) - len(parts) + 1) if bare[i : i + len(parts)] == parts]
        if not found:
            raise ValueError(
                f"edit word '{word}' is not in the target prompt '{target}'; give words that "
                "appear in it, or a 'phrase'"
            )
        places.append((found[0], found[0] + len(parts)))
    start = min(p[0] for p in places)
    end = max(p[1] for p in places)
    last = end + PHRASE_NOUN if noun else end
    # A comma or full stop after a word ends the phrase there.
    while (
        end < min(last, len(tokens))
        and not re.search(r"[,.;:!?]$", tokens[end - 1])
        and bare[end]
        and bare[end] not in stopwords
    ):
        end += 1
    return " ".join(bare[start:end])


# ----------------------------------------------------------------------------------------------
# Pixel metrics outside the mask


def _outside(mask: np.ndarray, band_px: int) -> np.ndarray:
    region = images.dilate(mask, band_px) if band_px > 0 else mask
    return ~region


def _check_pair(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> None:
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(
            f"the images are {a.shape} and {b.shape}; compare two HWC images of one size"
        )
    if mask.shape != a.shape[:2]:
        raise ValueError(
            f"the mask is {mask.shape} but the images are {a.shape[:2]}; pass this image's mask"
        )


def psnr_outside(a: np.ndarray, b: np.ndarray, mask: np.ndarray, band_px: int = 0) -> float:
    """PSNR in dB (peak 255) between two HWC uint8 images over the pixels outside the mask grown
    by ``band_px`` pixels. ``inf`` when those pixels are identical; ``nan`` when none is left."""
    _check_pair(a, b, mask)
    outside = _outside(mask, band_px)
    if not outside.any():
        return math.nan
    diff = a[outside].astype(np.float64) - b[outside].astype(np.float64)
    mse = float(np.mean(diff**2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM (Wang et al. 2004: Gaussian window sigma 1.5, 11x11, data range 255),
    averaged over the colour channels; (H, W) float64, 1 where the images agree. Borders are
    reflect-padded."""
    x = torch.from_numpy(a.astype(np.float64)).permute(2, 0, 1)[:, None]  # (C, 1, H, W)
    y = torch.from_numpy(b.astype(np.float64)).permute(2, 0, 1)[:, None]
    r = SSIM_RADIUS
    g = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float64) ** 2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    # The Gaussian window is separable: a row pass then a column pass (22 taps, not 121).
    rows, cols = g.view(1, 1, 1, -1), g.view(1, 1, -1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        # Reflect padding needs more pixels than the radius; tiny images fall back to replicate.
        mode = "reflect" if min(t.shape[-2:]) > r else "replicate"
        t = F.pad(t, (r, r, r, r), mode=mode)
        return F.conv2d(F.conv2d(t, rows), cols)

    c1, c2 = (SSIM_K1 * 255) ** 2, (SSIM_K2 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.mean(0)[0].numpy()


def ssim_outside(a: np.ndarray, b: np.ndarray, mask: np.ndarray, band_px: int = 0) -> float:
    """Mean SSIM over the pixels outside the mask grown by ``band_px``; 1.0 when they are
    identical. Inside the region ``b`` takes ``a``'s pixels first, so windows that straddle the
    region's edge see only changes outside it. ``nan`` when no pixel is outside."""
    _check_pair(a, b, mask)
    outside = _outside(mask, band_px)
    if not outside.any():
        return math.nan
    b = np.where(outside[..., None], b, a)
    return float(ssim_map(a, b)[outside].mean())


def attention_in_mask(attention: np.ndarray, mask: np.ndarray) -> float:
    """The share of an attention map's mass inside the mask, in [0, 1].

    attention: (h, w) non-negative map (e.g. ``EditEvent.attention``, the edit words' map at the
    loss resolution); mask: boolean mask of any size, resized to (h, w) nearest-neighbour as the
    pipeline does. 0 for an all-zero map."""
    h, w = attention.shape
    small = images.mask_to_latent(mask, (h, w)).reshape(h, w).numpy() > 0.5
    total = float(attention.sum())
    return float(attention[small].sum()) / total if total > 0 else 0.0


# ----------------------------------------------------------------------------------------------
# Model-based metrics


def _tiny_config(name: str) -> dict[str, Any]:
    config = json.loads((TINY_DIR / f"{name}.json").read_text())
    config.pop("_comment", None)
    return config


def _to_tensor(image: np.ndarray, size: tuple[int, int], mean, std, device, dtype) -> torch.Tensor:
    """HWC uint8 -> (1, 3, h, w) normalised, resized to (h, w) = ``size`` with bicubic."""
    resized = np.array(Image.fromarray(image).resize(size[::-1], Image.Resampling.BICUBIC))
    x = torch.from_numpy(resized).permute(2, 0, 1).float().div(255)
    x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    return x[None].to(device=device, dtype=dtype)


def _features(output: Any) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output is the projected embedding;
    # transformers 4 returns the tensor itself.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipScorer:
    """Local CLIP score: ``score(crop, phrase) = 100 * max(cos(image emb, text emb), 0)``.

    Images are preprocessed as CLIP's processor does: short side resized to the model's input
    size (bicubic), centre crop, CLIP's mean/std.
    """

    def __init__(self, model, tokenizer, name: str, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.size = int(model.config.vision_config.image_size)

    @classmethod
    def from_pretrained(
        cls, model: str = CLIP_MODEL, device: torch.device | str = "cpu", dtype=None
    ) -> ClipScorer:
        """Load CLIP from the Hub (cached) or a local folder."""
        from transformers import CLIPModel, CLIPTokenizer

        clip = CLIPModel.from_pretrained(model, torch_dtype=dtype or torch.float32)
        return cls(clip, CLIPTokenizer.from_pretrained(model), model, device)

    @classmethod
    def tiny(cls, device: torch.device | str = "cpu", seed: int = 0) -> ClipScorer:
        """Random-weight CLIP (``data/tiny/clip.json``) with the real CLIP tokenizer; offline."""
        from transformers import CLIPConfig, CLIPModel

        from magedit.tokenizer import clip_tokenizer

        torch.manual_seed(seed)
        return cls(CLIPModel(CLIPConfig(**_tiny_config("clip"))), clip_tokenizer(), "tiny", device)

    def _pixels(self, image: np.ndarray) -> torch.Tensor:
        h, w = image.shape[:2]
        scale = self.size / min(h, w)
        nh, nw = max(self.size, round(h * scale)), max(self.size, round(w * scale))
        x = _to_tensor(image, (nh, nw), CLIP_MEAN, CLIP_STD, self.device, self.model.dtype)
        top, left = (nh - self.size) // 2, (nw - self.size) // 2
        return x[..., top : top + self.size, left : left + self.size]

    @torch.no_grad()
    def score(self, image: np.ndarray, text: str) -> float:
        """HWC uint8 image (already cropped) and a phrase -> CLIP score in [0, 100]."""
        ids = self.tokenizer(
            [text], padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        )
        text_emb = _features(
            self.model.get_text_features(
                input_ids=ids.input_ids.to(self.device),
                attention_mask=ids.attention_mask.to(self.device),
            )
        )
        image_emb = _features(self.model.get_image_features(pixel_values=self._pixels(image)))
        cos = F.cosine_similarity(image_emb.float(), text_emb.float()).item()
        return 100 * max(cos, 0.0)


class DinoStructure:
    """Splice's structure distance from the keys of DINO ViT's last block.

    The keys are captured by a forward hook on the last block's key projection (the model is
    not patched); its output (1, T, heads * d) is the concatenation of the heads' keys.
    """

    def __init__(self, model, name: str, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.name = name
        self.size = int(model.config.image_size)
        self.patch = int(model.config.patch_size)
        # transformers 5 names it layers.N.attention.k_proj, transformers 4 layer.N...key.
        keys = [m for n, m in self.model.named_modules() if n.endswith(("k_proj", ".key"))]
        if not keys:
            raise ValueError(f"{name}: no key projection found; use a ViT model such as DINO")
        self._key_layer = keys[-1]

    @classmethod
    def from_pretrained(
        cls, model: str = DINO_MODEL, device: torch.device | str = "cpu", dtype=None
    ) -> DinoStructure:
        """Load a DINO ViT from the Hub (cached) or a local folder."""
        from transformers import ViTModel

        vit = ViTModel.from_pretrained(
            model, add_pooling_layer=False, torch_dtype=dtype or torch.float32
        )
        return cls(vit, model, device)

    @classmethod
    def tiny(cls, device: torch.device | str = "cpu", seed: int = 0) -> DinoStructure:
        """Random-weight DINO-like ViT (``data/tiny/dino.json``); offline."""
        from transformers import ViTConfig, ViTModel

        torch.manual_seed(seed)
        vit = ViTModel(ViTConfig(**_tiny_config("dino")), add_pooling_layer=False)
        return cls(vit, "tiny", device)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """Splice's resize of an (H, W) crop: short side to the model's size, long side at most
        480, both rounded down to whole patches (at least one)."""
        scale = min(self.size / min(height, width), DINO_MAX_SIDE / max(height, width))
        return tuple(
            max(self.patch, int(side * scale) // self.patch * self.patch)
            for side in (height, width)
        )

    @torch.no_grad()
    def keys(self, image: np.ndarray, size: tuple[int, int] | None = None) -> torch.Tensor:
        """HWC uint8 -> (T, heads * d) keys of the last block (T = 1 + patches)."""
        size = size or self.input_size(*image.shape[:2])
        x = _to_tensor(image, size, IMAGENET_MEAN, IMAGENET_STD, self.device, self.model.dtype)
        return self.keys_of(x)

    @torch.no_grad()
    def keys_of(self, pixels: torch.Tensor) -> torch.Tensor:
        """(1, 3, h, w) input, already resized and normalised -> (T, heads * d) keys of the last
        block (for a preprocessing other than ours: PIE-Bench's)."""
        x = pixels.to(device=self.device, dtype=self.model.dtype)
        captured: list[torch.Tensor] = []
        handle = self._key_layer.register_forward_hook(lambda m, i, o: captured.append(o))
        try:
            self.model(pixel_values=x, interpolate_pos_encoding=True)
        finally:
            handle.remove()
        return captured[-1][0].float()

    def self_similarity(self, image: np.ndarray, size: tuple[int, int] | None = None):
        """(T, T) cosine self-similarity of the last block's keys."""
        k = F.normalize(self.keys(image, size), dim=-1)
        return k @ k.T

    def distance(self, source: np.ndarray, edited: np.ndarray) -> float:
        """MSE between the self-similarity matrices of two crops (resized to one size: the
        source's); 0 for identical images."""
        size = self.input_size(*source.shape[:2])
        a = self.self_similarity(source, size)
        b = self.self_similarity(edited, size)
        return float(F.mse_loss(a, b))


class Metrics:
    """The model-based metrics (CLIP and DINO), loaded once; ``report.measure`` and ``bench``
    read them."""

    def __init__(self, clip: ClipScorer, dino: DinoStructure):
        self.clip, self.dino = clip, dino

    @classmethod
    def tiny(cls, device: torch.device | str = "cpu") -> Metrics:
        return cls(ClipScorer.tiny(device), DinoStructure.tiny(device))

    @classmethod
    def from_pretrained(
        cls,
        clip: str = CLIP_MODEL,
        dino: str = DINO_MODEL,
        device: torch.device | str = "cpu",
    ) -> Metrics:
        return cls(
            ClipScorer.from_pretrained(clip, device), DinoStructure.from_pretrained(dino, device)
        )
