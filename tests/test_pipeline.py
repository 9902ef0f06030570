"""End-to-end behaviour of MagEditPipeline on tiny random-weight components (CPU, offline)."""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import SOURCE, TARGET, scene, scene_mask

from magedit import EditConfig, Region, images
from magedit.pipeline import EditEvent, EditResult, PreparedEdit, PreparedRegion

H, W = 192, 256  # processing size at resolution 256: latent 24x32, attention maps 6x8
FAST = dict(resolution=256, inversion="direct")


def config(**changes):
    return EditConfig(**{**FAST, "max_iter": 2, **changes}).with_steps(10)


@pytest.fixture(scope="module")
def photo():
    return scene(H, W)


@pytest.fixture(scope="module")
def region():
    return scene_mask(H, W)


def run(pipe, image, mask, cfg, target=TARGET, **kwargs):
    prepared = pipe.prepare(image, SOURCE, target, mask, config=cfg, **kwargs)
    events = list(pipe.edit(prepared, pipe.invert(prepared)))
    assert isinstance(events[-1], EditResult)
    return events[:-1], events[-1]


@pytest.fixture
def unet_calls(tiny_pipe, monkeypatch):
    """The UNet calls the test makes (each call's timestep), counted at the UNet itself."""
    calls = []
    forward = tiny_pipe.unet.forward

    def counting(sample, timestep, *args, **kwargs):
        calls.append(timestep)
        return forward(sample, timestep, *args, **kwargs)

    monkeypatch.setattr(tiny_pipe.unet, "forward", counting)
    return calls


def test_edit_streams_events_then_the_result(tiny_pipe, photo, region):
    cfg = config()
    events, result = run(tiny_pipe, photo, region, cfg)
    assert all(isinstance(e, EditEvent) for e in events)
    guided = [i for i in range(cfg.steps) if cfg.guide_at(i)]
    guidance = [e for e in events if e.phase == "guidance"]
    denoise = [e for e in events if e.phase == "denoise"]
    assert len(guidance) == len(guided) * cfg.max_iter == 10
    assert [e.step for e in denoise] == list(range(1, 11))
    assert all(e.total == 10 for e in events)
    last = denoise[-1]
    assert last.preview.shape == (24, 32, 3) and last.preview.dtype == np.uint8
    assert last.attention.shape == (6, 8) and 0 <= last.attention.min() <= last.attention.max() <= 1
    assert all(np.isfinite(e.loss) and 0 <= e.in_mask_ratio <= 1 for e in events)
    assert result.image.shape == (H, W, 3) and result.composited.shape == photo.shape
    assert result.words == [["green"]] and result.config == cfg
    assert (result.source_prompt, result.target_prompt) == (SOURCE, TARGET)
    assert set(result.timings) == {"inversion", "editing", "decode"}


def test_composite_keeps_every_pixel_outside_the_dilated_mask(tiny_pipe, region):
    original = scene(300, 400)  # not the processing size: composited at the original size
    mask = scene_mask(300, 400)
    _, result = run(tiny_pipe, original, mask, config())
    assert result.composited.shape == original.shape
    band = images.composite_band(original.shape)
    outside = ~images.dilate(mask, band)
    assert np.array_equal(result.composited[outside], original[outside])
    inside = images.dilate(mask, -band)
    assert not np.array_equal(result.composited[inside], original[inside])


def test_same_inputs_identical_bytes(tiny_pipe, photo, region):
    """Nothing in an edit draws a random number: the global generator, seeded differently before
    each run, changes no byte."""
    cfg = config(inversion="ddim")
    torch.manual_seed(11)
    _, first = run(tiny_pipe, photo, region, cfg)
    tiny_pipe.cache.clear()
    torch.manual_seed(123456)
    torch.rand(1000)
    _, second = run(tiny_pipe, photo, region, cfg)
    assert torch.equal(first.latents, second.latents)
    assert first.image.tobytes() == second.image.tobytes()
    assert first.composited.tobytes() == second.composited.tobytes()


