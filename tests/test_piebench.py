"""PIE-Bench as distributed (``magedit.piebench``): the mask decoder against hand-written masks,
the reader, the metrics' definitions on hand-computable images, and the whole run on the
synthetic sample with --tiny."""

import csv
import json
import math

import numpy as np
import pytest

from magedit import cli, piebench
from magedit.evaluate import Metrics


def test_the_decoder_follows_their_runs_and_border_rule():
    # A 4 x 5 image, row-major: runs [6, 3] -> pixels 6, 7, 8 (row 1, columns 1-3) and [17, 9]
    # -> 17, 18, 19, cut at the end (20 pixels).
    raw = piebench.mask_decode([6, 3, 17, 9], shape=(4, 5), border=False)
    assert raw.astype(int).tolist() == [
        [0, 0, 0, 0, 0],
        [0, 1, 1, 1, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 1, 1, 1],
    ]
    # Their rule: the first and last rows and columns are always part of the mask.
    assert piebench.mask_decode([6, 3, 17, 9], shape=(4, 5)).astype(int).tolist() == [
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1],
        [1, 0, 0, 0, 1],
        [1, 1, 1, 1, 1],
    ]
    assert not piebench.mask_decode([], shape=(3, 3), border=False).any()
    assert piebench.mask_decode([], shape=(3, 3)).sum() == 8  # all but the centre
    with pytest.raises(ValueError, match="pairs of start, length"):
        piebench.mask_decode([1, 2, 3])


def test_encoding_reads_back():
    rng = np.random.default_rng(0)
    mask = rng.random((512, 512)) < 0.3
    encoded = piebench.mask_encode(mask)
    assert np.array_equal(piebench.mask_decode(encoded, border=False), mask)
    assert piebench.mask_encode(np.zeros((2, 2), bool)) == []
    assert piebench.mask_encode(np.ones((2, 2), bool)) == [0, 4]


def test_prompts_lose_their_brackets_and_give_their_words():
    prompt = "a [blue and white] cat sitting on [a] sofa"
    assert piebench.plain(prompt) == "a blue and white cat sitting on a sofa"
    assert piebench.bracketed_words(prompt) == ["blue", "and", "white", "a"]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pie")
    assert cli.main(["bench", "--make-sample", str(folder), "--format", "pie-bench"]) == 0
    return folder


def test_the_sample_is_in_their_format(sample):
    mapping = json.loads((sample / "mapping_file.json").read_text())
    assert len(mapping) == 5 and all(len(key) == 12 and key.isdigit() for key in mapping)
    first = mapping["000000000001"]
    assert set(first) == {"image_path", "original_prompt", "editing_prompt",
                          "editing_instruction", "editing_type_id", "blended_word", "mask"}  # fmt: skip
    assert first["editing_prompt"] == "a close-up photo of a tabby cat with [blue] eyes"
    assert first["original_prompt"] == "a close-up photo of a tabby cat with [green] eyes"
    assert first["blended_word"] == "green blue" and first["editing_type_id"] == "6"
    image = sample / "annotation_images" / first["image_path"]
    from PIL import Image

    assert Image.open(image).size == (512, 512)
    entries = piebench.load(sample)
    assert entries[0].source == "a close-up photo of a tabby cat with green eyes"
    assert entries[0].words == ("blue",)
    items = piebench.items(entries)
    assert items[0].type == "color" and items[0].category == "6"
    # The edit uses the annotation; the metrics their mask with the border rule.
    assert not items[0].mask[0].any() and items[0].eval_mask[0].all()
    assert (items[0].eval_mask & ~items[0].mask).sum() == 4 * 511


