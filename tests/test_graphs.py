"""The CUDA-graph helpers: Adam in tensors equals torch.optim.Adam; CapturedStep off a GPU calls
its function each time; GPU capture gives the eager numbers (run where a GPU is present)."""

import gc
import warnings
import weakref

import pytest
import torch
from conftest import SOURCE, TARGET, scene, scene_mask

from magedit import EditConfig, EditResult, MagEditPipeline
from magedit.graphs import Adam, CapturedGradient, CapturedStep, no_collection
from magedit.guidance import objective_gradient
from magedit.inversion import CapturedEps

needs_gpu = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU; this machine has none"
)


def test_adam_in_tensors_equals_torch_adam_across_resets():
    """Fed the same gradients, our Adam moves the tensor as torch.optim.Adam does, including a
    fresh optimiser per phase (null-text inversion starts one at every step; ours resets)."""
    g = torch.Generator().manual_seed(0)
    target = torch.randn(3, 77, 16, generator=g)
    start = torch.randn(3, 77, 16, generator=g)
    ours, theirs = start.clone(), start.clone().requires_grad_(True)
    adam = Adam(ours)
    for phase, lr in enumerate([1e-2, 5e-3]):
        optimizer = torch.optim.Adam([theirs], lr=lr)
        adam.reset(lr)
        for _ in range(6):
            loss = ((theirs - target * (phase + 1)) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            adam.step(theirs.grad)
            optimizer.step()
    assert (ours - theirs.detach()).abs().max() < 1e-6
    assert (ours - start).abs().mean() > 0.05  # both moved: 12 steps of about lr each


def test_captured_step_off_a_gpu_calls_its_function_every_time():
    calls = []
    step = CapturedStep(lambda: calls.append(1) or len(calls), enabled=True)
    assert [step(), step(), step()] == [1, 2, 3]
    assert step.graph is None


def test_CapturedGradient_equals_autograd_on_a_fixed_input():
    weight = torch.linspace(-1, 1, 12).reshape(1, 3, 2, 2)

    def objective(z):
        return ((z * weight) ** 2).sum(), z.mean()

    gradient = CapturedGradient(objective, torch.zeros(1, 3, 2, 2), enabled=True)
    reference = objective_gradient(objective)
    for seed in range(3):
        z = torch.randn(1, 3, 2, 2, generator=torch.Generator().manual_seed(seed))
        ours, theirs = gradient(z), reference(z)
        for a, b in zip(ours, theirs, strict=True):
            assert torch.equal(a, b)
        assert torch.allclose(ours[2], 2 * z * weight**2)


class FakeGraph:
    """Stands in for a captured torch.cuda.CUDAGraph: ``replay`` runs what the graph would."""

    def __init__(self, replay):
        self.replay = replay


def test_a_replay_that_differs_from_eager_is_dropped_with_a_warning():
    """The stale-input failure of CUDA graphs: the replay keeps giving capture-time numbers."""
    x = torch.zeros(3)
    step = CapturedStep(lambda: x * 2 + 1, enabled=False)
    stale = torch.ones(3)
    step.graph, step.outputs = FakeGraph(lambda: None), stale
    x += 5
    assert step() is stale  # replays are not checked until the caller says inputs changed
    step.verify_next()
    with pytest.warns(RuntimeWarning, match="differs from eager"):
        checked = step()
    assert torch.equal(checked, torch.full((3,), 11.0))
    assert step.graph is None
    x += 1
    assert torch.equal(step(), torch.full((3,), 13.0))  # eager from then on


def test_a_replay_that_agrees_with_eager_is_kept_and_checked_once():
    x, out = torch.zeros(3), torch.zeros(3)

    def replay():
        torch.mul(x, 2, out=out).add_(1)

    step = CapturedStep(lambda: x * 2 + 1, enabled=False)
    step.graph, step.outputs = FakeGraph(replay), out
    x += 5
    step.verify_next()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        checked = step()
    assert torch.equal(checked, torch.full((3,), 11.0)) and torch.equal(out, checked)
    assert step.graph is not None and step.verified
    step.verify_next()
    x += 1
    assert step() is out and torch.equal(out, torch.full((3,), 13.0))  # a plain replay


def _edit(pipe, config):
    """Invert and edit the test scene; returns (inversion, plan, result)."""
    prepared = pipe.prepare(scene(192, 256), SOURCE, TARGET, scene_mask(192, 256), config=config)
    inversion = pipe.invert(prepared)
    plan = pipe._plan(prepared, inversion)
    result = list(pipe._run(prepared, inversion, plan))[-1]
    assert isinstance(result, EditResult)
    return inversion, plan, result


@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("method", ["null_text", "direct"])
def test_cuda_graphs_give_the_eager_numbers_on_a_gpu(method):
    """Replayed graphs give eager's numbers and every checked replay agreed (none was dropped).

    Attention runs on the math SDPA backend here: the memory-efficient backward is not
    deterministic, and MAG's gradient steps and null-text's Adam (which moves every element by
    about lr whatever its gradient's size) amplify that noise into large end-to-end differences
    even between two eager runs.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    pipe = MagEditPipeline.tiny(device="cuda", dtype=torch.float32, seed=0)
    config = EditConfig(resolution=256, inversion=method, max_iter=4).with_steps(10)
    eager_config = config.replace(cuda_graphs=False)
    with sdpa_kernel(SDPBackend.MATH), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a capture failure or dropped replay
        eager_inv, _, eager = _edit(pipe, eager_config)
        pipe.cache.clear()
        again_inv, _, again = _edit(pipe, eager_config)
        pipe.cache.clear()
        graph_inv, plan, graphed = _edit(pipe, config)
    steps = [g.step for g in plan.gradients.values()] + [c[2] for c in plan.calls.values()]
    assert steps and all(step.graph is not None for step in steps)
    assert all(g.step.verified for g in plan.gradients.values())
    noise = (again.latents - eager.latents).abs().max()
    diff = (graphed.latents - eager.latents).abs()
    assert diff.max() <= max(1e-4, 10 * noise), f"max {diff.max():.3g}, eager vs eager {noise:.3g}"
    uncond_noise = (again_inv.uncond - eager_inv.uncond).abs().max()
    uncond_diff = (graph_inv.uncond - eager_inv.uncond).abs().max()
    assert uncond_diff <= max(1e-4, 10 * uncond_noise), f"{uncond_diff:.3g} vs {uncond_noise:.3g}"
    losses = torch.tensor([step["loss"] for step in graphed.losses])
    eager_losses = torch.tensor([step["loss"] for step in eager.losses])
    assert len(losses) == 4 * config.steps // 2
    loss_diff = ((losses - eager_losses).abs() / eager_losses.abs().clamp_min(1e-6)).max()
    assert loss_diff < 1e-3, f"losses differ by {loss_diff:.3g} (relative)"


@pytest.mark.parametrize("method", ["null_text", "direct"])
def test_an_edit_frees_its_graphs_without_the_cyclic_collector(method):
    """An edit's captured steps hold no reference cycle: they are freed when the edit's plan is
    dropped, never by a garbage collection that could run during a later capture (destroying
    a graph from the capturing thread invalidates that capture; seen on an H100)."""
    pipe = MagEditPipeline.tiny(seed=0)
    config = EditConfig(resolution=256, inversion=method, max_iter=2).with_steps(4)
    gc.collect()
    with no_collection():
        assert not gc.isenabled()
        _, plan, result = _edit(pipe, config)
        steps = [g.step for g in plan.gradients.values()] + [c[2] for c in plan.calls.values()]
        assert len(plan.gradients) >= 1 and len(plan.calls) >= 2
        refs = [weakref.ref(plan)] + [weakref.ref(step) for step in steps]
        del plan, steps
        assert [ref() for ref in refs] == [None] * len(refs)
        assert len(result.losses) == 2 * 2  # the edit itself ran: 2 guided steps x 2 iterations
    assert gc.isenabled()


def test_captured_helpers_hold_no_reference_cycle():
    eps = CapturedEps(lambda z, t, emb: z * 2, torch.zeros(1, 4, 2, 2), torch.zeros(1, 3, 8), True)
    assert torch.equal(
        eps(torch.ones(1, 4, 2, 2), 5, torch.ones(1, 3, 8)), torch.full((1, 4, 2, 2), 2.0)
    )
    gradient = CapturedGradient(lambda z: (z.square().sum(), z.mean()), torch.zeros(2), True)
    refs = [weakref.ref(eps.step), weakref.ref(gradient.step)]
    with no_collection():
        del eps, gradient
        assert [ref() for ref in refs] == [None, None]


@needs_gpu
@pytest.mark.gpu
def test_a_capture_survives_a_collection_of_dead_graphs():
    """A dead graph in a reference cycle, and a collector that would run at every allocation:
    the next capture still succeeds (the collector is off during captures)."""
    x = torch.ones(1024, device="cuda")

    class Holder:
        pass

    dead = Holder()
    dead.self = dead
    dead.step = CapturedStep(lambda: x * 2, enabled=True)
    dead.step()
    assert dead.step.graph is not None
    del dead
    thresholds = gc.get_threshold()
    gc.set_threshold(1, 1, 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            step = CapturedStep(lambda: [x + i for i in range(50)], enabled=True)
            step()
    finally:
        gc.set_threshold(*thresholds)
    assert step.graph is not None
    assert torch.equal(step()[49], x + 49)
