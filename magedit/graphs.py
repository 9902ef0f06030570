"""CUDA graphs for the inner loops that repeat the same UNet work: a MAG iteration, a null-text step.

Eager PyTorch on a fast GPU spends most of a batch-1 UNet forward and backward launching kernels
from Python (SD v1.4's UNet is over a thousand kernels per call). A :class:`CapturedStep` runs its
function once eagerly (the warm-up, whose result is returned), captures the next call into a CUDA
graph, and from then on replays the graph: one launch instead of thousands.

The function must take no arguments and read and write only tensors that stay the same objects
between calls (the caller updates their contents in place), and must not synchronise with the host
(no ``.item()``, no Python-list indexing, no CPU-to-GPU copies). Its return value is the same
tensors after every replay. On a CPU, with graphs switched off, or if capture fails (a warning
says why), the function is simply called each time, so both paths share every line of maths.
"""

from __future__ import annotations

import contextlib
import gc
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, list | tuple):
        return [t for item in value for t in _tensors(item)]
    return []


def relative_error(a: Any, b: Any) -> float:
    """Largest ||a - b|| / ||b|| over the tensors of two outputs of the same structure."""
    errors = [
        float((x.float() - y.float()).norm() / y.float().norm().clamp_min(1e-12))
        for x, y in zip(_tensors(a), _tensors(b), strict=True)
    ]
    return max(errors, default=0.0)


@contextlib.contextmanager
def no_collection() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block (restored after).

    A collection that runs during a capture and frees a dead graph (say, one of the previous
    edit's, kept alive by a reference cycle) destroys it from the capturing thread, which CUDA
    forbids: the capture is invalidated ("operation not permitted when stream is capturing") and
    the step falls back to eager. Seen on an H100; torch no longer collects before a capture.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class CapturedStep:
    """Call ``fn`` eagerly once, then replay a CUDA graph of it (when ``enabled`` on CUDA).

    ``fn`` must be a pure function of the tensors it reads (it may also write tensors that it
    recomputes entirely, such as recorded attention maps). A graph's classic failure is a stale
    input: something the graph read at capture that later changed object instead of contents. So
    after ``verify_next()`` (the caller says the step's inputs changed since capture, e.g. a new
    timestep) the next replay is checked once against an eager call; if they differ by more than
    ``tolerance`` (relative L2; float rounding and non-deterministic attention backward are
    orders of magnitude below it) a warning says so, the eager result is used, and the step runs
    eagerly from then on.
    """

    def __init__(self, fn: Callable[[], Any], enabled: bool, tolerance: float = 2e-2):
        self.fn = fn
        self.enabled = enabled and torch.cuda.is_available()
        self.tolerance = tolerance
        self.graph: Any = None  # torch.cuda.CUDAGraph once captured
        self.outputs: Any = None
        self.verified = False
        self._verify = False

    def verify_next(self) -> None:
        """Check the next replay against eager (once per step object)."""
        self._verify = not self.verified

    def __call__(self) -> Any:
        if self.graph is not None:
            if self._verify:
                return self._replay_checked()
            self.graph.replay()
            return self.outputs
        if not self.enabled:
            return self.fn()
        # Warm-up on a side stream (as torch.cuda.graph's documentation requires): lazy
        # initialisation (cuBLAS workspaces, autotuning) happens here, and this call's result is
        # the real result of this step. Capture records without running anything.
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            outputs = self.fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: the page's other threads (segmentation) may use the GPU meanwhile.
            with no_collection(), torch.cuda.graph(graph, capture_error_mode="thread_local"):
                captured = self.fn()
        except Exception as error:  # an op that cannot be captured: run eagerly from now on
            self._give_up(f"CUDA graph capture failed ({type(error).__name__}: {error})")
            torch.cuda.synchronize()
            return outputs
        self.graph, self.outputs = graph, captured
        return outputs

    def _replay_checked(self) -> Any:
        self._verify = False
        self.verified = True
        # Replay first: the eager call's writes (recorded maps) are the ones left in place.
        self.graph.replay()
        expected = self.fn()
        error = relative_error(self.outputs, expected)
        if not error <= self.tolerance:
            self._give_up(f"CUDA graph replay differs from eager (relative error {error:.3g})")
        return expected

    def _give_up(self, why: str) -> None:
        warnings.warn(f"{why}; running this step eagerly", RuntimeWarning, stacklevel=3)
        self.enabled = False
        self.graph = self.outputs = None


class Adam:
    """Adam (torch.optim.Adam's update, defaults betas (0.9, 0.999), eps 1e-8) on one tensor, with
    its learning rate and step count held in tensors: a few kernels and no host sync per step.

    ``reset(lr)`` starts a fresh optimiser in place, as null-text inversion does at every step.
    """

    def __init__(self, param: torch.Tensor, betas: tuple[float, float] = (0.9, 0.999), eps=1e-8):
        self.param = param
        self.beta1, self.beta2 = betas
        self.eps = eps
        # float64 like torch's Python-float bias corrections: 1 - 0.999**k in float32 loses
        # five digits to cancellation.
        self.lr = torch.zeros((), dtype=torch.float64, device=param.device)
        self.count = torch.zeros((), dtype=torch.float64, device=param.device)
        self.exp_avg = torch.zeros_like(param, memory_format=torch.preserve_format)
        self.exp_avg_sq = torch.zeros_like(param, memory_format=torch.preserve_format)

    @torch.no_grad()
    def reset(self, lr: float) -> None:
        self.lr.fill_(lr)
        self.count.zero_()
        self.exp_avg.zero_()
        self.exp_avg_sq.zero_()

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        """torch.optim.Adam's single-tensor step in its capturable form."""
        self.count += 1
        self.exp_avg.lerp_(grad, 1 - self.beta1)
        self.exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        bias1 = 1 - self.beta1**self.count
        bias2_sqrt = (1 - self.beta2**self.count).sqrt()
        step_size = (self.lr / bias1).to(self.param.dtype)
        denom = (self.exp_avg_sq.sqrt() / bias2_sqrt.to(self.param.dtype)).add_(self.eps)
        self.param.sub_(self.exp_avg / denom * step_size)


class CapturedGradient:
    """:func:`magedit.guidance.objective_gradient` on a fixed input tensor, captured when enabled.

    ``objective(z) -> (value, report)``; calling this with z copies z into the fixed input and
    returns (value, report, d value / d z): tensors that the next call overwrites.
    """

    def __init__(
        self,
        objective: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        like: torch.Tensor,
        enabled: bool,
    ):
        self.z = z = torch.zeros_like(like, dtype=torch.float32).requires_grad_(True)

        def fn() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # no reference to self
            value, report = objective(z)
            (grad,) = torch.autograd.grad(value, z)
            return value.detach(), report.detach(), grad

        self.step = CapturedStep(fn, enabled)

    def __call__(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            self.z.copy_(z)
        with torch.enable_grad():
            return self.step()