@pytest.mark.parametrize("constraint", ["token_ratio", "spatial_ratio"])
def test_guidance_raises_the_in_mask_ratio_and_lowers_the_loss(
    tiny_pipe, photo, region, constraint
):
    cfg = config(constraint=constraint, max_iter=6, scale=20.0)
    events, _ = run(tiny_pipe, photo, region, cfg)
    first_step = [e for e in events if e.phase == "guidance" and e.step == 1]
    ratios = [e.in_mask_ratio for e in first_step]
    losses = [e.loss for e in first_step]
    assert len(first_step) == 6
    assert ratios[-1] > ratios[0] and losses[-1] < losses[0]
    assert sum(b > a for a, b in zip(ratios, ratios[1:], strict=False)) >= 4


@pytest.mark.parametrize("inversion", ["direct", "ddim"])
def test_fast_path_equals_the_paper_literal_reference_path(tiny_pipe, photo, region, inversion):
    cfg = config(inversion=inversion, max_iter=3)
    fast_events, fast = run(tiny_pipe, photo, region, cfg)
    ref_events, ref = run(tiny_pipe, photo, region, cfg.replace(reference=True))
    # Equal up to float rounding: outside MAG the fast path runs both branches in one batch-4
    # (direct: batch-3) UNet call where the reference makes two calls, and it reuses the
    # reconstruction pass's maps where the reference recomputes them at batch 1. A UNet output
    # changes by ~1e-6 with the batch's composition on CPU; classifier-free guidance (x7.5) and the
    # DDIM steps carry that to ~1e-4 on the final latent.
    assert torch.allclose(fast.latents, ref.latents, atol=1e-3)
    assert (fast.latents - ref.latents).abs().mean() < 1e-5
    fast_losses = [e.loss for e in fast_events if e.phase == "guidance"]
    ref_losses = [e.loss for e in ref_events if e.phase == "guidance"]
    assert np.allclose(fast_losses, ref_losses, rtol=1e-4, atol=1e-6)
    # The guidance moved the latent (the comparison is not of two no-ops).
    _, unguided = run(tiny_pipe, photo, region, cfg.replace(max_iter=0))
    assert (fast.latents - unguided.latents).abs().max() > 1e-3


def test_without_guidance_it_is_prompt_to_prompt_with_blend(tiny_pipe, photo, region):
    """MAX_IT = 0 is the paper's "w/o MAG" baseline: no guidance events, and with the source
    prompt as target the editing branch reproduces the reconstruction."""
    cfg = config(inversion="ddim", max_iter=0)
    events, result = run(tiny_pipe, photo, region, cfg, target=SOURCE, words=["sofa"])
    assert not [e for e in events if e.phase == "guidance"]
    assert torch.allclose(result.latents, result.source_latents, atol=1e-5)


def test_direct_inversion_reconstructs_exactly(tiny_pipe, photo, region):
    cfg = config(max_iter=0)
    inversion = tiny_pipe.invert_image(photo, SOURCE, config=cfg)
    _, result = run(tiny_pipe, photo, region, cfg)
    assert torch.equal(result.source_latents, inversion.trajectory[0])


def test_null_text_reconstructs_better_than_ddim(tiny_pipe, photo, region):
    errors = {}
    for method in ("ddim", "null_text"):
        cfg = config(inversion=method, max_iter=0)
        inversion = tiny_pipe.invert_image(photo, SOURCE, config=cfg)
        _, result = run(tiny_pipe, photo, region, cfg)
        errors[method] = float((result.source_latents - inversion.trajectory[0]).pow(2).mean())
    assert errors["null_text"] < 0.9 * errors["ddim"], errors


def test_inversion_is_cached(tiny_pipe, photo):
    cfg = config(inversion="ddim")
    tiny_pipe.cache.clear()
    hits, misses = tiny_pipe.cache.hits, tiny_pipe.cache.misses
    first = tiny_pipe.invert_image(photo, SOURCE, config=cfg)
    again = tiny_pipe.invert_image(photo.copy(), SOURCE, config=cfg)
    assert not first.cached and again.cached
    assert torch.equal(first.trajectory, again.trajectory)
    other = tiny_pipe.invert_image(photo, "a photo of a sofa", config=cfg)
    assert not other.cached
    assert (tiny_pipe.cache.hits - hits, tiny_pipe.cache.misses - misses) == (1, 2)


