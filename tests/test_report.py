"""The evidence of an edit (issue 23): its report, the compare mode's methods and the recipe that
replays it, on the tiny pipeline."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import SOURCE, TARGET, scene, scene_mask

from magedit import EditConfig, bench, controls, report
from magedit.config import METHODS
from magedit.errors import InputError
from magedit.evaluate import ClipScorer, Metrics
from magedit.pipeline import EditResult
from magedit.recipe import MAX_BYTES, Recipe, rle_decode, rle_encode

H, W = 96, 128
CONFIG = EditConfig(resolution=128, inversion="direct", max_iter=2).with_steps(6)


def edit(pipe, prepared):
    *_, result = pipe.edit(prepared, pipe.invert(prepared))
    assert isinstance(result, EditResult)
    return result


@pytest.fixture(scope="module")
def prepared(tiny_pipe):
    return tiny_pipe.prepare(scene(H, W), SOURCE, TARGET, scene_mask(H, W), config=CONFIG)


@pytest.fixture(scope="module")
def result(tiny_pipe, prepared):
    return edit(tiny_pipe, prepared)


def test_the_report_of_an_edit(result, prepared):
    said = report.measure(result, prepared.original, None, "no CLIP here")
    # Outside the grown mask the composited result is the photo: infinite PSNR, nothing changed.
    assert said.psnr_outside == math.inf and said.ssim_outside == 1.0
    assert said.changed_outside == 0
    outside = report.outside_region(result.mask)
    assert said.outside_pixels == int(outside.sum()) > 0
    # The raw decode is what shows leakage: random weights change it everywhere.
    raw = report.raw_at_photo_size(result)
    assert said.raw_changed_outside == int(np.any(raw[outside] != scene(H, W)[outside], -1).sum())
    assert 0 < said.raw_psnr_outside < 60 and 0 < said.raw_ssim_outside < 1
    # The ratio before guidance is the first MAG iteration's, after it the last guided step's.
    assert said.ratio_before == result.losses[0]["ratio"]
    last_guided = CONFIG.steps - CONFIG.tau2
    assert said.ratio_after == result.steps[last_guided - 1]["ratio"]
    assert said.ratio_name == "token ratio" and said.phrase == "green sofa"
    assert (said.clip_local, said.clip_whole, said.clip_note) == (None, None, "no CLIP here")
    json.dumps(said.to_dict())  # "inf" as a string: valid JSON
    assert said.to_dict()["psnr_outside"] == "inf"


def test_the_clip_scores_are_measured_when_a_model_is_given(result, prepared):
    said = report.measure(result, prepared.original, ClipScorer.tiny())
    assert 0 <= said.clip_local <= 100 and 0 <= said.clip_whole <= 100
    assert said.clip_note == ""


def test_the_leakage_map_is_red_only_outside_the_mask(result, prepared):
    leak = report.leakage_map(result, prepared.original)
    assert leak.shape == (H, W, 3) and leak.dtype == np.uint8
    reddish = (leak[..., 0].astype(int) - leak[..., 1]) > 60
    assert reddish.any()
    assert not reddish[result.mask].any()  # inside the mask only the dimmed photo


def test_the_report_is_the_figure_magedit_bench_reports(tiny_pipe, tmp_path):
    """One copy of the numbers: bench's row for an edit is the report of the same edit."""
    dataset = tmp_path / "data"
    (dataset / "images").mkdir(parents=True)
    from PIL import Image

    Image.fromarray(scene(H, W)).save(dataset / "images" / "sofa.png")
    Image.fromarray(scene_mask(H, W).astype(np.uint8) * 255).save(dataset / "mask.png")
    entry = {"id": "sofa", "image": "images/sofa.png", "mask": "mask.png", "source": SOURCE,
             "target": TARGET, "words": ["green"], "type": "color"}  # fmt: skip
    (dataset / "prompts.jsonl").write_text(json.dumps(entry) + "\n")
    bench.run_bench(
        dataset, tmp_path / "out", ["magedit-tr", "p2p"], pipe=tiny_pipe,
        metrics=Metrics.tiny(), steps=6, resolution=128, inversion="direct", iterations=2,
        quiet=True, log=lambda _: None,
    )  # fmt: skip
    rows = {
        r["method"]: r for r in bench.merge_results(tmp_path / "out", bench.load_dataset(dataset))
    }
    config = bench.method_config("magedit-tr", "color", 6, 128, "direct", 2)
    prepared = tiny_pipe.prepare(scene(H, W), SOURCE, TARGET, scene_mask(H, W), ["green"],
                                 config=config)  # fmt: skip
    said = report.measure(edit(tiny_pipe, prepared), prepared.original)
    row = rows["magedit-tr"]
    assert float(row["raw_psnr_outside"]) == said.raw_psnr_outside
    assert float(row["psnr_outside"]) == math.inf and float(row["changed_outside"]) == 0
    assert float(row["ratio_after"]) == said.ratio_after
    # Every method's result is pasted onto the photo: its raw decode is what differs.
    assert float(rows["p2p"]["changed_outside"]) == 0
    assert float(rows["p2p"]["raw_changed_outside"]) > 0


