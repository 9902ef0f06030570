"""DDIM, null-text and direct inversion of a real image, and the cache of their results.

Latents are float32 ``(1, 4, h, w)``; text embeddings ``(1, 77, D)``. ``EpsFn(latents, t, emb)``
returns the UNet's noise prediction for a batch of latents and embeddings (float32).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from magedit.graphs import Adam, CapturedStep

EpsFn = Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor]
Progress = Callable[[int, int], None]


class DDIMSchedule:
    """Deterministic DDIM (eta = 0) on SD v1.4's noise schedule, as the authors' code runs it.

    beta 0.00085-0.012 "scaled_linear", no clipping, ``set_alpha_to_one=False`` (the step below
    the first timestep uses alpha_0) and ``steps_offset=1``, so T = 50 gives timesteps
    981, 961, ..., 1. The authors build their scheduler with steps_offset 0, but diffusers'
    ``StableDiffusionPipeline.__init__`` rewrites any scheduler it is given to steps_offset 1
    (still so in diffusers 0.42), and their inversion and editing run on that object; their
    released numbers are reproduced only with 981 ... 1. Built here, never read from a model folder.
    """

    def __init__(self, steps: int, num_train_timesteps: int = 1000):
        from diffusers import DDIMScheduler

        scheduler = DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
            num_train_timesteps=num_train_timesteps,
        )
        scheduler.set_timesteps(steps)
        self.steps = steps
        self.step_ratio = num_train_timesteps // steps
        self.num_train_timesteps = num_train_timesteps
        self.timesteps: list[int] = [int(t) for t in scheduler.timesteps]  # denoising order
        self.alphas_cumprod = scheduler.alphas_cumprod  # (1000,) float32
        self.final_alpha_cumprod = scheduler.final_alpha_cumprod

    def alpha(self, t: int) -> torch.Tensor:
        return self.alphas_cumprod[t] if t >= 0 else self.final_alpha_cumprod

    def prev(self, eps: torch.Tensor, t: int, x: torch.Tensor) -> torch.Tensor:
        """One denoising step from t to t - 1000/T (the diffusers DDIM step with eta = 0)."""
        return ddim_prev(eps, self.alpha(t), self.alpha(t - self.step_ratio), x)

    def next(self, eps: torch.Tensor, t: int, x: torch.Tensor) -> torch.Tensor:
        """One inversion step from t - 1000/T to t (DDIM run backwards)."""
        t_cur = min(t - self.step_ratio, self.num_train_timesteps - 1)
        alpha_cur = self.alpha(t_cur)
        alpha_next = self.alpha(t)
        x0 = (x - (1 - alpha_cur) ** 0.5 * eps) / alpha_cur**0.5
        return alpha_next**0.5 * x0 + (1 - alpha_next) ** 0.5 * eps


def ddim_prev(
    eps: torch.Tensor, alpha_t: torch.Tensor, alpha_prev: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """The DDIM step (eta = 0) from cumulative alpha ``alpha_t`` to ``alpha_prev`` (0-dim)."""
    beta_t = 1 - alpha_t
    x0 = (x - beta_t**0.5 * eps) / alpha_t**0.5
    return alpha_prev**0.5 * x0 + (1 - alpha_prev) ** 0.5 * eps


@dataclass
class Inversion:
    """A real image brought to z_T, with what the editing loop needs to reconstruct it.

    original:    the image at its own resolution, HWC uint8 (the edit is composited onto it).
    image:       the image at processing size, HWC uint8.
    trajectory:  (T + 1, 1, 4, h, w) DDIM inversion latents z_0 ... z_T.
    uncond:      (T, 77, D) unconditional embedding of each denoising step (null-text: optimised;
                 DDIM and direct: the empty prompt's).

    Direct inversion (Ju et al.) keeps no extra state: its reconstruction branch *is* the
    trajectory. Their formulation adds, after each denoising step, the stored difference between
    the trajectory and the guided step; that sum is the trajectory latent itself, so the editing
    loop takes it directly (exact, and without the difference's float rounding).
    """

    original: np.ndarray
    image: np.ndarray
    source_prompt: str
    method: str
    steps: int
    guidance_scale: float
    trajectory: torch.Tensor
    uncond: torch.Tensor
    key: Hashable
    seconds: float = 0.0
    cached: bool = False  # True when invert() returned it from the cache

    @property
    def z_T(self) -> torch.Tensor:
        return self.trajectory[-1]


class CapturedEps:
    """``eps_fn`` under no_grad with fixed input tensors: called as ``eps(z, t, emb)``, it copies
    its inputs in and on a GPU (``cuda_graphs``) replays a CUDA graph of the UNet call
    (:class:`~magedit.graphs.CapturedStep`; its first replay at a second timestep is checked
    against an eager call). The returned tensor is overwritten by the next call."""

    def __init__(self, eps_fn: EpsFn, z: torch.Tensor, emb: torch.Tensor, cuda_graphs: bool):
        self.z, self.emb = z_in, emb_in = torch.empty_like(z), torch.empty_like(emb)
        self.t = t_in = torch.zeros(1, dtype=torch.long, device=z.device)

        def run() -> torch.Tensor:  # no reference to self: freed without the cyclic collector
            with torch.no_grad():
                return eps_fn(z_in, t_in, emb_in)

        self.step = CapturedStep(run, cuda_graphs)

    def __call__(self, z: torch.Tensor, t: int, emb: torch.Tensor) -> torch.Tensor:
        self.z.copy_(z)
        self.emb.copy_(emb)
        self.t.fill_(t)
        self.step.verify_next()  # the first replay (the second call) is checked, once
        return self.step()


@torch.no_grad()
def ddim_invert(
    eps_fn: EpsFn,
    z0: torch.Tensor,
    cond: torch.Tensor,
    schedule: DDIMSchedule,
    progress: Progress | None = None,
    cuda_graphs: bool = False,
) -> torch.Tensor:
    """DDIM inversion under the source prompt (no guidance): (T + 1, 1, 4, h, w), z_0 first."""
    eps = CapturedEps(eps_fn, z0, cond, cuda_graphs)
    latents = [z0]
    z = z0.clone()
    for i, t in enumerate(reversed(schedule.timesteps)):
        z = schedule.next(eps(z, t, cond), t, z)
        latents.append(z)
        if progress is not None:
            progress(i + 1, schedule.steps)
    return torch.stack(latents)


def null_text_optimize(
    eps_fn: EpsFn,
    trajectory: torch.Tensor,
    uncond: torch.Tensor,
    cond: torch.Tensor,
    schedule: DDIMSchedule,
    guidance: float,
    inner_steps: int = 10,
    lr: float = 1e-2,
    epsilon: float = 1e-5,
    progress: Progress | None = None,
    cuda_graphs: bool = False,
) -> torch.Tensor:
    """Null-text inversion (Mokady et al.), as the paper uses it: (T, 77, D) float32 embeddings.

    At denoising step i an unconditional embedding is optimised with Adam (lr * (1 - i / 100)) for
    up to ``inner_steps`` steps so that the guided DDIM step lands on the inversion trajectory;
    it stops early once the MSE is below ``epsilon + i * 2e-5``. Optimisation state is float32.
    The loss and gradient read fixed tensors only, so with ``cuda_graphs`` on a GPU they are
    captured once and replayed (:class:`~magedit.graphs.CapturedStep`); the maths is the same.
    """
    steps = schedule.steps
    device = trajectory.device
    cond = cond.detach()
    # The step's inputs, updated in place before each denoising step.
    param = uncond.detach().float().clone().requires_grad_(True)  # (1, 77, D)
    z = trajectory[-1].clone()  # z_t of the reconstruction, (1, 4, h, w)
    target = torch.empty_like(z)  # the trajectory's z_{t-1}
    eps_c = torch.empty_like(z)  # conditional noise at z_t
    t_now = torch.zeros(1, dtype=torch.long, device=device)
    alpha_t = torch.zeros((), dtype=torch.float32, device=device)
    alpha_prev = torch.zeros((), dtype=torch.float32, device=device)
    adam = Adam(param)

    def loss_and_grad() -> tuple[torch.Tensor, torch.Tensor]:
        eps_u = eps_fn(z, t_now, param)
        eps = eps_u + guidance * (eps_c - eps_u)
        loss = F.mse_loss(ddim_prev(eps, alpha_t, alpha_prev, z), target)
        (grad,) = torch.autograd.grad(loss, param)
        return loss.detach(), grad

    inner_step = CapturedStep(loss_and_grad, cuda_graphs)
    # The no-grad calls of a step: the conditional noise at z_t, and after the inner steps the
    # unconditional noise under the optimised embedding (the guided step reuses eps_c).
    cond_eps = CapturedEps(eps_fn, z, cond, cuda_graphs)
    uncond_eps = CapturedEps(eps_fn, z, param, cuda_graphs)
    result = []
    for i, t in enumerate(schedule.timesteps):
        with torch.no_grad():
            t_now.fill_(t)
            alpha_t.copy_(schedule.alpha(t))
            alpha_prev.copy_(schedule.alpha(t - schedule.step_ratio))
            target.copy_(trajectory[steps - i - 1])
            eps_c.copy_(cond_eps(z, t, cond))
        adam.reset(lr * (1.0 - i / 100.0))
        inner_step.verify_next()  # a new timestep: check the graph's first replay here
        for _ in range(inner_steps):
            loss, grad = inner_step()
            adam.step(grad)
            if loss.item() < epsilon + i * 2e-5:
                break
        optimised = param.detach().clone()
        result.append(optimised[0])
        with torch.no_grad():
            eps_u = uncond_eps(z, t, optimised)
            z.copy_(schedule.prev(eps_u + guidance * (eps_c - eps_u), t, z))
        if progress is not None:
            progress(i + 1, steps)
    return torch.stack(result)


class InversionCache:
    """A bounded, thread-safe LRU of :class:`Inversion` results keyed by ``Inversion.key``."""

    def __init__(self, maxsize: int = 8):
        self.maxsize = maxsize
        self._items: OrderedDict[Hashable, Inversion] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Inversion | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def put(self, inversion: Inversion) -> None:
        with self._lock:
            self._items[inversion.key] = inversion
            self._items.move_to_end(inversion.key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
