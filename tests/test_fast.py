"""The speed-ups are the same edit: each fast path against the plain one, on tiny components."""

import contextlib

import pytest
import torch
from conftest import SOURCE, TARGET, scene, scene_mask

from magedit import EditConfig
from magedit.attention import CallPlan
from magedit.controls import say

H, W = 192, 256  # processing size at resolution 256: latent 24x32


def config(**changes):
    return EditConfig(
        **{"resolution": 256, "inversion": "ddim", "max_iter": 2, **changes}
    ).with_steps(10)


@torch.no_grad()
def edit_branch(pipe, plan, z_edit, t, uncond, guidance, call):
    """The editing branch as its own UNet call, batch [uncond, cond] under ``call`` (None: no
    plan): (guided noise, the maps of ``plan.loss_layers`` it collected)."""
    latents, emb = torch.cat([z_edit, z_edit]), torch.cat([uncond, plan.target_emb])
    with pipe.controller.plan(call) if call is not None else contextlib.nullcontext():
        eps_u, eps_c = pipe._eps(latents, t, emb).chunk(2)
    maps = [pipe.controller.collected[name].detach() for name in plan.loss_layers]
    return eps_u + guidance * (eps_c - eps_u), maps


@pytest.fixture(scope="module")
def pipe64():
    """The tiny pipeline in float64: a UNet output then depends on the batch's composition only
    in the last bits of a float64, far below the float32 the pipeline returns, so a batched and an
    unbatched call give the same float32 numbers (bit for bit on the machines tried)."""
    from magedit import MagEditPipeline

    return MagEditPipeline.tiny(seed=0, dtype=torch.float64)


@pytest.fixture(scope="module")
def photo():
    return scene(H, W)


@pytest.fixture(scope="module")
def region():
    return scene_mask(H, W)


def edit(pipe, photo, region, cfg):
    prepared = pipe.prepare(photo, SOURCE, TARGET, region, config=cfg)
    *events, result = pipe.edit(prepared, pipe.invert(prepared))
    return events, result


@pytest.mark.parametrize(
    "inversion, step", [("ddim", 0), ("ddim", 8), ("direct", 0), ("direct", 8)]
)
def test_one_batched_call_equals_the_two_branch_calls(pipe64, photo, region, inversion, step):
    """A step without MAG: one UNet call with both branches gives the two calls' noise, next
    reconstruction latent and edit-word maps. Step 0 injects cross- and self-attention (the
    recorded row is read by the injected row of the same call); step 8 injects nothing (direct
    inversion then has no source row at all)."""
    cfg = config(inversion=inversion)
    prepared = pipe64.prepare(photo, SOURCE, TARGET, region, config=cfg)
    inversion_ = pipe64.invert(prepared)
    plan = pipe64._plan(prepared, inversion_)
    t = plan.schedule.timesteps[step]
    g = torch.Generator().manual_seed(step)
    z_source = inversion_.trajectory[cfg.steps - step]
    z_edit = z_source + 0.1 * torch.randn(z_source.shape, generator=g)
    uncond = inversion_.uncond[step : step + 1]
    assert cfg.cross_inject_at(step) == cfg.self_inject_at(step) == (step == 0)

    z_next, eps_edit, maps = pipe64._joint_step(inversion_, plan, step, t, z_source, z_edit, uncond)

    z_next_ref = pipe64._reconstruct(inversion_, plan, step, t, z_source, uncond)
    inject = CallPlan(
        inject_row=1,
        inject_cross=cfg.cross_inject_at(step),
        inject_self=cfg.self_inject_at(step),
        collect_row=1,
        collect_level=plan.level,
    )
    eps_ref, maps_ref = edit_branch(pipe64, plan, z_edit, t, uncond, cfg.guidance_scale, inject)
    assert torch.allclose(eps_edit, eps_ref, rtol=0, atol=1e-6)
    assert torch.allclose(z_next, z_next_ref, rtol=0, atol=1e-6)
    assert all(torch.allclose(a, b, rtol=0, atol=1e-9) for a, b in zip(maps, maps_ref, strict=True))
    # The injection did something at step 0 (the comparison is not of two plain calls).
    if step == 0:
        plain, _ = edit_branch(pipe64, plan, z_edit, t, uncond, cfg.guidance_scale, None)
        assert (plain - eps_ref).abs().max() > 1e-3


