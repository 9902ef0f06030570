"""Mask-based attention-adjusted guidance (Algorithm 1, Eq. 8) and the latent blend.

Latents are float32 ``(1, 4, h, w)``; masks are ``(1, 1, h, w)`` float with 0/1 values at latent size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

# objective(z) -> (the value minimised, with its graph to z; what to report: (2,) = the edit
# words' loss and their in-mask ratio)
Objective = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# gradient(z) -> (value, report, d value / d z), all detached
Gradient = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def step_size(constraint: str, alpha_cumprod_t: float | torch.Tensor) -> float:
    """delta of Eq. 8: sqrt((1 - alpha_t) / alpha_t) for the token ratio, 1 for the spatial ratio.

    Appendix B: the token-ratio schedule follows Chefer et al.; the spatial ratio keeps delta = 1.
    """
    if constraint == "spatial_ratio":
        return 1.0
    alpha = torch.as_tensor(alpha_cumprod_t, dtype=torch.float32)
    return math.sqrt(float((1 - alpha) / alpha))


def masked_update(
    z: torch.Tensor, grad: torch.Tensor, mask: torch.Tensor, delta: float
) -> torch.Tensor:
    """Eq. 8: z - delta * grad inside the mask; outside it z is returned bit for bit."""
    return torch.where(mask > 0, z - delta * grad, z)


def latent_blend(z_edit: torch.Tensor, z_source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Prompt-to-prompt's latent blend: the edit inside ``mask``, the reconstruction outside."""
    return torch.where(mask > 0, z_edit, z_source)


def dilate(mask: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """Max-pool dilation of a (1, 1, h, w) mask (the blend uses a 3x3 max-pool, as P2P does)."""
    return torch.nn.functional.max_pool2d(mask, kernel, stride=1, padding=kernel // 2)


def objective_gradient(objective: Objective) -> Gradient:
    """The gradient function of ``objective`` by autograd (one forward and one backward)."""

    def gradient(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            z_var = z.detach().requires_grad_(True)
            value, report = objective(z_var)
            (grad,) = torch.autograd.grad(value, z_var)
        return value.detach(), report.detach(), grad

    return gradient


@dataclass
class GuidanceStep:
    iteration: int  # 1-based
    loss: float  # the edit words' loss (lambda_p L) before this iteration's update
    ratio: float  # the in-mask ratio before this iteration's update
    objective: float  # the value minimised (Eq. 7/9: with the negative word's term)
    z: torch.Tensor  # the latent after the update (detached)


def guide(
    z: torch.Tensor,
    gradient: Gradient,
    mask: torch.Tensor,
    delta: float,
    max_iter: int,
    early_stop: float = 0.0,
) -> Iterator[GuidanceStep]:
    """Algorithm 1, lines 1-7: ``max_iter`` masked gradient steps on z*_t; yields after each.

    ``gradient(z)`` gives the loss, the in-mask ratio and the loss's gradient at z (see
    :func:`objective_gradient`).

    ``early_stop`` > 0 ends the loop after the first iteration whose loss is lower than the
    previous iteration's by less than ``early_stop * |previous loss|`` (0: all ``max_iter``).
    """
    previous = None
    for iteration in range(1, max_iter + 1):
        value, report, grad = gradient(z)
        z = masked_update(z.detach(), grad, mask, delta)
        step = GuidanceStep(iteration, float(report[0]), float(report[1]), float(value), z)
        yield step
        stalled = previous is not None and previous - step.objective < early_stop * abs(previous)
        if early_stop > 0 and stalled:
            return
        previous = step.objective