def test_multi_region_and_negative_word(tiny_pipe, photo, region):
    cfg = config(max_iter=2)
    inversion = tiny_pipe.invert_image(photo, SOURCE, config=cfg)
    second = np.zeros_like(region)
    second[:40, :60] = True
    target = "a photo of a green sofa in a blue living room"
    regions = [Region(region, ["green"], 1.0), Region(second, ["blue"], 3.0)]
    prepared = tiny_pipe.prepare(photo, SOURCE, target, regions=regions, config=cfg)
    result = list(tiny_pipe.edit(prepared, inversion))[-1]
    assert result.words == [["green"], ["blue"]]
    assert np.array_equal(result.mask, region | second)
    plain_edit = tiny_pipe.prepare(photo, SOURCE, TARGET, region, config=cfg)
    negative_edit = tiny_pipe.prepare(
        photo, SOURCE, TARGET, region, negative_word="red", config=cfg
    )
    plain = list(tiny_pipe.edit(plain_edit, inversion))
    negative = list(tiny_pipe.edit(negative_edit, inversion))
    assert negative[-1].negative_word == "red" and plain[-1].negative_word is None
    first_plain = plain[-1].losses[0]
    first_negative = negative[-1].losses[0]
    # Eq. 7 subtracts lambda_ng * L_ng (> 0), so the objective is lower with the negative word;
    # the edit words' loss is the same quantity in both.
    assert first_negative["objective"] < first_plain["objective"] - 1e-3
    assert first_negative["loss"] == pytest.approx(first_plain["loss"], rel=1e-5)
    assert first_plain["objective"] == pytest.approx(first_plain["loss"], rel=1e-5)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(target=""), "target prompt is empty"),
        (dict(words=["purple"]), "'purple' is not in the target prompt"),
        (dict(words=["sofa"]), "is in both prompts"),
        (dict(mask="empty"), "mask is empty"),
        (dict(mask="speck"), "vanishes at the 8x6 attention resolution"),
        (dict(mask="all"), "covers 100.0% of the image"),
        (dict(config=dict(steps=20)), "inversion is of another photo, source prompt or inversion"),
        (dict(config=dict(resolution=128)), "(method, steps, guidance, resolution, model)"),
        (dict(config=dict(guidance_scale=2.0)), "(method, steps, guidance, resolution, model)"),
    ],
)
def test_bad_input_is_refused_before_any_unet_work(
    tiny_pipe, photo, region, unet_calls, change, message
):
    cfg = config()
    inversion = tiny_pipe.invert_image(photo, SOURCE, config=cfg)
    masks = {
        "empty": np.zeros_like(region),
        "speck": np.pad(np.ones((2, 2), bool), ((10, H - 12), (10, W - 12))),
        "all": np.ones_like(region),
    }
    mask = masks.get(change.get("mask"), region)
    edit_cfg = EditConfig(**{**cfg.to_dict(), **change.get("config", {})})
    unet_calls.clear()  # the inversion's (none when it came from the cache)
    with pytest.raises(ValueError, match=message):
        prepared = tiny_pipe.prepare(
            photo,
            SOURCE,
            change.get("target", TARGET),
            mask,
            change.get("words"),
            config=edit_cfg,
        )
        tiny_pipe.edit(prepared, inversion)  # an inversion of other settings than the edit's
    assert unet_calls == []


