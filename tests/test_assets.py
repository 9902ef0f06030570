"""The examples in assets/: every one loads, its mask is binary and survives at the 16x16
attention resolution, its words are in its target prompt, and its photo's licence is listed."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from magedit import images, prompts
from magedit.config import PRESETS

ASSETS = Path(__file__).resolve().parents[1] / "assets"
EXAMPLES = json.loads((ASSETS / "examples.json").read_text(encoding="utf-8"))
KEYS = {"name", "image", "mask", "source", "target", "words", "preset", "negative_word", "phrase"}


def test_there_are_at_least_four_examples_with_unique_names():
    names = [example["name"] for example in EXAMPLES]
    assert len(names) >= 4 and len(set(names)) == len(names)
    assert {example["preset"] for example in EXAMPLES} == {"color", "texture", "object"}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e["name"])
def test_example_loads_with_a_usable_mask(example, tiny_pipe):
    assert set(example) == KEYS
    for key in ("image", "mask"):
        path = (ASSETS / example[key]).resolve()
        assert path.parent == ASSETS and path.is_file()  # relative to assets/, nothing outside
    photo = images.load_image(ASSETS / example["image"])
    assert photo.dtype == np.uint8 and photo.ndim == 3 and max(photo.shape[:2]) <= 512
    raw = np.asarray(Image.open(ASSETS / example["mask"]))
    assert raw.shape == photo.shape[:2]  # the photo's size: no resampling when loaded
    assert set(np.unique(raw)) == {0, 255}  # binary, black and white
    mask = images.load_mask(ASSETS / example["mask"], size=photo.shape[:2])
    coverage = mask.mean()
    assert 0.02 < coverage < 0.9
    at_16 = images.mask_to_latent(mask, (16, 16))
    assert 2 <= int(at_16.sum()) <= 16 * 16 - 2  # non-trivial at the attention resolution
    assert example["preset"] in PRESETS


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e["name"])
def test_example_words_are_in_the_target_prompt(example, tiny_pipe):
    tokenizer = tiny_pipe.tokenizer
    words, positions = prompts.edit_word_positions(
        tokenizer, example["source"], example["target"], example["words"], guided=True
    )
    assert words == example["words"] and all(positions)
    if example["negative_word"] is not None:
        prompts.require_word(tokenizer, example["source"], example["negative_word"])
    if example["phrase"] is not None:
        assert example["phrase"].split() == example["words"]
        assert example["phrase"] in example["target"]
    # The whole edit passes the engine's checks (mask size at every resolution, prompts), read
    # from the files as the page and the command line read them.
    prepared = tiny_pipe.prepare(
        ASSETS / example["image"],
        example["source"],
        example["target"],
        ASSETS / example["mask"],
        example["words"],
        negative_word=example["negative_word"],
        config=PRESETS[example["preset"]],
    )
    assert prepared.words == [example["words"]]
    assert prepared.negative_word == example["negative_word"]


def test_every_photo_has_its_source_and_licence_listed():
    readme = (ASSETS / "README.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(" `"): line for line in readme.splitlines() if "|" in line}
    for image in {example["image"] for example in EXAMPLES}:
        assert image in rows, f"{image} is not listed in assets/README.md"
        row = rows[image].lower()
        assert "http" in row and ("cc0" in row or "public domain" in row)
    # Every file in assets/ is an example's or documented.
    used = {e[k] for e in EXAMPLES for k in ("image", "mask")}
    extra = {"README.md", "examples.json", "make_assets.py"}
    present = {p.name for p in ASSETS.iterdir() if p.is_file()}
    assert present == used | extra
