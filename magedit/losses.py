"""MAG-Edit's mask-based attention constraints as pure functions on attention maps.

Shapes: a layer's cross-attention map is ``(heads, N, K)`` with N = H * W query pixels in row-major
order and K = 77 token positions; a mask at that layer's resolution is ``(N,)`` float with 0/1
values. ``positions`` are the token positions of one word in the 77-long prompt. Losses are means
over layers, heads and words, as in the authors' released code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Maps = Sequence[torch.Tensor]


def word_maps(maps: torch.Tensor, positions: Sequence[int]) -> torch.Tensor:
    """(heads, N, len(positions)) maps of a word's tokens. A word's tokens are consecutive, so
    this is a slice (no index tensor to copy to the device, which a CUDA graph could not hold)."""
    first = positions[0]
    if list(positions) == list(range(first, first + len(positions))):
        return maps[:, :, first : first + len(positions)]
    return maps[:, :, list(positions)]


def token_ratio(maps: torch.Tensor, positions: Sequence[int], mask: torch.Tensor) -> torch.Tensor:
    """Per-head in-mask token ratio of Eq. 5: (heads,).

    The word's map (mean over its tokens) divided, pixel by pixel, by the sum of all K token maps
    of the (injected) map, summed over the mask and divided by the mask's pixel count.
    """
    word = word_maps(maps, positions).mean(-1)  # (heads, N)
    share = word / maps.sum(-1)  # (heads, N)
    return (share * mask).sum(-1) / mask.sum()


def spatial_ratio(maps: torch.Tensor, positions: Sequence[int], mask: torch.Tensor) -> torch.Tensor:
    """Per-head share of the word's attention that falls inside the mask (Eq. 6): (heads,).

    The word's map is the sum over its tokens.
    """
    word = word_maps(maps, positions).sum(-1)  # (heads, N)
    return (word * mask).sum(-1) / word.sum(-1)


def token_ratio_loss(
    layers: Maps, words: Sequence[Sequence[int]], mask: torch.Tensor
) -> torch.Tensor:
    """L_TR (Eq. 5): mean over words, layers and heads of (1 - token ratio)^2."""
    per_word = [
        torch.stack([((1 - token_ratio(m, pos, mask)) ** 2).mean() for m in layers]).mean()
        for pos in words
    ]
    return torch.stack(per_word).mean()


def spatial_ratio_loss(
    layers: Maps, words: Sequence[Sequence[int]], mask: torch.Tensor, lam: float = 3.0
) -> torch.Tensor:
    """L_SR (Eq. 6): mean over words, layers and heads of lam * (1 - r) - r."""
    per_word = []
    for pos in words:
        per_layer = []
        for m in layers:
            r = spatial_ratio(m, pos, mask)
            per_layer.append((lam * (1 - r) - r).mean())
        per_word.append(torch.stack(per_layer).mean())
    return torch.stack(per_word).mean()


def constraint_loss(
    constraint: str,
    layers: Maps,
    words: Sequence[Sequence[int]],
    mask: torch.Tensor,
    spatial_lambda: float = 3.0,
) -> torch.Tensor:
    """The chosen constraint's loss (``token_ratio`` or ``spatial_ratio``)."""
    if constraint == "token_ratio":
        return token_ratio_loss(layers, words, mask)
    if constraint == "spatial_ratio":
        return spatial_ratio_loss(layers, words, mask, spatial_lambda)
    raise ValueError(f"unknown constraint {constraint!r}; use 'token_ratio' or 'spatial_ratio'")


def in_mask_ratio(
    constraint: str, layers: Maps, words: Sequence[Sequence[int]], mask: torch.Tensor
) -> torch.Tensor:
    """The ratio the constraint raises, averaged over words, layers and heads (for display)."""
    ratio = token_ratio if constraint == "token_ratio" else spatial_ratio
    return torch.stack([ratio(m, pos, mask).mean() for pos in words for m in layers]).mean()


def with_negative(
    positive: torch.Tensor,
    negative: torch.Tensor | None,
    scale: float = 2.5,
    negative_scale: float = 5.5,
) -> torch.Tensor:
    """Eq. 7: L_total = lambda_p * L - lambda_ng * L_ng (L_ng omitted when there is none)."""
    total = scale * positive
    if negative is not None:
        total = total - negative_scale * negative
    return total


def region_weights(weights: Sequence[float]) -> list[float]:
    """Eq. 9's lambdas: the regions' weights normalised to sum to 1."""
    if not weights:
        raise ValueError("no edit region given; give at least one mask with its edit words")
    if any(not w >= 0 for w in weights):
        raise ValueError(f"region weights must be >= 0, got {list(weights)}")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"region weights must not all be 0, got {list(weights)}")
    return [w / total for w in weights]


def multi_region_loss(losses: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Eq. 9: sum of the regions' losses weighted by their normalised weights."""
    if len(losses) != len(weights):
        raise ValueError(f"{len(losses)} region losses but {len(weights)} weights")
    return sum(w * loss for w, loss in zip(region_weights(weights), losses, strict=True))