def test_prepare_needs_no_inversion(tiny_pipe, photo, region):
    cfg = config()
    prepared = tiny_pipe.prepare(photo, SOURCE, TARGET, region, config=cfg)
    assert isinstance(prepared, PreparedEdit) and prepared.config == cfg
    (checked,) = prepared.regions
    assert isinstance(checked, PreparedRegion) and prepared.words == [["green"]]
    assert checked.words == ["green"] and checked.positions == [[5]]  # <start> a photo of a green
    assert checked.latent_mask.shape == (1, 1, 24, 32) and checked.attention_mask.shape == (48,)
    assert checked.latent_mask.device.type == checked.attention_mask.device.type == "cpu"
    assert np.array_equal(prepared.mask, region) and prepared.image.shape == (H, W, 3)
    speck = np.zeros_like(region)
    speck[10:12, 10:12] = True
    with pytest.raises(ValueError, match="vanishes at the 8x6 attention resolution"):
        tiny_pipe.prepare(photo, SOURCE, TARGET, speck, config=cfg)
    with pytest.raises(ValueError, match="^negative word 'blue' is not in the source prompt"):
        tiny_pipe.prepare(photo, SOURCE, TARGET, region, negative_word="blue", config=cfg)
    with pytest.raises(ValueError, match="^negative word 'red' is not in the negative prompt"):
        tiny_pipe.prepare(
            photo, SOURCE, TARGET, region, negative_word="red", negative_prompt="a sofa"
        )
    # Without guidance a shared word is allowed (it only picks the attention map shown).
    words = tiny_pipe.prepare(
        photo, SOURCE, TARGET, region, ["sofa"], config=cfg.replace(max_iter=0)
    ).words
    assert words == [["sofa"]]


def test_prepare_makes_no_model_call_and_leaves_the_attention_state(
    tiny_pipe, photo, region, unet_calls, monkeypatch
):
    """prepare runs on the CPU beside a running edit: no UNet, text encoder or VAE call, no
    inversion, and the attention processors' alignment is the running edit's still."""

    def fail(*args, **kwargs):
        raise AssertionError("prepare called a model")

    for name in ("encode_prompt", "encode_image", "decode_latents", "invert", "_eps"):
        monkeypatch.setattr(tiny_pipe, name, fail)
    running = torch.arange(77), torch.ones(77)
    monkeypatch.setattr(tiny_pipe.controller, "mapper", running[0])
    monkeypatch.setattr(tiny_pipe.controller, "alphas", running[1])
    second = np.zeros_like(region)
    second[:40, :60] = True
    target = "a photo of a green sofa in a blue living room"
    regions = [Region(region, "green"), Region(second, "blue", 2.0)]
    tiny_pipe.prepare(photo, SOURCE, target, regions=regions, negative_word="red", config=config())
    assert tiny_pipe.controller.mapper is running[0] and tiny_pipe.controller.alphas is running[1]
    assert unet_calls == []


def test_invert_of_a_prepared_edit_is_cached_and_checks_nothing_again(
    tiny_pipe, photo, region, monkeypatch
):
    cfg = config(inversion="ddim")
    prepared = tiny_pipe.prepare(photo, SOURCE, TARGET, region, config=cfg)
    tiny_pipe.cache.clear()
    first = tiny_pipe.invert(prepared)
    assert not first.cached and first.source_prompt == SOURCE and first.method == "ddim"
    monkeypatch.setattr("magedit.prompts.check_prompt", None)  # a second check would fail
    again = tiny_pipe.invert(prepared)
    assert again.cached and torch.equal(again.trajectory, first.trajectory)
    monkeypatch.undo()
    # The same inversion as the photo's with the prompt: one cache entry serves both.
    assert tiny_pipe.invert_image(photo, SOURCE, config=cfg).cached
    # One kind of argument per parameter: invert takes a prepared edit, invert_image a photo.
    with pytest.raises(TypeError):
        tiny_pipe.invert(prepared, config=cfg)
    with pytest.raises(ValueError, match=r"^invert\(\) takes a PreparedEdit, got ndarray"):
        tiny_pipe.invert(photo)
    *_, result = tiny_pipe.edit(prepared)  # None: inverted first, here from the cache
    assert result.inversion_cached


