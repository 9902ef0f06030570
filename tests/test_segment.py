"""Segment Anything on a tiny random-weight SAM (CPU, offline), and the mask tools of ``images``.

Random weights make noise masks: these tests check the plumbing (call counts, the cache, the
coordinate frame, shapes, ordering, errors), and the mask tools on hand-made arrays.
"""

import threading
from collections import deque

import numpy as np
import pytest
import torch
from conftest import scene

from magedit import hub, images
from magedit.controls import say
from magedit.segment import (
    SAM_FILES,
    SAM_REPO,
    MaskCandidate,
    Segmenter,
    check_prompts,
    checkpoint_path,
)
from magedit.tiny import tiny_sam


@pytest.fixture
def seg():
    return Segmenter.tiny(seed=0)


def count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]

    def hook(*args):
        calls[0] += 1

    module.register_forward_hook(hook)
    return calls


def capture_prompts(seg: Segmenter) -> list[dict]:
    seen: list[dict] = []

    def hook(module, args, kwargs):
        seen.append(kwargs)

    seg.sam.prompt_encoder.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def set_decoder_logits(seg: Segmenter, make) -> None:
    """Replace the mask decoder's low-res logits (1, K, 16, 16) with ``make(logits)``."""

    def hook(module, args, output):
        low_res, scores = output
        return make(low_res.clone()), scores

    seg.sam.mask_decoder.register_forward_hook(hook)


# ----------------------------------------------------------------------------------------------
# Embeddings: once per image, per-image cache


def test_the_embedding_is_computed_once_for_many_clicks(seg):
    image = scene(70, 100)
    encoder, decoder = count_calls(seg.sam.image_encoder), count_calls(seg.sam.mask_decoder)
    key = seg.embed(image)
    assert key == images.image_hash(image) and encoder[0] == 1
    for x in (10, 30, 50, 70, 90):
        seg.predict(image, points=[(x, 35)])
        seg.predict(key, points=[(x, 35), (5, 5)], labels=[1, 0])
    assert seg.embed(image) == key
    assert encoder[0] == 1 and decoder[0] == 10

    embedding = seg.embedding(key)
    assert embedding.features.shape == (1, 32, 4, 4) and embedding.features.dtype == torch.float32
    assert embedding.original_size == (70, 100) and embedding.input_size == (45, 64)


def test_the_cache_keeps_two_images_apart(seg):
    a, b = scene(70, 100), np.ascontiguousarray(scene(70, 100)[::-1, ::-1])
    fresh = Segmenter.tiny(seed=0)
    reference = {name: fresh.predict(im, points=[(50, 35)]) for name, im in (("a", a), ("b", b))}

    key_a, key_b = seg.embed(a), seg.embed(b)
    assert key_a != key_b
    assert not torch.equal(seg.embedding(key_a).features, seg.embedding(key_b).features)
    # Clicks on a after b was embedded (and the other way round) see their own image only.
    for name, key in (("a", key_a), ("b", key_b), ("a", key_a)):
        got = seg.predict(key, points=[(50, 35)])
        want = reference[name]
        assert [c.score for c in got] == [c.score for c in want]
        assert all(np.array_equal(g.mask, w.mask) for g, w in zip(got, want, strict=True))
    torch.testing.assert_close(seg.embedding(key_a).features, fresh.embedding(a).features)


def test_the_cache_is_a_bounded_lru():
    seg = Segmenter.tiny(seed=0, cache_size=2)
    encoder = count_calls(seg.sam.image_encoder)
    a, b, c = scene(64, 64), scene(64, 96), scene(96, 64)
    key_a = seg.embed(a)
    seg.embed(b)
    seg.embed(a)  # a is now the most recent, b the oldest
    seg.embed(c)  # evicts b
    assert encoder[0] == 3
    seg.predict(key_a, points=[(10, 10)])
    with pytest.raises(RuntimeError, match="no embedding is cached .* pass the image itself"):
        seg.predict(images.image_hash(b), points=[(10, 10)])
    seg.predict(b, points=[(10, 10)])  # the image itself is embedded again
    assert encoder[0] == 4
    with pytest.raises(ValueError, match="cache_size is 0"):
        Segmenter.tiny(cache_size=0)