@pytest.mark.parametrize("inversion", ["ddim", "direct"])
def test_batched_edit_equals_the_two_call_edit(pipe64, tiny_pipe, photo, region, inversion):
    """Without MAG the reference path is the two-call path (reconstruction, then edit)."""
    cfg = config(inversion=inversion, max_iter=0)
    fast_events, fast = edit(pipe64, photo, region, cfg)
    ref_events, ref = edit(pipe64, photo, region, cfg.replace(reference=True))
    assert torch.allclose(fast.latents, ref.latents, rtol=0, atol=1e-5)
    assert torch.allclose(fast.source_latents, ref.source_latents, rtol=0, atol=1e-5)
    assert len(fast_events) == len(ref_events) == 10
    # In float32 a UNet output changes by ~1e-6 with the batch's composition (the CPU kernels
    # block differently); classifier-free guidance (x7.5) and ten DDIM steps carry that to ~2e-4
    # at most on the final latent, ~1e-5 on average.
    _, fast32 = edit(tiny_pipe, photo, region, cfg)
    _, ref32 = edit(tiny_pipe, photo, region, cfg.replace(reference=True))
    assert torch.allclose(fast32.latents, ref32.latents, atol=1e-3)
    assert (fast32.latents - ref32.latents).abs().mean() < 5e-5


def test_early_stop_ends_a_steps_guidance_and_keeps_its_first_iterations(tiny_pipe, photo, region):
    cfg = config(inversion="direct", max_iter=4)
    plain, _ = edit(tiny_pipe, photo, region, cfg)
    # A 90% improvement per iteration is never reached: every guided step stops after its second
    # iteration (the first with a previous loss to compare to).
    early, _ = edit(tiny_pipe, photo, region, cfg.replace(early_stop=0.9))
    guided = [i for i in range(cfg.steps) if cfg.guide_at(i)]
    plain_guidance = [e for e in plain if e.phase == "guidance"]
    early_guidance = [e for e in early if e.phase == "guidance"]
    assert len(plain_guidance) == 4 * len(guided)
    assert len(early_guidance) == 2 * len(guided) < len(plain_guidance)
    assert [e.iteration for e in early_guidance] == [1, 2] * len(guided)
    first = [(e.loss, e.in_mask_ratio) for e in plain_guidance[:2]]
    assert [(e.loss, e.in_mask_ratio) for e in early_guidance[:2]] == first
    assert len([e for e in early if e.phase == "denoise"]) == cfg.steps


def test_channels_last_gives_the_same_edit(pipe64, photo, region):
    cfg = config()
    _, plain = edit(pipe64, photo, region, cfg)
    pipe64.cache.clear()
    _, fast = edit(pipe64, photo, region, cfg.replace(channels_last=True))
    assert pipe64.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    pipe64.cache.clear()
    edit(pipe64, photo, region, cfg)  # the default (None) on a CPU: back to contiguous
    assert pipe64.unet.conv_in.weight.is_contiguous()
    assert not pipe64.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    # Convolutions in another memory format sum in another order: float rounding only, which in
    # float64 stays below the float32 the pipeline returns. (In float32 the guidance and the
    # inversion carry that rounding to several 1e-3 on the final latent of this random-weight model.)
    assert torch.allclose(fast.latents, plain.latents, rtol=0, atol=1e-5)
    # The memory format does not key the inversion cache.
    assert pipe64.invert_image(photo, SOURCE, config=cfg).cached
    edit(pipe64, photo, region, cfg)
    assert pipe64.unet.conv_in.weight.is_contiguous()


