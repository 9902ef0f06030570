"""Prompt checks, word -> token positions and the refine alignment, on CLIP's real vocabulary.

Expected positions were read off the real tokenization (listed in the comments) and checked by
hand; position 0 is <|startoftext|>.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

from magedit import prompts
from magedit.prompts import (
    MAX_EDIT_WORDS,
    MAX_TOKENS,
    check_prompt,
    edit_word_positions,
    edit_words,
    new_token_positions,
    refinement_mapper,
    require_word,
    token_ids,
    word_token_indices,
)
from magedit.tokenizer import BPE_VOCAB_PATH, bpe_to_hf_files, clip_tokenizer

ROCKET_MELT = "a 🧑\u200d🚀🫠 green sofa"
LONG_SOFAS = " ".join(["a red sofa"] * 30)  # 92 tokens: a red sofa at 3k-2, 3k-1, 3k


def _open_clip_gz() -> Path | None:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"


@pytest.fixture(scope="module", params=["open_clip wheel", "shipped copy"])
def clip_tok(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """SD v1.4's real CLIP tokenizer, built by our converter from a real BPE file."""
    cache = tmp_path_factory.mktemp("clip")
    if request.param == "shipped copy":
        return clip_tokenizer(cache)
    gz = _open_clip_gz()
    if gz is None:
        pytest.skip("open_clip_torch is not installed; the shipped copy is tested instead")
    from transformers import CLIPTokenizer

    bpe_to_hf_files(gz, cache)
    return CLIPTokenizer.from_pretrained(str(cache), model_max_length=77)


