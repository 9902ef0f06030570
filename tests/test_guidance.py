import math

import pytest
import torch
from conftest import SOURCE, TARGET, scene, scene_mask

from magedit import EditConfig
from magedit.guidance import (
    dilate,
    guide,
    latent_blend,
    masked_update,
    objective_gradient,
    step_size,
)
from magedit.inversion import DDIMSchedule


def test_step_sizes_of_appendix_b():
    alpha = torch.tensor(0.25)
    assert step_size("token_ratio", alpha) == pytest.approx(math.sqrt(0.75 / 0.25))
    assert step_size("spatial_ratio", alpha) == 1.0


def test_masked_update_leaves_the_outside_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, 8, 8, generator=g)
    grad = torch.randn(1, 4, 8, 8, generator=g) * 1e6
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:5, 3:7] = 1
    out = masked_update(z, grad, mask, 0.5)
    outside = (mask == 0).expand_as(z)
    assert torch.equal(out[outside], z[outside])
    assert torch.equal(out[~outside], (z - 0.5 * grad)[~outside])


def test_latent_blend_and_dilation():
    mask = torch.zeros(1, 1, 5, 5)
    mask[..., 2, 2] = 1
    grown = dilate(mask)
    assert grown.sum() == 9 and grown[..., 1:4, 1:4].eq(1).all()
    edit, source = torch.ones(1, 4, 5, 5), torch.zeros(1, 4, 5, 5)
    blended = latent_blend(edit, source, grown)
    assert blended.sum() == 4 * 9


@pytest.mark.parametrize("constraint", ["token_ratio", "spatial_ratio"])
def test_guidance_on_the_unet_moves_only_masked_latents(tiny_pipe, constraint):
    """Algorithm 1 on real UNet attention: the in-mask ratio rises over the iterations, the loss
    falls, and latents outside the mask are bit-for-bit those before guidance."""
    cfg = EditConfig(resolution=256, inversion="direct", constraint=constraint, scale=20.0)
    cfg = cfg.with_steps(10)
    image, mask = scene(192, 256), scene_mask(192, 256)
    prepared = tiny_pipe.prepare(image, SOURCE, TARGET, mask, config=cfg)
    inversion = tiny_pipe.invert(prepared)
    schedule = DDIMSchedule(cfg.steps)
    t = schedule.timesteps[0]
    z = inversion.z_T.clone()
    # The loss of the first step, with the reconstruction branch's maps recorded for it as the
    # pipeline records them.
    objective = tiny_pipe.mag_objective(prepared, inversion, 0)
    (region,) = prepared.regions
    update_mask = region.latent_mask
    delta = step_size(constraint, schedule.alpha(t))
    steps = list(guide(z, objective_gradient(objective), update_mask, delta, 5))
    outside = (update_mask == 0).expand_as(z)
    for step in steps:
        assert torch.equal(step.z[outside], z[outside])
    assert not torch.equal(steps[-1].z[~outside], z[~outside])
    assert steps[-1].ratio > steps[0].ratio
    assert steps[-1].loss < steps[0].loss


@pytest.mark.parametrize("reference", [False, True])
def test_mag_objective_is_the_loss_an_edit_starts_from(tiny_pipe, reference):
    """The public hook gives the loss and in-mask ratio of the edit's first MAG iteration (at
    step 0 the edit's latent is z_T itself), on the fast path and on the reference path."""
    cfg = EditConfig(resolution=256, inversion="direct", max_iter=2, reference=reference)
    cfg = cfg.with_steps(10)
    prepared = tiny_pipe.prepare(scene(192, 256), SOURCE, TARGET, scene_mask(192, 256), config=cfg)
    inversion = tiny_pipe.invert(prepared)
    _, (loss, ratio) = tiny_pipe.mag_objective(prepared, inversion, 0)(inversion.z_T.clone())
    first = next(e for e in tiny_pipe.edit(prepared, inversion) if e.phase == "guidance")
    assert (first.step, first.iteration) == (1, 1)
    assert float(loss) == pytest.approx(first.loss, rel=1e-5)
    assert float(ratio) == pytest.approx(first.in_mask_ratio, rel=1e-5)
    assert 0 < float(ratio) < 1