def test_edit_runs_only_a_prepared_edit_with_its_own_inversion(tiny_pipe, photo, region):
    cfg = config()
    prepared = tiny_pipe.prepare(photo, SOURCE, TARGET, region, config=cfg)
    inversion = tiny_pipe.invert(prepared)
    with pytest.raises(ValueError, match=r"^edit\(\) runs a PreparedEdit, got Inversion"):
        tiny_pipe.edit(inversion, TARGET)
    with pytest.raises(ValueError, match="runs a PreparedEdit, got str"):
        tiny_pipe.edit("a photo of a green sofa")
    other_photo = tiny_pipe.invert_image(photo[::-1].copy(), SOURCE, config=cfg)
    other_prompt = tiny_pipe.invert_image(photo, "a photo of a sofa", config=cfg)
    for other in (other_photo, other_prompt):
        with pytest.raises(ValueError, match="inversion is of another photo, source prompt"):
            tiny_pipe.edit(prepared, other)
    elsewhere = dataclasses.replace(prepared, model_id="another-model")
    with pytest.raises(ValueError, match="prepared by the pipeline of 'another-model'"):
        tiny_pipe.edit(elsewhere, inversion)


def test_prepare_refuses_bad_regions_and_words(tiny_pipe, photo, region):
    cfg = config()
    second = np.zeros_like(region)
    second[:40, :60] = True
    target = "a photo of a green sofa in a blue living room"

    def refused(message, *args, **kwargs):
        with pytest.raises(ValueError, match=message):
            tiny_pipe.prepare(photo, SOURCE, *args, config=cfg, **kwargs)

    shared = [Region(region, ["green"]), Region(second, ["blue", "Green"])]
    refused("^the edit word 'green' is given to regions 1 and 2", target, regions=shared)
    refused("the target prompt adds no word for region 1 besides the other regions' words",
            TARGET, regions=[Region(region), Region(second, "green")])  # fmt: skip
    many = " ".join(f"w{n}" for n in range(17))
    refused("^17 edit words were given; give at most 16", f"a photo of a red sofa {many}",
            region, many.split())  # fmt: skip
    refused("^the edit word 'green' is given twice", TARGET, region, ["green", "GREEN"])
    refused("^a negative prompt needs a negative word", TARGET, region, negative_prompt="a sofa")
    refused("^no mask given", TARGET)
    refused("either mask= .* or regions=, not both", TARGET, region, regions=[Region(region)])
    refused("^no edit region given", TARGET, regions=[])
    refused("^9 regions were given; edit at most 8", target, regions=[Region(region)] * 9)
    refused("^a region must be a Region, got ndarray", TARGET, regions=[region])


def test_a_region_without_words_gets_the_new_words_no_other_region_has(tiny_pipe, photo, region):
    second = np.zeros_like(region)
    second[:40, :60] = True
    target = "a photo of a green sofa in a blue living room"
    regions = [Region(region), Region(second, "blue", 3.0)]
    prepared = tiny_pipe.prepare(photo, SOURCE, target, regions=regions, config=config())
    assert prepared.words == [["green"], ["blue"]]
    assert [r.weight for r in prepared.regions] == [1.0, 3.0]
    assert np.array_equal(prepared.mask, region | second)


def test_a_region_is_checked_when_made(region):
    assert Region(region, "green").words == ["green"]  # a bare word, not its letters
    assert Region(region, ["", " "]).words is None and Region(region, []).words is None
    assert Region(region, ["green", " "]).words == ["green"]
    assert Region(region.astype(np.uint8) * 255).mask.dtype == bool
    assert Region(region, weight=2).weight == 2.0
    for weight in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="a region's weight is .*; give a number above 0"):
            Region(region, weight=weight)
    for weight in (True, "2", None):
        with pytest.raises(ValueError, match="a region's weight must be a number"):
            Region(region, weight=weight)
    with pytest.raises(ValueError, match="^the mask is empty"):
        Region(np.zeros_like(region))