def test_compile_wraps_the_unet_once_per_pipeline_and_reuses_it(photo, region, monkeypatch):
    """Only the wiring: a recorder stands in for torch.compile (a real compilation takes
    minutes on a CPU)."""
    from magedit import MagEditPipeline

    pipe = MagEditPipeline.tiny(seed=0)
    compiled, calls = [], []

    def fake_compile(module):
        compiled.append(module)

        def run(*args, **kwargs):
            calls.append(args[1])
            return module(*args, **kwargs)

        return run

    cfg = config(inversion="direct")
    _, plain = edit(pipe, photo, region, cfg)
    monkeypatch.setattr(torch, "compile", fake_compile)
    pipe.cache.clear()
    _, first = edit(pipe, photo, region, cfg.replace(compile=True))
    torch.manual_seed(1)  # the global generator elsewhere: nothing in an edit reads it
    torch.rand(1000)
    _, second = edit(pipe, photo, region, cfg.replace(compile=True))
    assert compiled == [pipe.unet]
    assert len(calls) > 2 * cfg.steps  # the inversion's and both edits' UNet calls
    assert torch.equal(first.latents, plain.latents)
    assert torch.equal(second.latents, first.latents)  # no random choice on this path
    # The flag off again: the plain UNet, the compiled one kept for later.
    count = len(calls)
    edit(pipe, photo, region, cfg)
    assert len(calls) == count and compiled == [pipe.unet]


@pytest.mark.parametrize("where", ["compile", "first call"])
def test_compile_failure_warns_and_runs_uncompiled(photo, region, monkeypatch, where):
    from magedit import MagEditPipeline

    pipe = MagEditPipeline.tiny(seed=0)
    cfg = config(inversion="direct", max_iter=1)
    _, plain = edit(pipe, photo, region, cfg)

    def broken(*args, **kwargs):
        raise RuntimeError("no C compiler found")

    def fake_compile(module):
        if where == "compile":
            broken()
        return broken

    monkeypatch.setattr(torch, "compile", fake_compile)
    pipe.cache.clear()
    with pytest.warns(RuntimeWarning, match="torch.compile is unavailable here.*no C compiler"):
        _, result = edit(pipe, photo, region, cfg.replace(compile=True))
    assert torch.equal(result.latents, plain.latents)


def test_cli_flags_set_the_speed_options():
    from magedit import cli

    def parse(*flags):
        argv = ["edit", "--image", "p.png", "--mask", "m.png", "--source", SOURCE]
        argv += ["--target", TARGET, "--out", "o.png", *flags]
        return cli.build_config(cli.build_parser().parse_args(argv))

    plain = parse()
    assert (plain.early_stop, plain.channels_last, plain.compile) == (0.0, None, False)
    fast = parse("--early-stop", "0.05", "--channels-last", "--compile")
    assert (fast.early_stop, fast.channels_last, fast.compile) == (0.05, True, True)
    assert parse("--no-channels-last").channels_last is False
    with pytest.raises(ValueError) as refused:
        parse("--early-stop", "2")
    assert say(refused.value, "cli") == (
        "--early-stop is 2, out of range; give a number from 0 to 0.99"
    )


@pytest.mark.slow
def test_a_compiled_unet_call_gives_the_eager_noise():
    """The real torch.compile (inductor) on one UNet call of the tiny model, the way the pipeline
    calls it with ``compile=True``: the same noise up to float rounding (stated tolerance: 1e-5
    relative). About a minute of compilation on a CPU; a whole compiled edit recompiles per call
    plan and map size and takes minutes, so ``compile`` stays experimental."""
    import warnings

    from magedit import MagEditPipeline

    pipe = MagEditPipeline.tiny(seed=0)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, 32, 32, generator=g)
    emb = torch.randn(1, 77, pipe.unet.config.cross_attention_dim, generator=g)
    t = torch.tensor([981])
    eager = pipe._eps(z, t, emb)
    pipe._configure(config(compile=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "torch.compile is unavailable here"
        compiled = pipe._eps(z, t, emb)
    assert pipe._compiled is not pipe.unet and pipe._use_compiled
    error = (compiled - eager).norm() / eager.norm()
    assert error < 1e-5, error
    assert eager.abs().mean() > 0.1  # a real noise prediction, not zeros
