"""Cheap previews: latents -> RGB without the VAE, and attention heat maps over the image."""

from __future__ import annotations

import numpy as np
import torch

from magedit import images

# A linear map from SD v1.x latents to RGB, fitted on decoded images by the community (used by
# many UIs for live previews). Good enough to watch an edit progress; the final image is decoded.
LATENT_RGB_FACTORS = torch.tensor(
    [
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ]
)


def latents_to_rgb(latents: torch.Tensor) -> np.ndarray:
    """(1, 4, h, w) latents -> (h, w, 3) uint8 preview (8x smaller than the decoded image)."""
    rgb = torch.einsum("chw,cr->hwr", latents[0].float().cpu(), LATENT_RGB_FACTORS)
    return ((rgb + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()


def normalize_map(attention: np.ndarray) -> np.ndarray:
    """Scale a non-negative map to [0, 1] (all-zero maps stay zero)."""
    attention = np.asarray(attention, dtype=np.float32)
    peak = float(attention.max()) if attention.size else 0.0
    return attention / peak if peak > 0 else np.zeros_like(attention)


def heatmap_overlay(
    image: np.ndarray, attention: np.ndarray, mask: np.ndarray | None = None, alpha: float = 0.55
) -> np.ndarray:
    """An attention map (any size) coloured over ``image`` (HWC uint8), the mask outlined in white.

    ``mask``: HxW bool of any size, resized to the image's with ``images.resize_mask``; its
    outline is its inner 1-pixel edge (``mask & ~images.dilate(mask, -1)``)."""
    from PIL import Image

    h, w = image.shape[:2]
    heat = Image.fromarray((normalize_map(attention) * 255).astype(np.uint8)).resize(
        (w, h), Image.BILINEAR
    )
    v = np.asarray(heat, dtype=np.float32) / 255.0
    # A simple blue -> red ramp ("jet"-like) that needs no matplotlib.
    colour = np.stack(
        [
            np.clip(2 * v, 0, 1),
            np.clip(2 - np.abs(4 * v - 2), 0, 1) * 0.8,
            np.clip(2 - 2 * v, 0, 1),
        ],
        axis=-1,
    )
    out = image.astype(np.float32) / 255.0 * (1 - alpha) + colour * alpha
    out = (out * 255).round().astype(np.uint8)
    if mask is not None:
        m = images.resize_mask(mask, (h, w))  # sampled as the pipeline samples its masks
        out[m & ~images.dilate(m, -1)] = 255  # the mask's inner 1-pixel edge
    return out
