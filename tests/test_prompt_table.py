"""Hostile prompts and edit words (issue 6, item 3) on CLIP's real vocabulary: each is handled
(positions asserted, all inside the 77 positions the attention maps have) or refused with a
readable ValueError, before any model work; a tiny edit with emoji and unicode stays finite.

Positions were read off the real tokenization (the decoded tokens are asserted alongside);
position 0 is <|startoftext|>.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import scene, scene_mask

from magedit import EditConfig
from magedit.pipeline import EditResult
from magedit.prompts import (
    MAX_EDIT_WORDS,
    MAX_PROMPT_CHARS,
    MAX_TOKENS,
    check_prompt,
    edit_word_positions,
    edit_words,
    require_word,
    token_ids,
    word_token_indices,
)
from magedit.tokenizer import clip_tokenizer

TAIL = "and a chair " * 30  # 90 tokens


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory):
    """SD v1.4's CLIP tokenizer, built from the shipped BPE file."""
    return clip_tokenizer(tmp_path_factory.mktemp("clip"))


def padded_ids(tok, prompt: str) -> list[int]:
    """The 77 ids the text encoder reads (truncated and padded as SD does)."""
    return tok(prompt, padding="max_length", max_length=MAX_TOKENS, truncation=True)["input_ids"]


# (prompt, word, positions, the tokens at those positions decoded)
FOUND = [
    ("a cat in a category", "cat", [2], "cat"),  # the whole word only, not "category"
    ("a red sofa and a red chair", "red", [2, 6], "red red"),  # every occurrence
    ("a green sofa.", "sofa.", [3], "sofa"),  # punctuation attached, in prompt and word
    ("a green sofa.", "(Sofa)!", [3], "sofa"),
    ("A GREEN SOFA", "green", [2], "green"),  # capitals: CLIP lowercases
    ("a Green sofa", "gReEn", [2], "green"),
    ("a naïve café sofa", "naïve", [2, 3, 4], "naïve"),  # accents: byte tokens
    ("a naïve café sofa", "CAFÉ", [5], "café"),
    ("a cafe\u0301 sofa", "café", [2], "café"),  # decomposed accent: NFC like CLIP
    ("a 猫 on a sofa", "猫", [2, 3, 4], "猫"),  # CJK: 3 byte tokens
    ("a 🐱 on a sofa", "🐱", [2], "🐱"),  # emoji: one token
    ("a 🐱🐱 on a sofa", "🐱", [2, 3], "🐱🐱"),
    ("a tiedye sofa", "tiedye", [2, 3, 4], "tiedye"),  # one word, three BPE tokens
    ("a red sofa", "red sofa", [2, 3], "red sofa"),  # several words
    ("ice cream and ice cream", "ice  cream", [1, 2, 4, 5], "ice cream ice cream"),
    ("a 3d sofa", "3d", [2, 3], "3 d"),  # CLIP splits digits
    ("a green\u200bsofa", "green", [2], "green"),  # zero-width space between words
    ("a green-ish sofa", "green", [2], "green"),  # CLIP splits at "-"
    ("a #green sofa", "#green", [3], "green"),
    ("a <img src=x onerror=alert(1)> sofa", "img", [3], "img"),  # markup is just text
    ("a <img src=x onerror=alert(1)> sofa", "sofa", [15], "sofa"),
    ("a photo of a grüne 🐱 sofa, 猫!", "grüne", [5, 6, 7], "grüne"),
    ("a photo of a grüne 🐱 sofa, 猫!", "🐱", [8], "🐱"),
    ("a photo of a grüne 🐱 sofa, 猫!", "猫", [11, 12, 13], "猫"),
    ("a green sofa " + TAIL, "chair", list(range(6, 76, 3)), " ".join(["chair"] * 24)),
    ("a " * 74 + "green", "green", [75], "green"),  # the last token CLIP reads
]


@pytest.mark.parametrize(("prompt", "word", "positions", "decoded"), FOUND)
def test_word_found(tok, prompt: str, word: str, positions: list[int], decoded: str) -> None:
    assert require_word(tok, prompt, word) == positions
    assert all(1 <= p <= MAX_TOKENS - 2 for p in positions)  # never BOS, EOS or past 76
    ids = padded_ids(tok, prompt)
    assert tok.decode([ids[p] for p in positions]) == decoded


REFUSED = [
    ("I am so tired", "red", r"^edit word 'red' appears only inside another word \('tired'\)"),
    ("a category of cats", "cat", r"appears only inside another word \('category'\)"),
    ("一只猫在沙发上", "猫", r"appears only inside another word \('一只猫在沙发上'\)"),  # no spaces
    ("a red sofa", "green", r"^edit word 'green' is not in the target prompt 'a red sofa'; type"),
    ("a naive sofa", "naïve", r"^edit word 'naïve' is not in the target prompt"),
    ("a ｇｒｅｅｎ sofa", "green", r"is not in the target prompt"),  # full-width letters
    ("a sofa", "🐱", r"^edit word '🐱' is not in the target prompt"),
    ("", "green", r"^edit word 'green' is not in the target prompt ''"),
    ("a sofa", "   ", r"^the edit word is empty; type a word of the target prompt"),
    ("a sofa", None, r"^the edit word must be text, got NoneType None; type a word"),
    ("a sofa", "x" * 5000, r"^the edit word has 5000 characters; type a word"),
    ("a " * 75 + "green", "green", r"^edit word 'green' lies past CLIP's 77-token limit"),
    (TAIL + "a green sofa", "green", r"lies past CLIP's 77-token limit in the target prompt "),
]