def test_a_broken_mapping_says_which_entry(tmp_path, sample):
    mapping = json.loads((sample / "mapping_file.json").read_text())
    bad = {"000000000009": {**mapping["000000000001"], "editing_type_id": "12"}}
    (tmp_path / "annotation_images").symlink_to(sample / "annotation_images")
    (tmp_path / "mapping_file.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="entry '000000000009': editing_type_id '12'"):
        piebench.load(tmp_path)
    bad["000000000009"].update(editing_type_id="1", image_path="../../etc/passwd")
    (tmp_path / "mapping_file.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="leaves annotation_images/"):
        piebench.load(tmp_path)
    bad["000000000009"].update(image_path=mapping["000000000001"]["image_path"], mask=None)
    (tmp_path / "mapping_file.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="needs image_path, .* and a mask list of numbers"):
        piebench.load(tmp_path)
    bad["000000000009"].update(mask=[1, 2], editing_prompt=None)
    (tmp_path / "mapping_file.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="TypeError: the prompts must be text"):
        piebench.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no mapping_file.json"):
        piebench.load(tmp_path / "annotation_images")


@pytest.fixture(scope="module")
def pie_metrics():
    return piebench.PieMetrics(Metrics.tiny(), lpips=False)


def test_background_metrics_are_over_the_whole_image_with_the_edit_zeroed(pie_metrics):
    # calculate_psnr / calculate_mse: both images /255, times (1 - mask), then over every
    # element, the zeroed ones included. Here the background differs by 51/255 = 0.2 everywhere
    # it is kept, so MSE = 0.04 * the kept share and PSNR = 10 log10(1 / MSE).
    source = np.full((512, 512, 3), 100, np.uint8)
    edited = source.copy()
    mask = np.zeros((512, 512), bool)
    mask[:, :256] = True  # the edit region: the left half
    edited[:, 256:] += 51  # the background changed
    scores = pie_metrics.measure(source, edited, mask, "a wall", "a wall")
    kept = 0.5
    assert scores["mse_unedit_part"] == pytest.approx(0.04 * kept, rel=1e-5)
    assert scores["psnr_unedit_part"] == pytest.approx(10 * math.log10(1 / (0.04 * kept)), rel=1e-5)
    assert 0 < scores["ssim_unedit_part"] < 1
    assert math.isnan(scores["lpips_unedit_part"])
    assert pie_metrics.skipped == {
        "lpips_unedit_part": "not measured: LPIPS is off (random-weight run)"
    }
    same = pie_metrics.measure(source, source, mask, "a wall", "a wall")
    assert same["mse_unedit_part"] == 0 and same["psnr_unedit_part"] == math.inf
    assert same["ssim_unedit_part"] == pytest.approx(1.0)
    assert same["structure_distance"] == 0.0
    everything = pie_metrics.measure(source, edited, np.ones((512, 512), bool), "a", "a")
    assert math.isnan(everything["psnr_unedit_part"])  # their "nan": no background left


def test_their_structure_distance_is_not_ours(pie_metrics):
    # Theirs feeds DINO 0-255 values normalised as 0-1 ones, on whole images; ours 0-1 values
    # on the mask's box. On the same pair the two differ: both are kept, named apart.
    rng = np.random.default_rng(1)
    source = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    edited = source.copy()
    edited[100:300, 100:300] = 255 - edited[100:300, 100:300]
    theirs = pie_metrics.structure_distance(source, edited)
    ours = pie_metrics.dino.distance(source, edited)
    assert theirs > 0 and ours > 0 and not math.isclose(theirs, ours, rel_tol=0.01)


def test_the_clip_scores_are_theirs(pie_metrics, monkeypatch):
    seen = []
    monkeypatch.setattr(
        pie_metrics.clip, "score", lambda image, text: seen.append((image, text)) or 1.0
    )
    source = np.full((512, 512, 3), 200, np.uint8)
    edited = np.full((512, 512, 3), 90, np.uint8)
    mask = np.zeros((512, 512), bool)
    mask[10:20, 30:40] = True
    pie_metrics.measure(source, edited, mask, "a red sofa", "a green sofa")
    (src, src_text), (whole, whole_text), (part, part_text) = seen
    assert src is source and src_text == "a red sofa"
    assert whole is edited and whole_text == "a green sofa"
    # calculate_clip_similarity(tgt_image, tgt_prompt, tgt_mask): np.uint8(img * mask)
    assert part_text == "a green sofa" and part.dtype == np.uint8
    assert part[mask].min() == 90 and part[~mask].max() == 0


def test_bench_runs_pie_bench_end_to_end_with_tiny(sample, tmp_path, capsys):
    # One item refused by the engine (its mask is the whole photo, a style edit) is skipped
    # with the reason; the others run, and the table holds the published rows beside ours.
    folder = tmp_path / "pie"
    (folder).mkdir()
    (folder / "annotation_images").symlink_to(sample / "annotation_images")
    mapping = json.loads((sample / "mapping_file.json").read_text())
    whole = {**mapping["000000000002"], "editing_type_id": "9", "mask": [0, 512 * 512]}
    mapping = {key: mapping[key] for key in ("000000000001", "000000000003")}
    mapping["000000000077"] = whole
    (folder / "mapping_file.json").write_text(json.dumps(mapping))
    out = tmp_path / "out"
    argv = ["bench", str(folder), "--format", "pie-bench", "--tiny", "--out", str(out)]
    argv += ["--methods", "magedit-tr,p2p", "--inversion", "direct", "--quiet"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "skipping item 000000000077 (mapping_file.json entry 3): the mask covers" in err
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["item"], r["method"]) for r in rows] == [
        ("000000000001", "magedit-tr"), ("000000000001", "p2p"),
        ("000000000003", "magedit-tr"), ("000000000003", "p2p"),
    ]  # fmt: skip
    for row in rows:
        for name in (*piebench.METRICS, *piebench.RAW_METRICS):
            value = float(row[name])
            assert math.isnan(value) if "lpips" in name else math.isfinite(value)
        # The composite keeps the photo outside the grown mask; the raw decode does not.
        assert float(row["psnr_unedit_part"]) > float(row["raw_psnr_unedit_part"])
        assert float(row["psnr_outside"]) > 0 and row["category"] in ("6", "7")
    assert (out / "skipped.txt").read_text().startswith("000000000077\tthe mask covers")
    table = (out / "table.md").read_text()
    assert (
        "| Null-text inversion + P2P (published) | 13.44 | 27.03 | 60.67 | – | – | 24.75 |" in table
    )
    assert "| magedit-tr (ours, as delivered) |" in table and "| 6 change color · p2p |" in table
    assert "| magedit-tr (ours, raw decode) |" in table
    assert "- items: 1 refused by the engine (listed with why in skipped.txt)." in table
    # A second run resumes: nothing is edited again.
    assert cli.main(argv) == 0
    assert "0 edits made, 4 skipped (already finished)" in capsys.readouterr().err


def test_lpips_without_its_backbone_weights_is_left_out_with_the_reason(monkeypatch):
    import urllib.error

    import torchvision.models._api as api

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    metrics = piebench.PieMetrics(Metrics.tiny(), lpips=True)
    reason = metrics.skipped["lpips_unedit_part"]
    assert reason.startswith("not measured: LPIPS needs torchvision's SqueezeNet 1.1 weights")
    assert "URLError" in reason


def test_our_clip_score_is_torchmetrics_clipscore(pie_metrics):
    # Their CLIPScore (torchmetrics) cannot load a model of ours by path, and with transformers
    # 5 its update fails on the model's output objects; given the same tiny CLIP through a thin
    # adapter that returns tensors, its update function and our scorer agree.
    import importlib

    import torch
    from transformers import CLIPImageProcessor, CLIPProcessor

    from magedit.evaluate import _features

    clip_score = importlib.import_module("torchmetrics.functional.multimodal.clip_score")
    clip = pie_metrics.clip
    size = {"shortest_edge": clip.size}
    crop = {"height": clip.size, "width": clip.size}
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size=size, crop_size=crop),
        tokenizer=getattr(clip.tokenizer, "_tokenizer", clip.tokenizer),
    )

    class Tensors(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model, self.config = model, model.config

        def get_image_features(self, *args, **kwargs):
            return _features(self.model.get_image_features(*args, **kwargs))

        def get_text_features(self, *args, **kwargs):
            return _features(self.model.get_text_features(*args, **kwargs))

    rng = np.random.default_rng(0)
    for shape in ((512, 512, 3), (300, 451, 3)):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        for text in ("a green sofa", "a photo of a cat with blue eyes"):
            with torch.no_grad():
                score, _ = clip_score._clip_score_update(
                    torch.from_numpy(image).permute(2, 0, 1), text, Tensors(clip.model), processor
                )
            theirs = max(float(score.mean()), 0.0)  # CLIPScore.compute clamps at 0
            # Random weights give negative cosines (both clamp to 0): compare before the clamp.
            ids = clip.tokenizer([text], padding="max_length", max_length=77, return_tensors="pt")
            with torch.no_grad():
                t = _features(clip.model.get_text_features(**ids))
                i = _features(clip.model.get_image_features(pixel_values=clip._pixels(image)))
            ours_raw = 100 * float(torch.nn.functional.cosine_similarity(i, t))
            assert ours_raw == pytest.approx(float(score.mean()), abs=0.01)
            assert clip.score(image, text) == pytest.approx(theirs, abs=0.01)