def test_sessions_in_threads_see_only_their_own_image(seg):
    pictures = [scene(70, 100), scene(100, 70), np.ascontiguousarray(scene(70, 100)[:, ::-1])]
    fresh = Segmenter.tiny(seed=0)
    want = [fresh.predict(im, points=[(30, 30)])[0].mask for im in pictures]
    results: deque = deque()

    def session(i: int) -> None:
        for _ in range(4):
            results.append((i, seg.predict(pictures[i], points=[(30, 30)])[0].mask))

    threads = [threading.Thread(target=session, args=(i % 3,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 24
    assert all(np.array_equal(mask, want[i]) for i, mask in results)


# ----------------------------------------------------------------------------------------------
# Prompts in SAM's frame


@pytest.mark.parametrize(
    "size, points, box, expected_points, expected_box",
    [
        # 100x70: long side 100 -> 64, short side 70 * 0.64 = 44.8 -> 45, so y scales by 45/70.
        (
            (70, 100),
            [(50, 35), (99, 69)],
            (10, 20, 90, 60),
            [(32.0, 22.5), (63.36, 69 * 45 / 70)],
            (6.4, 20 * 45 / 70, 57.6, 60 * 45 / 70),
        ),
        # 40x100 (portrait): 100 -> 64, 40 * 0.64 = 25.6 -> 26, so x scales by 26/40 = 0.65.
        (
            (100, 40),
            [(20, 50), (39, 99)],
            (0, 0, 40, 100),
            [(13.0, 32.0), (25.35, 63.36)],
            (0, 0, 26, 64),
        ),
    ],
)
def test_points_and_box_reach_the_prompt_encoder_in_sams_frame(
    seg, size, points, box, expected_points, expected_box
):
    seen = capture_prompts(seg)
    seg.predict(scene(*size), points=points, labels=[1, 0], box=box)
    (kwargs,) = seen
    coords, labels = kwargs["points"]
    assert coords.shape == (1, 2, 2) and coords.dtype == torch.float32
    torch.testing.assert_close(
        coords[0], torch.tensor(expected_points, dtype=torch.float32), rtol=0, atol=1e-5
    )
    assert labels.tolist() == [[1, 0]]
    torch.testing.assert_close(
        kwargs["boxes"], torch.tensor([expected_box], dtype=torch.float32), rtol=0, atol=1e-5
    )
    assert kwargs["masks"] is None


def test_previous_logits_refine_the_mask(seg):
    image = scene(70, 100)
    seen = capture_prompts(seg)
    best = seg.predict(image, points=[(50, 35)])[0]
    assert best.logits.shape == (1, 16, 16) and best.logits.dtype == np.float32
    again = seg.predict(image, points=[(50, 35), (5, 5)], labels=[1, 0], mask_input=best.logits)
    masks = seen[1]["masks"]
    assert masks.shape == (1, 1, 16, 16)
    np.testing.assert_array_equal(masks[0].numpy(), best.logits)
    assert seen[0]["masks"] is None and again  # the refined prediction gave candidates
    seg.predict(image, points=[(50, 35)], mask_input=best.logits[0])  # (16, 16) is accepted
    with pytest.raises(ValueError, match=r"mask_input has shape \(1, 256, 256\).*\(1, 16, 16\)"):
        seg.predict(image, points=[(50, 35)], mask_input=np.zeros((1, 256, 256), np.float32))


# ----------------------------------------------------------------------------------------------
# Candidates


def test_three_candidates_best_first_at_the_image_size(seg):
    image = scene(70, 100)
    raw_scores = []
    seg.sam.mask_decoder.register_forward_hook(lambda m, a, out: raw_scores.append(out[1]))
    candidates = seg.predict(image, points=[(50, 35)])
    assert len(candidates) == 3 and all(isinstance(c, MaskCandidate) for c in candidates)
    scores = [c.score for c in candidates]
    assert scores == sorted(raw_scores[0][0].tolist(), reverse=True)
    for c in candidates:
        assert c.mask.shape == (70, 100) and c.mask.dtype == np.bool_
        assert c.coverage == pytest.approx(c.mask.mean()) and 0 < c.coverage <= 0.99
    single = seg.predict(image, points=[(50, 35)], multimask=False)
    assert len(single) == 1 and single[0].mask.shape == (70, 100)


def test_empty_and_full_candidates_are_left_out(seg):
    image = scene(70, 100)

    def fixed(logits):
        logits[:, 0] = -10.0  # empty
        logits[:, 1] = 10.0  # the whole image
        logits[:, 2] = -10.0
        logits[:, 2, :, :8] = 10.0  # the left half of the 16x16 grid
        return logits

    set_decoder_logits(seg, fixed)
    (only,) = seg.predict(image, points=[(50, 35)])
    # The 64-pixel input holds the 100-pixel-wide image in full width: x < 50 is inside.
    assert only.mask[:, :49].all() and not only.mask[:, 51:].any()
    assert only.coverage == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize(
    "value, message",
    [(-10.0, "found no object at these prompts"), (10.0, "covers 100.0% of the image")],
)
def test_no_usable_mask_is_a_clear_error(seg, value, message):
    set_decoder_logits(seg, lambda logits: torch.full_like(logits, value))
    with pytest.raises(ValueError, match=message):
        seg.predict(scene(70, 100), points=[(50, 35)])


BAD_PROMPTS = {
    "x past the right edge": (dict(points=[(100, 10)]), r"\(100, 10\) is outside the 100x70"),
    "negative y": (dict(points=[(5, -1)]), r"\(5, -1\) is outside the 100x70 image; click"),
    "only negatives": (dict(points=[(5, 5)], labels=[0]), "no point on the object and no box"),
    "nothing": ({}, "no point on the object and no box"),
    "label count": (dict(points=[(5, 5)], labels=[1, 1]), "one label per point"),
    "label value": (dict(points=[(5, 5)], labels=[2]), "1 on the object and 0 off it"),
    "labels alone": (dict(labels=[1]), "labels but no points"),
    "points shape": (dict(points=[(1, 2, 3)]), "list of \\(x, y\\) pairs"),
    "box inverted": (dict(box=(50, 10, 20, 60)), "x0 < x1 and y0 < y1"),
    "box outside": (dict(box=(0, 0, 101, 70)), "not inside the 100x70 image"),
    "box shape": (dict(box=(0, 0, 5)), "pass \\(x0, y0, x1, y1\\)"),
}


@pytest.mark.parametrize("case", list(BAD_PROMPTS))
def test_bad_prompts_are_refused_before_any_model_call(seg, case):
    kwargs, message = BAD_PROMPTS[case]
    decoder = count_calls(seg.sam.mask_decoder)
    with pytest.raises(ValueError, match=message):
        seg.predict(scene(70, 100), **kwargs)
    assert decoder[0] == 0


def test_a_box_alone_and_points_on_the_edge_are_fine():
    coords, labels, box = check_prompts([(0, 0), (99.5, 69.5)], None, (0, 0, 100, 70), (70, 100))
    assert coords.tolist() == [[0, 0], [99.5, 69.5]] and labels.tolist() == [1, 1]
    assert box.tolist() == [0, 0, 100, 70]
    assert check_prompts(None, None, (1, 2, 3, 4), (70, 100))[:2] == (None, None)


def test_an_image_resized_since_embed_is_refused(seg):
    key = seg.embed(scene(70, 100))
    seg.predict(key, points=[(5, 5)], image_size=(70, 100))
    with pytest.raises(ValueError, match="now 50x35 pixels but it was 100x70 when embedded"):
        seg.predict(key, points=[(5, 5)], image_size=(35, 50))


def test_images_must_be_hwc_uint8(seg):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        seg.embed(scene(70, 100).astype(np.float32))
    with pytest.raises(ValueError, match="HxWx3 RGB"):
        seg.embed(np.zeros((70, 100, 4), np.uint8))


def test_bfloat16_image_encoder_float32_decoder():
    seg = Segmenter.tiny(seed=0, dtype=torch.bfloat16)
    assert seg.sam.image_encoder.patch_embed.proj.weight.dtype == torch.bfloat16
    assert seg.sam.mask_decoder.iou_token.weight.dtype == torch.float32
    assert seg.embedding(scene(70, 100)).features.dtype == torch.float32
    assert seg.predict(scene(70, 100), points=[(50, 35)])[0].mask.shape == (70, 100)


# ----------------------------------------------------------------------------------------------
# Checkpoints


def test_from_pretrained_loads_a_local_checkpoint(tmp_path):
    path = tmp_path / "tiny_sam.pth"
    torch.save(tiny_sam(seed=3).state_dict(), path)
    loaded = Segmenter.from_pretrained("tiny", path, device="cpu")
    assert loaded.device == torch.device("cpu") and loaded.dtype == torch.float32
    reference = Segmenter.tiny(seed=3)
    for (name, got), want in zip(
        loaded.sam.state_dict().items(), reference.sam.state_dict().values(), strict=True
    ):
        assert torch.equal(got, want), name
    image = scene(70, 100)
    got, want = (
        loaded.predict(image, points=[(50, 35)]),
        reference.predict(image, points=[(50, 35)]),
    )
    assert [c.score for c in got] == [c.score for c in want]


def test_checkpoint_errors_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no SAM checkpoint at '/no/sam.pth'.*\(tiny\)"):
        Segmenter.from_pretrained("vit_b", "/no/sam.pth")
    with pytest.raises(FileNotFoundError) as missing:
        Segmenter.from_pretrained("vit_b", tmp_path / "missing.pth")
    assert "(--sam-checkpoint /path/to/sam_vit_b_01ec64.pth" in say(missing.value, "cli")
    assert "--" not in str(missing.value)  # the library names no command-line flag
    with pytest.raises(ValueError, match="'vit_x' is not a SAM model; use vit_b, vit_l, vit_h"):
        Segmenter.from_pretrained("vit_x", tmp_path / "missing.pth")

    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="'notes.pth' is not a SAM checkpoint that can be read"):
        Segmenter.from_pretrained("tiny", text)

    state = tiny_sam().state_dict()
    del state["mask_decoder.iou_token.weight"]
    state["image_encoder.pos_embed"] = torch.zeros(1, 8, 8, 32)
    other = tmp_path / "other.pth"
    torch.save(state, other)
    with pytest.raises(ValueError, match="does not fit the tiny SAM") as error:
        Segmenter.from_pretrained("tiny", other)
    assert "1 weights missing, 0 unexpected, 1 of another shape" in str(error.value)
    assert "image_encoder.pos_embed is (1, 8, 8, 32) instead of (1, 4, 4, 32)" in str(error.value)


def test_the_hub_file_and_its_overrides(tmp_path, monkeypatch):
    import huggingface_hub

    asked = []

    def download(repo, filename):
        asked.append((repo, filename))
        return str(tmp_path / "downloaded.pth")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(hub, "unreachable", lambda: None)  # as if online
    monkeypatch.delenv("MAGEDIT_SAM_REPO", raising=False)
    monkeypatch.delenv("MAGEDIT_SAM_CHECKPOINT", raising=False)
    assert checkpoint_path("vit_h") == tmp_path / "downloaded.pth"
    assert (
        asked[-1]
        == (SAM_REPO, SAM_FILES["vit_h"])
        == (
            "ybelkada/segment-anything",
            "checkpoints/sam_vit_h_4b8939.pth",
        )
    )
    monkeypatch.setenv("MAGEDIT_SAM_REPO", "me/my-sam")
    monkeypatch.setenv("MAGEDIT_SAM_CHECKPOINT", "sam_vit_b_custom.pth")
    checkpoint_path("vit_b")
    assert asked[-1] == ("me/my-sam", "sam_vit_b_custom.pth")
    local = tmp_path / "local.pth"
    local.write_bytes(b"")
    monkeypatch.setenv("MAGEDIT_SAM_CHECKPOINT", str(local))
    assert checkpoint_path("vit_b") == local and len(asked) == 2
    other = tmp_path / "given.pth"
    other.write_bytes(b"")
    assert checkpoint_path("vit_b", other) == other  # an explicit path wins over the variable


def test_an_uncached_hub_file_offline_points_to_a_local_file_or_tiny(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MAGEDIT_SAM_REPO", "nobody/not-a-cached-sam")
    monkeypatch.delenv("MAGEDIT_SAM_CHECKPOINT", raising=False)
    import huggingface_hub

    def download(*args, **kwargs):
        raise AssertionError("offline, nothing may be downloaded")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(hub.WeightsUnavailable) as error:
        checkpoint_path("vit_b")
    assert str(error.value) == (
        "the SAM vit_b checkpoint: 'checkpoints/sam_vit_b_01ec64.pth' of "
        "'nobody/not-a-cached-sam' is not in the Hugging Face cache and the Hub is switched off "
        "here (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set); give a local checkpoint "
        "(sam_checkpoint /path/to/sam_vit_b_01ec64.pth, from "
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth), or use the tiny "
        "random model (tiny)"
    )


# ----------------------------------------------------------------------------------------------
# Mask tools


def grid(text: str) -> np.ndarray:
    """A mask drawn with '#' (inside) and '.' (outside), one row per line."""
    return np.array([[c == "#" for c in row] for row in text.split()], bool)


def bfs_areas(mask: np.ndarray, diagonal: bool) -> tuple[np.ndarray, list[int], list[bool]]:
    """Reference labelling: per-pixel label, each component's area, whether it touches the edge."""
    h, w = mask.shape
    labels = np.full(mask.shape, -1)
    steps = [(1, 0), (-1, 0), (0, 1), (0, -1)]
    steps += [(1, 1), (1, -1), (-1, 1), (-1, -1)] if diagonal else []
    areas, edge = [], []
    for y in range(h):
        for x in range(w):
            if not mask[y, x] or labels[y, x] >= 0:
                continue
            n = len(areas)
            labels[y, x], todo, area, touches = n, [(y, x)], 0, False
            while todo:
                cy, cx = todo.pop()
                area += 1
                touches |= cy in (0, h - 1) or cx in (0, w - 1)
                for dy, dx in steps:
                    ny, nx = cy + dy, cx + dx
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and labels[ny, nx] < 0:
                        labels[ny, nx] = n
                        todo.append((ny, nx))
            areas.append(area)
            edge.append(touches)
    return labels, areas, edge


def test_union():
    a = grid("##.. ##.. ....")
    b = grid(".##. .... ...#")
    np.testing.assert_array_equal(images.mask_union(a, b), grid("###. ##.. ...#"))
    np.testing.assert_array_equal(images.mask_union(a), a)
    union = images.mask_union(a, b)
    assert union is not a and a.sum() == 4  # inputs untouched
    with pytest.raises(ValueError, match=r"different sizes \(4x3, 5x3\)"):
        images.mask_union(a, np.zeros((3, 5), bool))
    with pytest.raises(ValueError, match="at least one mask"):
        images.mask_union()
    with pytest.raises(ValueError, match="pass an HxW bool array"):
        images.mask_union(a, b.astype(np.uint8))


def test_fill_holes_by_area_and_not_at_the_border():
    mask = grid(
        """
        ########.
        #.######.
        ########.
        ###...###
        ###...###
        ###...###
        #########
        #.#######
        """
    )
    # Holes: (1, 1) of 1 pixel and the 3x3 block of 9; (7, 1) and column 8 touch the border.
    small = images.fill_holes(mask, max_area=4)
    assert small[1, 1] and not small[4, 4] and not small[7, 1] and not small[0, 8]
    assert small.sum() == mask.sum() + 1
    every = images.fill_holes(mask)
    assert every[1, 1] and every[3:6, 3:6].all() and not every[7, 1]
    assert every.sum() == mask.sum() + 10
    np.testing.assert_array_equal(images.fill_holes(mask, 0), mask)
    # A hole closed by a diagonal chain of mask pixels is a hole (holes are 4-connected).
    diamond = grid(".#. #.# .#.")
    np.testing.assert_array_equal(images.fill_holes(diamond)[1], [True, True, True])
    with pytest.raises(ValueError, match="max_area is -1"):
        images.fill_holes(mask, -1)


def test_remove_specks_counts_diagonal_neighbours():
    mask = grid(
        """
        #....##
        .....##
        ..#....
        ...#..#
        """
    )
    # Parts: (0, 0) alone, the 2x2 block, the diagonal pair (2, 2)-(3, 3), (3, 6) alone.
    np.testing.assert_array_equal(
        images.remove_specks(mask, 2), grid(".....## .....## ..#.... ...#...")
    )
    np.testing.assert_array_equal(
        images.remove_specks(mask, 3), grid(".....## .....## ....... .......")
    )
    assert not images.remove_specks(mask, 5).any()
    np.testing.assert_array_equal(images.remove_specks(mask, 0), mask)


def test_fill_holes_and_remove_specks_edge_cases():
    # (1, 1) meets the border's (0, 0) only at a corner: holes are 4-connected, so it is a hole.
    corner = grid(".### #.## ####")
    np.testing.assert_array_equal(images.fill_holes(corner), grid(".### #### ####"))
    # A hole in a mask that covers every other pixel, and the mask's own specks.
    ring = grid("### #.# ###")
    np.testing.assert_array_equal(images.fill_holes(ring, 1), np.ones((3, 3), bool))
    np.testing.assert_array_equal(images.remove_specks(ring, 8), ring)
    assert not images.remove_specks(ring, 9).any()
    for mask in (np.zeros((3, 4), bool), np.ones((3, 4), bool)):
        np.testing.assert_array_equal(images.fill_holes(mask), mask)
        np.testing.assert_array_equal(images.remove_specks(mask, 1), mask)
    filled = images.fill_holes(ring)
    assert filled is not ring and ring.sum() == 8  # a new array, the input untouched


@pytest.mark.parametrize("seed", range(4))
def test_components_match_a_flood_fill(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((37, 41)) < 0.55
    labels, areas, _ = bfs_areas(mask, diagonal=True)
    for min_area in (2, 5, 20):
        big = np.array(areas) >= min_area
        expected = mask & big[labels] & (labels >= 0)
        np.testing.assert_array_equal(images.remove_specks(mask, min_area), expected)
    labels, areas, edge = bfs_areas(~mask, diagonal=False)
    for max_area in (1, 3, None):
        hole = np.array(
            [
                not e and (max_area is None or a <= max_area)
                for a, e in zip(areas, edge, strict=True)
            ]
        )
        expected = mask | (hole[labels] & (labels >= 0))
        np.testing.assert_array_equal(images.fill_holes(mask, max_area), expected)


def test_fill_holes_and_remove_specks_on_a_large_mask():
    rng = np.random.default_rng(0)
    mask = np.zeros((3000, 4000), bool)
    mask[500:2500, 300:3700] = True
    mask[1000:1003, 1000:1003] = False  # a 9-pixel hole
    mask[1500, 1500] = False  # a 1-pixel hole
    # Specks above the region and 1-pixel holes deep inside it, 20 000 of each.
    mask[rng.integers(0, 400, 20_000), rng.integers(0, 4000, 20_000)] = True
    mask[rng.integers(600, 2400, 20_000), rng.integers(400, 3600, 20_000)] = False
    mask[2900:2910, 3900:3910] = True  # a 100-pixel part, kept
    cleaned = images.remove_specks(mask, 50)
    filled = images.fill_holes(cleaned, 20)
    assert cleaned[2900:2910, 3900:3910].all() and not cleaned[:400].any()
    assert filled[1000:1003, 1000:1003].all() and filled[1500, 1500]
    assert filled[500:2500, 300:3700].all() and filled.sum() == 2000 * 3400 + 100


def test_mask_bbox():
    mask = np.zeros((6, 8), bool)
    mask[2:4, 3] = True
    mask[3, 5] = True
    assert images.mask_bbox(mask) == (3, 2, 6, 4)  # x1, y1 one past the last column and row
    mask[:] = True
    assert images.mask_bbox(mask) == (0, 0, 8, 6)
    with pytest.raises(ValueError, match="the mask is empty, so it has no bounding box"):
        images.mask_bbox(np.zeros((6, 8), bool))


def test_mask_overlay_tints_outlines_and_keeps_the_rest():
    image = np.full((12, 12, 3), 100, np.uint8)
    mask = np.zeros((12, 12), bool)
    mask[2:10, 2:10] = True
    out = images.mask_overlay(image, mask, color=(255, 0, 0), alpha=0.5, outline=2)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert out[5, 5].tolist() == [178, 50, 50]  # round(0.5 * 100 + 0.5 * 255) = 177.5 -> 178
    assert out[2, 5].tolist() == out[3, 5].tolist() == [255, 0, 0]  # the 2-pixel outline
    assert out[4, 5].tolist() == [178, 50, 50]
    np.testing.assert_array_equal(out[~mask], image[~mask])
    assert image[5, 5].tolist() == [100, 100, 100]  # the input is untouched
    plain = images.mask_overlay(image, mask, outline=0)
    assert plain[2, 5].tolist() == plain[5, 5].tolist()
    with pytest.raises(ValueError, match="the mask is 6x6 pixels but the image is 12x12"):
        images.mask_overlay(image, np.ones((6, 6), bool))
    with pytest.raises(ValueError, match="alpha is 2"):
        images.mask_overlay(image, mask, alpha=2)


def test_check_mask_coverage():
    mask = np.zeros((20, 20), bool)
    with pytest.raises(ValueError, match="the mask is empty"):
        images.check_mask_coverage(mask)
    mask[:10] = True
    assert images.check_mask_coverage(mask) == 0.5
    mask[:] = True
    mask[0, :3] = False  # 397 / 400 = 99.25%
    with pytest.raises(ValueError, match=r"covers 99\.\d% of the image"):
        images.check_mask_coverage(mask)
    assert images.MAX_MASK_COVERAGE == 0.99


@pytest.mark.parametrize(
    "error, said",
    [
        ("gated", "the Hub repository 'ybelkada/segment-anything' is gated: accept its terms at "
         "https://huggingface.co/ybelkada/segment-anything while logged in, then set HF_TOKEN"),
        ("missing", "there is no Hub repository 'ybelkada/segment-anything' (or it is private: "
         "set HF_TOKEN"),
        ("no file", "the Hub repository 'ybelkada/segment-anything' has no file "
         "'checkpoints/sam_vit_b_01ec64.pth'; check $MAGEDIT_SAM_CHECKPOINT"),
    ],
)  # fmt: skip
def test_a_gated_or_missing_sam_says_what_to_do(monkeypatch, error, said):
    import httpx
    import huggingface_hub
    from huggingface_hub.errors import (
        GatedRepoError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
    )

    response = httpx.Response(403, request=httpx.Request("GET", "https://huggingface.co/api"))
    kinds = {"gated": GatedRepoError, "missing": RepositoryNotFoundError,
             "no file": RemoteEntryNotFoundError}  # fmt: skip

    def download(repo, filename):
        raise kinds[error]("refused", response=response)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(hub, "check_available", lambda repo, filename=None: None)
    monkeypatch.delenv("MAGEDIT_SAM_REPO", raising=False)
    monkeypatch.delenv("MAGEDIT_SAM_CHECKPOINT", raising=False)
    with pytest.raises(ValueError) as raised:
        checkpoint_path("vit_b")
    assert str(raised.value).startswith(said)
    assert str(raised.value).endswith("or use the tiny random model (tiny)")
    assert say(raised.value, "cli").endswith("or use the tiny random model (--tiny)")