@pytest.mark.parametrize(("prompt", "word", "message"), REFUSED)
def test_word_refused(tok, prompt: str, word, message: str) -> None:
    if isinstance(word, str) and word.strip() and len(word) <= MAX_PROMPT_CHARS:
        assert word_token_indices(tok, prompt, word) == []
    with pytest.raises(ValueError, match=message) as error:
        require_word(tok, prompt, word)
    assert len(str(error.value)) < 300  # a long prompt is quoted in part


CHECKED = [
    ("  a green sofa \n", "a green sofa", 5),
    ("a " * 75, ("a " * 75).strip(), 77),  # exactly 77 tokens
    ("Grüne 猫 🐱 sofa, naïve café!", "Grüne 猫 🐱 sofa, naïve café!", 16),
    ("🐱" * 40, "🐱" * 40, 42),
    ("a green\tsofa\non a\u200bfloor", "a green\tsofa\non a\u200bfloor", 9),
    ("<script>alert(1)</script>", "<script>alert(1)</script>", 12),
]


@pytest.mark.parametrize(("prompt", "stripped", "n_tokens"), CHECKED)
def test_prompt_accepted(tok, prompt: str, stripped: str, n_tokens: int) -> None:
    assert check_prompt(tok, prompt) == stripped
    assert len(token_ids(tok, stripped)) == n_tokens <= MAX_TOKENS


EMPTY = r"^the target prompt is empty; describe the edited image, e.g. 'a photo of a green sofa'$"
PROMPT_REFUSED = [
    ("", EMPTY),
    ("   ", EMPTY),
    ("\n\t\r ", EMPTY),
    ("\u200b", EMPTY),  # zero-width space: nothing visible
    ("\u200b \ufeff\u2060", EMPTY),
    ("\x00", EMPTY),
    ("a\x00 sofa", r"^the target prompt holds the control character U\+0000; remove it"),
    ("a \x1b[31mred sofa", r"^the target prompt holds the control character U\+001B"),
    ("a " * 76, r"^the target prompt 'a a a .*…' has 78 tokens counting the start and end tokens"),
    (TAIL, r"has 92 tokens counting the start and end tokens, but CLIP reads at most 77"),
    ("🐱" * 80, r"has 82 tokens"),
    ("x" * (MAX_PROMPT_CHARS + 1), r"^the target prompt has 4001 characters, but CLIP reads at"),
    (None, r"^the target prompt must be text, got NoneType None; pass a sentence"),
    (3, r"must be text, got int 3"),
    (b"a sofa", r"must be text, got bytes b'a sofa'"),
    (["a sofa"], r"must be text, got list \['a sofa'\]"),
]