@pytest.fixture(params=["offsets", "pieces"])
def spans(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the fast tokenizer's offsets and with the slow-tokenizer fallback."""
    if request.param == "pieces":
        monkeypatch.setattr(prompts, "_token_spans", prompts._token_spans_by_pieces)
    return request.param


def test_token_ids(clip_tok) -> None:
    assert token_ids(clip_tok, "a red sofa") == [49406, 320, 736, 15723, 49407]
    assert token_ids(clip_tok, "") == [49406, 49407]
    assert len(token_ids(clip_tok, LONG_SOFAS)) == 92  # not truncated


WORD_CASES = [
    # (prompt, word, positions); tokens of the prompt in the comment
    ("a green, soft sofa", "green", [2]),  # a green , soft sofa
    ("a sofa. (Green) green. GREEN!", "green", [5, 7, 9]),  # a sofa . ( green ) green . green !
    ("a sofa.(green) sofa", "green", [4]),  # a sofa .( green ) sofa  (".(" is one token)
    ("  a   green    sofa  ", "green", [2]),
    ("a sofa\tgreen\ngreen", "green", [3, 4]),
    ("a red sofa", "(Red),", [2]),  # punctuation around the word is ignored
    ("a tired reddish red sofa", "red", [4]),  # a tired reddish red sofa
    ("a tired reddish sofa", "red", []),
    ("a greenhouse and a greenish green sofa", "green", [7]),  # ... a green+ish green sofa
    ("a champagne lamborghini with a tiedye seat", "champagne", [2]),
    ("a champagne lamborghini with a tiedye seat", "lamborghini", [3]),
    ("a champagne lamborghini with a tiedye seat", "tiedye", [6, 7, 8]),  # ti ed ye</w>
    ("a checkered gingham sofa", "gingham", [4, 5]),  # a chec kered g ingham sofa
    ("a tie-dye shirt", "tie-dye", [2, 3, 4]),  # a tie - dye shirt
    ("a tie-dye shirt", "dye", [4]),
    ("a tie-dye shirt", "tie", [2]),
    ("a red-brown sofa", "red", [2]),
    ("a red_sofa", "sofa", [4]),  # a red _ sofa: CLIP splits at "_"
    ("ice  cream and ice cream", "Ice Cream", [1, 2, 4, 5]),
    ("ice cream and icecream", "cream", [2]),
    ("the 'sofa' is red", "sofa", [2, 3]),  # the 's ofa ' is red: "'s" holds the s
    ("the 'sofa' is red", "red", [6]),
    ("a 🙂 green 🐱 sofa", "green", [3]),  # a 🙂 green 🐱 sofa, one token per emoji
    ("a 🙂 green 🐱 sofa", "sofa", [5]),
    ("a 🙂 green 🐱 sofa", "🐱", [4]),
    (ROCKET_MELT, "green", [9]),  # a + 4 tokens for 🧑‍🚀 + 3 byte tokens for 🫠
    ("a cafe\u0301 sofa", "café", [2]),  # decomposed é: CLIP composes it (NFC)
    ("a café sofa", "cafe\u0301", [2]),
    ("Grüne Sofa grün", "GRÜN", [5, 6, 7]),  # gr ü ne sofa gr ü n
    ("a 3d render of 2023", "3d", [2, 3]),  # a 3 d render of 2 0 2 3
    ("a 3d render of 2023", "3", []),  # only inside "3d" and "2023"
    ("a red sofa", "green", []),
    ("", "green", []),
    (LONG_SOFAS, "sofa", list(range(3, 76, 3))),  # the sofas at 78, 81, ... are cut off
    ("a " * 74 + "green", "green", [75]),  # 77 tokens: green is the last one read
    ("a " * 75 + "green", "green", []),  # green would be at 76, where truncation puts EOS
]


@pytest.mark.parametrize(("prompt", "word", "expected"), WORD_CASES)
def test_word_token_indices(clip_tok, spans, prompt: str, word: str, expected: list[int]) -> None:
    assert word_token_indices(clip_tok, prompt, word) == expected


def test_symbol_word_inside_a_symbol_run(clip_tok, spans) -> None:
    """Offsets give the emoji's own 3 byte tokens; the slow-tokenizer fallback, the whole run."""
    expected = {"offsets": [6, 7, 8], "pieces": [2, 3, 4, 5, 6, 7, 8]}[spans]
    assert word_token_indices(clip_tok, ROCKET_MELT, "🫠") == expected


@pytest.mark.parametrize(
    ("prompt", "word", "decoded"),
    [
        ("a sofa. (Green) green. GREEN!", "green", "green green green"),
        ("a champagne lamborghini with a tiedye seat", "tiedye", "tiedye"),
        ("a tie-dye shirt", "tie-dye", "tie - dye"),
        ("Grüne Sofa grün", "grün", "grün"),
        (ROCKET_MELT, "🫠", "🫠"),
        ("a " * 74 + "green", "green", "green"),
    ],
)
def test_positions_index_the_padded_ids(clip_tok, prompt: str, word: str, decoded: str) -> None:
    """The positions index the padded ids the text encoder reads, and hold just the word."""
    ids = clip_tok(prompt, padding="max_length", max_length=77, truncation=True)["input_ids"]
    positions = word_token_indices(clip_tok, prompt, word)
    assert clip_tok.decode([ids[p] for p in positions]) == decoded


@pytest.mark.parametrize("word", ["", "   ", None])
def test_word_must_be_text(clip_tok, word) -> None:
    with pytest.raises(ValueError, match="edit word"):
        word_token_indices(clip_tok, "a red sofa", word)


def test_require_word(clip_tok) -> None:
    assert require_word(clip_tok, "a green sofa", "green") == [2]
    with pytest.raises(ValueError) as absent:
        require_word(clip_tok, "a red sofa", "green")
    assert str(absent.value) == (
        "edit word 'green' is not in the target prompt 'a red sofa'; type a word that appears in it"
    )
    with pytest.raises(ValueError) as inside:
        require_word(clip_tok, "I am so Tired", "red", what="source prompt")
    assert str(inside.value) == (
        "edit word 'red' appears only inside another word ('Tired') in the source prompt "
        "'I am so Tired'; type a word that appears on its own in it"
    )
    with pytest.raises(ValueError, match=r"'green' lies past CLIP's 77-token limit"):
        require_word(clip_tok, "a " * 75 + "green", "green")
    # ``kind`` names the word in every message: the negative word is not an edit word.
    with pytest.raises(ValueError) as negative:
        require_word(clip_tok, "a red sofa", "blue", what="source prompt", kind="negative word")
    assert str(negative.value) == (
        "negative word 'blue' is not in the source prompt 'a red sofa'; type a word that appears "
        "in it"
    )
    for prompt in ("I am so Tired", "a " * 75 + "red"):
        with pytest.raises(ValueError, match="^negative word 'red' "):
            require_word(clip_tok, prompt, "red", kind="negative word")


def test_check_prompt(clip_tok) -> None:
    assert check_prompt(clip_tok, "  a green sofa \n") == "a green sofa"
    exact = "a " * 75  # 75 tokens + BOS + EOS
    assert check_prompt(clip_tok, exact) == exact.strip()
    with pytest.raises(ValueError) as empty:
        check_prompt(clip_tok, " \t ")
    assert str(empty.value) == (
        "the target prompt is empty; describe the edited image, e.g. 'a photo of a green sofa'"
    )
    with pytest.raises(ValueError, match="the source prompt is empty; describe the image"):
        check_prompt(clip_tok, "", what="source prompt")
    with pytest.raises(ValueError, match="has 78 tokens .* at most 77; shorten it"):
        check_prompt(clip_tok, exact + "a")
    with pytest.raises(ValueError, match="must be text, got int 3"):
        check_prompt(clip_tok, 3)


def _expected_mapper(head: list[int], n_target: int) -> list[int]:
    return head + list(range(n_target, MAX_TOKENS))


def test_align_hand_worked() -> None:
    align = prompts._align
    assert align([1, 2, 3], [1, 2, 3]) == [0, 1, 2]
    # Left before diagonal: at (i=1, j=2) inserting the 2nd target 1 ties with matching it,
    # so the 1st target 1 is matched and the 2nd is new (diagonal-first gives [-1, 0, 1]).
    assert align([1, 2], [1, 1, 2]) == [0, -1, 1]
    # Up before diagonal: at (2, 1) dropping the 2nd source 1 ties with matching it.
    assert align([1, 1], [1]) == [0]
    assert align([1, 1, 2], [1, 2]) == [0, 2]
    assert align([1, 2, 3], [4, 5]) == [-1, -1]
    assert align([], [7]) == [-1]
    assert align([7], []) == []


def test_refinement_mapper_substitution(clip_tok) -> None:
    source = "a photo of a red sofa in a living room"
    target = "a photo of a green sofa in a living room"  # 12 tokens, green at 5
    mapper, alphas = refinement_mapper(clip_tok, source, target)
    assert mapper.shape == (77,) and mapper.dtype == torch.int64
    assert alphas.shape == (77,) and alphas.dtype == torch.float32
    assert mapper.tolist() == _expected_mapper([0, 1, 2, 3, 4, -1, 6, 7, 8, 9, 10, 11], 12)
    assert alphas.tolist() == [1.0] * 5 + [0.0] + [1.0] * 71
    assert new_token_positions(clip_tok, source, target) == [5]


def test_refinement_mapper_insertion_and_deletion(clip_tok) -> None:
    short, long = "a photo of a red sofa", "a photo of a big red sofa"  # 8 and 9 tokens
    mapper, alphas = refinement_mapper(clip_tok, short, long)
    assert mapper.tolist() == _expected_mapper([0, 1, 2, 3, 4, -1, 5, 6, 7], 9)
    assert torch.nonzero(alphas == 0).flatten().tolist() == [5]
    mapper, alphas = refinement_mapper(clip_tok, long, short)  # "big" dropped
    assert mapper.tolist() == _expected_mapper([0, 1, 2, 3, 4, 6, 7, 8], 8)
    assert alphas.tolist() == [1.0] * 77
    # The added words come last; the second "a" is new, not matched to the first.
    mapper, _ = refinement_mapper(clip_tok, "a cat", "a cat and a dog")
    assert mapper.tolist() == _expected_mapper([0, 1, 2, -1, -1, -1, 3], 7)


def test_refinement_mapper_identical_and_max_len(clip_tok) -> None:
    mapper, alphas = refinement_mapper(clip_tok, "a red sofa", "a red sofa", max_len=10)
    assert mapper.tolist() == list(range(10))
    assert alphas.tolist() == [1.0] * 10
    with pytest.raises(ValueError, match="target prompt .* has 92 tokens, more than the 77"):
        refinement_mapper(clip_tok, "a red sofa", LONG_SOFAS)
    with pytest.raises(ValueError, match="source prompt .* has 92 tokens"):
        refinement_mapper(clip_tok, LONG_SOFAS, "a red sofa")


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        ("a photo of a red sofa", "a photo of a green sofa", ["green"]),
        ("a photo of a red sofa", "a photo of a big Red sofa.", ["big"]),
        ("a red shirt", "a Tie-Dye, shirt!", ["tie-dye"]),  # tie - dye , and ! are new
        ("a sofa", "a green green sofa", ["green"]),
        ("a cat", "a cat and a dog", ["dog"]),  # "and", "a" are new too, but function words
        ("a cat", "a cat and the", ["and", "the"]),  # nothing else new: kept
        ("a red sofa", "a champagne sofa", ["champagne"]),
        ("a sofa", "a (checkered) sofa", ["checkered"]),  # chec + kered, one word
        ("a sofa", "a 🙂 green sofa", ["green"]),  # a content word goes before the emoji
        ("a red sofa", "a red sofa 🙂!", ["🙂"]),  # only a symbol added: it names itself
        ("a photo of a sofa", "a photo of a 🐱 on a sofa", ["🐱"]),  # not the new "on", "a"
    ],
)
def test_edit_words(clip_tok, spans, source: str, target: str, expected: list[str]) -> None:
    words = edit_words(clip_tok, source, target)
    assert words == expected
    for word in words:
        assert word_token_indices(clip_tok, target, word)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("a red sofa", "a red sofa"),
        ("a red sofa", "A RED   sofa"),  # CLIP lowercases and folds spaces: same tokens
        ("a big red sofa", "a red sofa"),  # only a removal
        ("a red sofa", "a red sofa !?"),  # only punctuation added
    ],
)
def test_edit_words_none_new(clip_tok, source: str, target: str) -> None:
    with pytest.raises(ValueError, match="adds no new word to the source prompt"):
        edit_words(clip_tok, source, target)