def test_compare_runs_the_baselines_on_the_same_inversion(tiny_pipe, prepared):
    inversion = tiny_pipe.invert(prepared)
    results = {m: list(tiny_pipe.edit(prepared.as_method(m), inversion))[-1] for m in METHODS}
    assert results["p2p-blend"].losses == [] and results["p2p"].losses == []
    assert results["magedit"].config == prepared.config
    assert results["p2p"].config.blend_steps == 0
    a, b = results["magedit"].composited, results["p2p-blend"].composited
    assert not np.array_equal(a, b)  # MAG changed the region
    outside = report.outside_region(prepared.mask)
    assert np.array_equal(a[outside], b[outside])  # both keep the photo outside


# ---------------------------------------------------------------------------------- recipes
def test_rle_round_trips_any_mask():
    rng = np.random.default_rng(0)
    for mask in (rng.random((37, 53)) > 0.5, np.ones((4, 5), bool), np.zeros((3, 3), bool)):
        coded = rle_encode(mask)
        assert sum(coded["counts"]) == mask.size
        assert np.array_equal(rle_decode(coded), mask)
    assert rle_encode(np.array([[True, False]]))["counts"] == [0, 1, 1]


def test_a_recipe_round_trips_and_says_what_differs(tiny_pipe, prepared):
    recipe = Recipe.of(prepared, tiny_pipe.model_id)
    again = Recipe.from_json(recipe.to_json())
    assert again.config == prepared.config and again.source_prompt == SOURCE
    assert np.array_equal(again.regions[0].mask, prepared.regions[0].mask)
    assert again.regions[0].words == ["green"]
    replayed = again.prepare(tiny_pipe, scene(H, W))
    assert tiny_pipe.inversion_key(replayed) == tiny_pipe.inversion_key(prepared)
    other = scene(H, W)
    other[0, 0] = 0
    with pytest.raises(InputError) as refused:
        again.check(other, "another-model")
    said = str(refused.value)
    assert "the photo is not the recipe's" in said and "the model is 'another-model'" in said
    assert refused.value.field == "recipe"


def hostile(recipe: dict, **changes) -> bytes:
    return json.dumps({**recipe, **changes}).encode()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda r: b"not json", "the recipe is not JSON"),
        (lambda r: b"[1, 2]", "this is not a MAG-Edit recipe"),
        (lambda r: hostile(r, extra=1), "keys are wrong: unknown ['extra']"),
        (lambda r: hostile(r, **{"{steps}": 1}), "keys are wrong: unknown ['{steps}']"),
        (lambda r: hostile(r, source_prompt=3), "source prompt must be text"),
        (
            lambda r: hostile(r, settings={**r["settings"], "steps": "50"}),
            "steps must be an integer",
        ),
        (lambda r: hostile(r, settings={**r["settings"], "magic": 1}), "unknown EditConfig fields"),
        (
            lambda r: hostile(r, regions=[{**r["regions"][0], "weight": -1}]),
            "weight must be above 0",
        ),
        (
            lambda r: hostile(
                r, regions=[{**r["regions"][0], "mask": {"size": [96, 128], "counts": [5]}}]
            ),
            "runs add up to 5 pixels, not 128x96",
        ),
        (
            lambda r: hostile(
                r, regions=[{**r["regions"][0], "mask": {"size": [100000, 100000], "counts": [1]}}]
            ),
            "over 16 megapixels",
        ),
        (
            lambda r: hostile(
                r, regions=[{**r["regions"][0], "mask": {"size": [96, 128], "counts": [1] * 2**21}}]
            ),
            "counts must be a list of 1 to",
        ),
        (lambda r: b" " * (MAX_BYTES + 1), "a recipe is at most"),
        (lambda r: b'{"kind": "magedit-recipe", "x": ' + b"[" * 100_000, "nested too deeply"),
        (
            lambda r: hostile(r, settings={**r["settings"], "null_epsilon": "x"}),
            "null_epsilon must be a finite number",
        ),
    ],
)
def test_a_malformed_or_hostile_recipe_is_refused_in_words(tiny_pipe, prepared, change, says):
    recipe = Recipe.of(prepared, tiny_pipe.model_id).to_dict()
    with pytest.raises(InputError) as refused:
        Recipe.from_json(change(recipe))
    assert says in str(refused.value), str(refused.value)
    assert refused.value.field == "recipe"
    assert controls.say(refused.value, "cli").startswith(str(refused.value)[:10])
    assert says in controls.say(refused.value, "page")  # the file's braces stay text


def test_a_recipe_names_a_local_model_by_its_folder_on_every_face(tiny_pipe, prepared):
    recipe = Recipe.of(prepared, "/srv/models/sd14")
    assert recipe.model == "local model 'sd14'"
    recipe.check(scene(H, W), "./models/sd14")  # the same folder name: the same model
    with pytest.raises(InputError, match="the model is 'CompVis/stable-diffusion-v1-4'"):
        recipe.check(scene(H, W), "CompVis/stable-diffusion-v1-4")