@pytest.mark.parametrize(("prompt", "message"), PROMPT_REFUSED)
def test_prompt_refused(tok, prompt, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        check_prompt(tok, prompt)
    assert len(str(error.value)) < 250 and "\n" not in str(error.value)


def test_random_hostile_prompts_never_give_a_position_past_the_maps(tok) -> None:
    """Seeded combinations of the pieces above: positions stay in 1..75 or the word is refused."""
    pieces = ["a", "red", "sofa.", "Tired", "GREEN", "café", "猫", "🐱", "🧑\u200d🚀", "tie-dye",
              "(sofa)", "3d", "\u200b", "red_sofa", "'s", "<b>", "ice cream", "and a chair"]  # fmt: skip
    rng = np.random.default_rng(0)
    found = refused = 0
    for _ in range(300):
        prompt = " ".join(rng.choice(pieces, size=int(rng.integers(1, 45))))
        word = str(rng.choice(pieces))
        try:
            positions = require_word(tok, prompt, word)
        except ValueError:
            refused += 1
            continue
        found += 1
        assert positions == sorted(set(positions))
        assert all(1 <= p <= MAX_TOKENS - 2 for p in positions), (prompt, word, positions)
        assert max(positions) < len(token_ids(tok, prompt)) - 1  # never EOS
    assert found > 100 and refused > 30, (found, refused)


# ----------------------------------------------------------------------------------------------
# The same prompts through the pipeline's checks (no model work) and one tiny edit


@pytest.fixture
def checks_only(tiny_pipe, monkeypatch):
    """The tiny pipeline with every model call failing: the checks must need none."""

    def fail(*args, **kwargs):
        raise AssertionError("model work before the inputs were checked")

    for name in ("_eps", "encode_prompt", "encode_image", "decode_latents", "invert"):
        monkeypatch.setattr(tiny_pipe, name, fail)
    return tiny_pipe


SOURCE = "a photo of a red sofa"
IMAGE = scene(96, 128)
MASK = scene_mask(96, 128)
MANY = [f"w{n}" for n in range(MAX_EDIT_WORDS + 1)]  # 17 words, each in the target below

PIPELINE_OK = [
    (SOURCE, "a photo of a green sofa.", None, [["green"]], [[[5]]]),
    (SOURCE, "A PHOTO OF A GREEN SOFA", None, [["green"]], [[[5]]]),
    (SOURCE, "a photo of a green sofa", "green", [["green"]], [[[5]]]),  # a bare string
    (SOURCE, "a photo of a green sofa", ["", " "], [["green"]], [[[5]]]),  # blank boxes
    ("a photo of a sofa", "a photo of a grüne sofa", None, [["grüne"]], [[[5, 6, 7]]]),
    ("a photo of a sofa", "a photo of a 猫 sofa", None, [["猫"]], [[[5, 6, 7]]]),
    ("a photo of a sofa", "a photo of a 🐱 on a sofa", None, [["🐱"]], [[[5]]]),
    ("a photo of a sofa", "a photo of a 🐱 on a sofa", ["🐱"], [["🐱"]], [[[5]]]),
    ("a photo of a sofa", "a photo of a grüne 🐱 sofa, 猫!", None, [["grüne", "猫"]],
     [[[5, 6, 7], [11, 12, 13]]]),
]  # fmt: skip


@pytest.mark.parametrize(("source", "target", "words", "chosen", "positions"), PIPELINE_OK)
def test_prepare_accepts(checks_only, source, target, words, chosen, positions) -> None:
    prepared = checks_only.prepare(IMAGE, source, target, MASK, words)
    assert [r.words for r in prepared.regions] == chosen == prepared.words
    assert [r.positions for r in prepared.regions] == positions


PIPELINE_REFUSED = [
    (SOURCE, "   ", None, r"^the target prompt is empty"),
    ("\u200b", "a green sofa", None, r"^the source prompt is empty; describe the image"),
    (SOURCE, "a photo of a green sofa " + TAIL, None, r"has 98 tokens .* at most 77; shorten"),
    (SOURCE, "a photo of a red sofa", None, r"adds no new word to the source prompt"),
    (SOURCE, "a photo of a green sofa", ["blue"], r"^edit word 'blue' is not in the target"),
    (SOURCE, "a photo of a bored sofa", ["red"], r"'red' appears only inside another word"),
    (SOURCE, "a photo of a green sofa", ["sofa"], r"^edit word 'sofa' is in both prompts"),
    (SOURCE, "a photo of a green sofa", [None], r"^the edit word must be text"),
    (SOURCE, "a photo of a green sofa", ["x" * 9000], r"^the edit word has 9000 characters"),
    (SOURCE, "a photo of a green\x00 sofa", None, r"control character U\+0000"),
    (SOURCE, "a photo of a green sofa " + " ".join(MANY), MANY,
     r"^17 edit words were given; give at most 16"),
    (SOURCE, "a photo of a green sofa", ["green", " Green "], r"^the edit word 'green' is given twice"),
]  # fmt: skip


@pytest.mark.parametrize(("source", "target", "words", "message"), PIPELINE_REFUSED)
def test_prepare_refuses(checks_only, source, target, words, message) -> None:
    with pytest.raises(ValueError, match=message):
        checks_only.prepare(IMAGE, source, target, MASK, words)


def test_the_library_functions_agree_with_prepare(tok) -> None:
    for source, target, words, chosen, positions in PIPELINE_OK:
        assert edit_word_positions(tok, source, target, words) == (chosen[0], positions[0])
        if words is None:
            assert edit_words(tok, source, target) == chosen[0]


def test_a_tiny_edit_with_emoji_and_unicode_stays_finite(tiny_pipe) -> None:
    """Emoji, CJK and accented edit words through the whole edit: no NaN loss or latent."""
    config = EditConfig(resolution=64, inversion="direct", max_iter=2).with_steps(3)
    image = scene(96, 128)
    target = "a photo of a grüne 🐱 sofa, 猫!"
    prepared = tiny_pipe.prepare(
        image, "a photo of a sofa", target, MASK, ["🐱", "猫"], config=config
    )
    events = list(tiny_pipe.edit(prepared, tiny_pipe.invert(prepared)))
    result = events[-1]
    assert isinstance(result, EditResult) and result.words == [["🐱", "猫"]]
    losses = [e.loss for e in events[:-1]]
    assert len(losses) == 3 + 2 * sum(config.guide_at(i) for i in range(3)) and len(losses) > 3
    assert all(np.isfinite(loss) for loss in losses)
    assert all(0 <= e.in_mask_ratio <= 1 for e in events[:-1])
    assert torch.isfinite(result.latents).all()
    assert result.composited.shape == image.shape and result.composited.dtype == np.uint8