def test_edit_words_are_at_most_sixteen_and_each_once(clip_tok) -> None:
    """Each edit word's maps are read in every MAG iteration: a bounded, distinct list."""
    words = [f"w{n}" for n in range(MAX_EDIT_WORDS + 1)]
    target = "a photo of a sofa " + " ".join(words)
    chosen, positions = edit_word_positions(clip_tok, "a photo of a sofa", target, words[:16])
    assert chosen == words[:16] and len(positions) == MAX_EDIT_WORDS == 16
    with pytest.raises(ValueError, match="^17 edit words were given; give at most 16"):
        edit_word_positions(clip_tok, "a photo of a sofa", target, words)
    with pytest.raises(ValueError, match="^10000 edit words were given"):
        edit_word_positions(clip_tok, "a photo of a sofa", target, ["w1"] * 10_000)
    for twice in (["w1", "w1"], ["w1", "W1"], ["w1", " w1 ", "w2"]):
        with pytest.raises(ValueError, match="^the edit word 'w1' is given twice; give each word"):
            edit_word_positions(clip_tok, "a photo of a sofa", target, twice)


def test_shipped_tokenizer_default_cache() -> None:
    """`clip_tokenizer()` with no argument works offline from the shipped file."""
    assert BPE_VOCAB_PATH.is_file()
    tokenizer = clip_tokenizer()
    assert word_token_indices(tokenizer, "a photo of a green sofa", "green") == [5]