def test_nan_latents_stop_the_edit_with_a_readable_error(tiny_pipe, photo, region, monkeypatch):
    cfg = config(inversion="ddim", max_iter=0)
    prepared = tiny_pipe.prepare(photo, SOURCE, TARGET, region, config=cfg)
    inversion = tiny_pipe.invert(prepared)
    real_eps = tiny_pipe._eps
    calls = []

    def eps_with_nan(latents, t, emb):
        calls.append(t)
        out = real_eps(latents, t, emb)
        # One UNet call per step outside MAG (both branches batched): from step 4 on, NaN.
        return out * float("nan") if len(calls) > 3 else out

    monkeypatch.setattr(tiny_pipe, "_eps", eps_with_nan)
    events = tiny_pipe.edit(prepared, inversion)
    with pytest.raises(FloatingPointError, match="became NaN or infinite at step 4"):
        for _ in events:
            pass
    monkeypatch.undo()
    # The pipeline is usable again: the next edit completes.
    *_, result = tiny_pipe.edit(prepared, inversion)
    assert np.isfinite(result.latents.numpy()).all()


@pytest.mark.parametrize(
    ("method", "negative", "reference"),
    [
        ("direct", None, False),
        ("ddim", "red", False),
        ("null_text", None, False),
        ("direct", "red", True),
    ],
)
def test_the_plan_of_unet_calls_is_the_calls_an_edit_makes(
    tiny_pipe, photo, region, monkeypatch, method, negative, reference
):
    """The ZeroGPU reservation and the page's time estimate read ``step_calls`` and
    ``inversion_calls``: the batch of every UNet call an edit makes, in order, is theirs."""
    from magedit.pipeline import inversion_calls, step_calls

    cfg = config(inversion=method, reference=reference, null_inner_steps=2, max_iter=2)
    prepared = tiny_pipe.prepare(photo, SOURCE, TARGET, region, negative_word=negative, config=cfg)
    tiny_pipe.cache.clear()
    batches: list[int] = []
    real = tiny_pipe._eps

    def counted(latents, t, emb):
        batches.append(latents.shape[0])
        return real(latents, t, emb)

    monkeypatch.setattr(tiny_pipe, "_eps", counted)
    inversion = tiny_pipe.invert(prepared)
    inverted, batches[:] = list(batches), []
    list(tiny_pipe.edit(prepared, inversion))
    planned = [c for i in range(cfg.steps) for c in step_calls(cfg, i, method, bool(negative))]
    assert batches == [c.batch for c in planned]
    assert {c.kind for c in planned} >= {"forward", "mag"}
    planned_inversion = [c for step in inversion_calls(cfg) for c in step]
    if method == "null_text":  # inner steps stop early below their threshold: at most planned
        assert len(inverted) <= len(planned_inversion) and set(inverted) == {1}
        assert sum(c.kind == "forward" for c in planned_inversion) == 3 * cfg.steps
    else:
        assert inverted == [c.batch for c in planned_inversion]


def test_the_loss_has_one_sign_and_one_meaning_in_every_event(tiny_pipe, photo, region):
    """Newcomer item 4: with a negative word the guidance events showed the objective of Eq. 7
    (negative: lambda_p L - lambda_ng L_ng) and the denoising events lambda_p L (positive). Every
    event reports the edit words' loss lambda_p L; the negative word's term stays inside the
    objective that MAG minimises."""
    cfg = config(scale=2.5, negative_scale=5.5, max_iter=3)
    events, result = run(tiny_pipe, photo, region, cfg, negative_word="red")
    guidance = [e for e in events if e.phase == "guidance"]
    denoise = [e for e in events if e.phase == "denoise"]
    assert guidance and denoise
    assert all(e.loss >= 0 for e in guidance + denoise)
    # The guidance loss is lambda_p (1 - ratio)^2 averaged: at most lambda_p, as the steps' is.
    assert all(e.loss <= cfg.scale + 1e-6 for e in guidance + denoise)
    # The objective (with the negative term) is what the early stop and the log keep apart.
    logged = result.losses
    assert [row["loss"] for row in logged] == [e.loss for e in guidance]
