"""Reproduce the authors' released token-ratio code on identical random weights.

``tests/oracle`` (see its README) holds a tiny random-weight model with SD v1.4's layout and the
real CLIP tokenizer, an image, a mask and what the authors' code (diffusers 0.11.1, CPU, fp32) produced:
z_T of DDIM inversion, the 50 null-text embeddings, and the decoded reconstruction and edit.
Closeness is judged against the size of the edit's own effect (their edit minus their
reconstruction inside the mask), not against zero.
"""

import copy
import dataclasses
import os

import numpy as np
import pytest
import torch

from benchmarks import faithfulness
from benchmarks.faithfulness import ORACLE, authors_config, oracle_model, oracle_settings
from magedit import MagEditPipeline, images
from magedit.inversion import DDIMSchedule, null_text_optimize


@pytest.fixture(scope="module")
def oracle():
    return oracle_settings()


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    model = oracle_model(tmp_path_factory.mktemp("oracle"))
    return MagEditPipeline.from_pretrained(str(model), device="cpu")


@pytest.fixture(scope="module")
def ddim_inversion(pipe, oracle):
    settings, _ = oracle
    return pipe.invert_image(
        ORACLE / "image.png", settings["source"], config=authors_config(settings, inversion="ddim")
    )


def test_image_loads_as_theirs(oracle):
    _, data = oracle
    assert np.array_equal(images.load_image(ORACLE / "image.png"), data["image_gt"])


def test_schedule_is_the_one_their_code_runs():
    # StableDiffusionPipeline rewrites the authors' scheduler to steps_offset 1.
    schedule = DDIMSchedule(50)
    assert schedule.timesteps[:3] == [981, 961, 941] and schedule.timesteps[-1] == 1


def test_ddim_inversion_reproduces_their_z_T(ddim_inversion, oracle):
    _, data = oracle
    theirs = torch.from_numpy(data["x_t"])
    diff = (ddim_inversion.z_T - theirs).abs()
    # Measured: max 2.5e-3 (float rounding amplified in the chaotic top rows of this random
    # model), mean 4e-5. With the scheduler at steps_offset 0 the max is 3.97: a real error shows.
    assert diff.max() < 1e-2
    assert diff.mean() < 2e-4


def test_first_null_text_steps_reproduce_their_embeddings(pipe, ddim_inversion, oracle):
    settings, data = oracle
    k = 3
    schedule = copy.copy(DDIMSchedule(50))
    schedule.timesteps = schedule.timesteps[:k]  # only the first k denoising steps
    empty = pipe.encode_prompt("")
    uncond = null_text_optimize(
        pipe._eps,
        ddim_inversion.trajectory,
        empty,
        pipe.encode_prompt(settings["source"]),
        schedule,
        guidance=7.5,
    )
    theirs = torch.from_numpy(data["uncond"][:k])
    moved = (theirs - empty).abs().mean()  # how far the optimisation moved the embedding
    assert moved > 1e-3
    diff = (uncond - theirs).abs()
    # Measured: mean 1.9e-4 against a move of 0.19; median 2e-6, 90% within 3e-5. Adam turns
    # near-zero gradients into +-lr steps whose sign is float rounding, so the last percent of
    # elements differ by up to ~1e-2: judged by the mean and the bulk, not the maximum.
    assert diff.mean() < 0.01 * moved
    assert diff.flatten().quantile(0.9) < 1e-4


def test_edit_reproduces_their_images(pipe, ddim_inversion, oracle):
    settings, data = oracle
    config = authors_config(settings)
    assert (config.tau1, config.tau_self, config.tau2, config.blend_steps) == (10, 25, 25, 15)
    mask = images.load_mask(ORACLE / "mask.png")
    prepared = pipe.prepare(
        ORACLE / "image.png",
        settings["source"],
        settings["target"],
        mask,
        [settings["word"]],
        config=config,
    )
    # Their z_T and null-text embeddings, our editing loop: a null-text inversion of this edit.
    inversion = dataclasses.replace(
        ddim_inversion,
        method="null_text",
        trajectory=torch.cat([ddim_inversion.trajectory[:-1], torch.from_numpy(data["x_t"])[None]]),
        uncond=torch.from_numpy(data["uncond"]),
        key=pipe.inversion_key(prepared),
    )
    *_, result = pipe.edit(prepared, inversion)
    ours = pipe.decode_latents(torch.cat([result.source_latents, result.latents])).numpy()
    theirs = data["images"]
    effect = np.abs(theirs[1] - theirs[0])[:, mask].mean()
    # Measured: reconstruction and edit both within 1.6e-4 of theirs everywhere (max), 1.4e-7
    # on average inside the mask, where the edit's own effect is 3.6e-3 on average.
    assert effect > 1e-3
    assert np.abs(ours[0] - theirs[0]).max() < 1e-3
    assert np.abs(ours[1] - theirs[1]).max() < 1e-3
    assert np.abs(ours[1] - theirs[1])[:, mask].mean() < 0.01 * effect
    our_effect = np.abs(ours[1] - ours[0])[:, mask].mean()
    assert our_effect == pytest.approx(effect, rel=0.01)


@pytest.mark.slow
def test_our_own_inversion_and_edit_reproduce_theirs_end_to_end(pipe):
    """Our null-text inversion of their photo, then our edit: the whole path a user runs, with
    nothing of theirs but the settings. Pins the inversion end to end (issue 25: the tests above
    start from their z_T and embeddings, so they could not see a drift of ours)."""
    # Two torch threads where there are two cores (the rest of the tests use one): the 64 x 64
    # null-text inversion takes about 2.7 minutes so instead of 4.6.
    threads = torch.get_num_threads()
    torch.set_num_threads(max(threads, min(2, os.cpu_count() or 1)))
    try:
        figures = faithfulness.measure(pipe)["case1"]
    finally:
        torch.set_num_threads(threads)
    # Measured on a 2-core CPU: z_T max 1.3e-3 with two threads, 4.4e-3 with one (float
    # rounding amplified in the chaotic top rows of this random model; mean 2.5e-5 / 8.6e-5);
    # the edit 1.4% (two threads) and 3.2% (one) of the edit's own effect away from theirs inside
    # the mask. The same at every commit since the oracle was first reproduced.
    assert figures["xT_max"] <= 5e-3
    assert figures["xT_mean"] <= 2e-4
    assert figures["effect"] > 1e-3
    assert figures["edit_pct"] <= 5.0
    assert figures["recon_pct"] <= 5.0
