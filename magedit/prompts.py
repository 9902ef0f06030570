"""Prompts: checks, word -> token positions, and the source/target token alignment.

Every function takes a Hugging Face CLIP tokenizer first (`magedit.tokenizer.clip_tokenizer()`
for SD v1.4's). Positions index the 77-long padded token sequence that the text encoder reads:
0 is `<|startoftext|>`, then the prompt's tokens, then `<|endoftext|>` and padding.

How CLIP splits text, which the word matching below follows: the prompt is NFC-normalized,
whitespace runs become one space, it is lowercased, then split into pieces (a run of letters, a
single digit, a run of other non-space characters, or one of 's 't 're 've 'm 'll 'd), and each
piece is byte-pair encoded into one or more tokens ("tiedye" -> ti + ed + ye</w>, "tie-dye" ->
tie</w> + -</w> + dye</w>, "2023" -> four tokens, an emoji -> one or more byte tokens).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from magedit.errors import InputError, blame, escape_braces

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

MAX_TOKENS = 77  # CLIP text encoder positions: BOS + 75 prompt tokens + EOS
# Longer text is refused before tokenizing (which takes seconds for a megabyte): 75 tokens of at
# most 32 bytes each, with a space between, fit in 2500 characters.
MAX_PROMPT_CHARS = 4000
# Edit words of one region. Each word's maps are read in every MAG iteration; a sentence of at
# most 75 tokens has no use for more, and a bound keeps a request's work bounded (10,000 copies
# of one word once made an edit take a minute instead of a second).
MAX_EDIT_WORDS = 16
# How much of a prompt an error message quotes.
_QUOTE_CHARS = 80

# Scores of prompt-to-prompt's "refine" alignment (Google's `seq_aligner`: ScoreParams(0, 1, -1)).
_GAP, _MATCH, _MISMATCH = 0, 1, -1
# Traceback moves, with prompt-to-prompt's codes.
_LEFT, _UP, _DIAG, _STOP = 1, 2, 3, 4

_ALNUM = r"[^\W_]"  # a letter or a digit: CLIP's \p{L} / \p{N} (underscore is punctuation to CLIP)
_OUTER_PUNCTUATION = re.compile(r"^[\W_]+|[\W_]+$")
# CLIP's pre-tokenizer (transformers' CLIPTokenizer / OpenAI's simple_tokenizer).
_CLIP_PIECE = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def token_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """The prompt's token ids with BOS and EOS, unpadded and untruncated (`tokenizer.encode`)."""
    return list(tokenizer.encode(prompt))


def shortened(text: str, limit: int = _QUOTE_CHARS) -> str:
    """`text` as an error message shows it: whitespace runs as one space, cut to `limit`
    characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quoted(text: str, limit: int = _QUOTE_CHARS) -> str:
    """`text` to put in an error message's template: ``shortened``, braces doubled (a message
    names settings as ``{field}``; the visitor's ``{steps}`` is text: ``errors.Says``)."""
    return escape_braces(shortened(text, limit))


def check_prompt(
    tokenizer: PreTrainedTokenizerBase, prompt: str, *, what: str = "target prompt"
) -> str:
    """Return `prompt` stripped of surrounding whitespace, after checking CLIP can read all of it.

    Raises ValueError if `prompt` is not a string; is empty, blank or only invisible characters
    (zero-width spaces, format and control characters); holds a control character other than
    tab and newline; has more than `MAX_PROMPT_CHARS` characters; or has more than `MAX_TOKENS`
    (77) tokens counting BOS and EOS. `what` names the prompt in the messages.
    """
    if not isinstance(prompt, str):
        raise ValueError(
            f"the {what} must be text, got {type(prompt).__name__} {quoted(repr(prompt))}; "
            "pass a sentence such as 'a photo of a green sofa'"
        )
    text = prompt.strip()
    # Categories C* (control, format, unassigned) and Z* (separators) draw nothing.
    if not any(unicodedata.category(c)[0] not in "CZ" for c in text):
        image = "the edited image" if what.startswith("target") else "the image"
        raise ValueError(f"the {what} is empty; describe {image}, e.g. 'a photo of a green sofa'")
    control = next((c for c in text if unicodedata.category(c) == "Cc" and not c.isspace()), None)
    if control is not None:
        raise ValueError(
            f"the {what} holds the control character U+{ord(control):04X}; remove it and type "
            "plain text"
        )
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(
            f"the {what} has {len(text)} characters, but CLIP reads at most {MAX_TOKENS} tokens "
            "(a sentence or two); shorten it"
        )
    n_tokens = len(token_ids(tokenizer, text))
    if n_tokens > MAX_TOKENS:
        raise ValueError(
            f"the {what} '{quoted(text)}' has {n_tokens} tokens counting the start and end "
            f"tokens, but CLIP reads at most {MAX_TOKENS}; shorten it"
        )
    return text


def _token_spans(tokenizer: PreTrainedTokenizerBase, text: str) -> list[tuple[int, int]]:
    """Character span in `text` of each token of `tokenizer.encode(text)`; (0, 0) for BOS/EOS.

    A character split into several byte tokens (an emoji, an accented letter) gives each of them
    that character's span.
    """
    if getattr(tokenizer, "is_fast", False):
        encoding = tokenizer(text, return_offsets_mapping=True)
        return [tuple(span) for span in encoding["offset_mapping"]]
    return _token_spans_by_pieces(tokenizer, text)


def _token_spans_by_pieces(tokenizer: PreTrainedTokenizerBase, text: str) -> list[tuple[int, int]]:
    """`_token_spans` for tokenizers without offsets (the slow CLIPTokenizer of transformers 4).

    Splits `text` with CLIP's own pre-tokenizer pattern and gives every token of a piece the
    piece's span. Exact for words with a letter or digit at each end, which never start or end
    inside a piece; a word made only of symbols inside a longer run of symbols ("🫠" in
    "🚀🫠") gets the tokens of the whole run.
    """
    import regex  # a dependency of transformers; stdlib `re` has no \p{L}

    spans = [(0, 0)]
    for piece in regex.finditer(_CLIP_PIECE, text, flags=regex.IGNORECASE):
        spans += [piece.span()] * len(tokenizer.tokenize(piece.group()))
    spans.append((0, 0))
    n_tokens = len(token_ids(tokenizer, text))
    if len(spans) != n_tokens:
        raise RuntimeError(
            f"could not align the {n_tokens} tokens of {text!r} with its characters "
            f"({len(spans)} found); use a fast tokenizer (CLIPTokenizerFast)"
        )
    return spans


def _normalize_word(word: str) -> str:
    """NFC, stripped of whitespace and of punctuation around it ("(Green)," -> "Green")."""
    if not isinstance(word, str):
        raise ValueError(
            f"the edit word must be text, got {type(word).__name__} {word!r}; type a word"
        )
    text = unicodedata.normalize("NFC", word).strip()
    if not text:
        raise ValueError("the edit word is empty; type a word of the target prompt, e.g. 'green'")
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(
            f"the edit word has {len(text)} characters; type a word of the target prompt, "
            "e.g. 'green'"
        )
    # A word made only of symbols (an emoji) is matched as it is.
    return _OUTER_PUNCTUATION.sub("", text) or text


def _word_pattern(word: str, *, whole: bool = True) -> re.Pattern[str]:
    """Case-insensitive pattern for `word` with any whitespace between its parts.

    `whole`: no letter or digit may touch the match, so "red" does not match "tired" or
    "reddish" but does match "red-brown" or "red_sofa" (CLIP splits those at - and _).
    """
    body = r"\s+".join(re.escape(part) for part in word.split())
    if whole and re.match(_ALNUM, word):
        body = rf"(?<!{_ALNUM}){body}"
    if whole and re.match(_ALNUM, word[-1]):
        body = rf"{body}(?!{_ALNUM})"
    return re.compile(body, re.IGNORECASE)


def _positions_of_spans(spans: list[tuple[int, int]], matches: list[tuple[int, int]]) -> list[int]:
    """Positions of the tokens whose characters overlap any of `matches`, within 77 positions."""
    last = min(len(spans), MAX_TOKENS) - 1  # the EOS slot, even when the prompt is truncated
    return [
        position
        for position in range(1, last)
        if any(spans[position][0] < end and spans[position][1] > start for start, end in matches)
    ]


def word_token_indices(tokenizer: PreTrainedTokenizerBase, prompt: str, word: str) -> list[int]:
    """Positions (ascending, 1..75) of the tokens of every occurrence of `word` in `prompt`.

    `word` is one word or several ("ice cream"); it is matched case-insensitively as a whole
    word: "red" is not found in "tired", "reddish" or "greenhouse"; punctuation around it, in
    the prompt or in `word`, is ignored ("green" is found in "(green)." and "green,").
    Hyphenated words are CLIP's separate pieces: "tie-dye" gives the tokens of tie, - and dye,
    and "dye" alone gives the token of dye. A word split by BPE into several tokens gives all
    of them ("tiedye" -> 3 positions). A token that also holds characters around the word is
    included: "sofa" in "'sofa'" gives 's + ofa, since CLIP reads "'s" as one piece.
    Tokens past position 75 are dropped: SD truncates the prompt to 77 tokens, EOS at 76.
    Returns [] when the word is absent.
    """
    core = _normalize_word(word)
    text = unicodedata.normalize("NFC", prompt)
    matches = [m.span() for m in _word_pattern(core).finditer(text)]
    if not matches:
        return []
    return _positions_of_spans(_token_spans(tokenizer, text), matches)


def require_word(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    word: str,
    *,
    what: str = "target prompt",
    kind: str = "edit word",
) -> list[int]:
    """`word_token_indices`, raising ValueError (with the fix) when `word` has no token in it.

    The message says whether the word is absent, appears only inside other words, or lies past
    CLIP's 77-token limit; `what` names the prompt and `kind` the word ("negative word").
    """
    positions = word_token_indices(tokenizer, prompt, word)
    if positions:
        return positions
    core = _normalize_word(word)
    text = unicodedata.normalize("NFC", prompt)
    if _word_pattern(core).search(text):
        raise ValueError(
            f"{kind} '{quoted(core)}' lies past CLIP's {MAX_TOKENS}-token limit in the {what} "
            f"'{quoted(prompt)}'; shorten the prompt or put the word earlier"
        )
    inside = _word_pattern(core, whole=False).search(text)
    if inside:
        start, end = inside.span()
        while start > 0 and re.match(_ALNUM, text[start - 1]):
            start -= 1
        while end < len(text) and re.match(_ALNUM, text[end]):
            end += 1
        raise ValueError(
            f"{kind} '{quoted(core)}' appears only inside another word "
            f"('{quoted(text[start:end])}') in the {what} '{quoted(prompt)}'; type a word that "
            "appears on its own in it"
        )
    raise ValueError(
        f"{kind} '{quoted(core)}' is not in the {what} '{quoted(prompt)}'; type a word that "
        "appears in it"
    )


def _align(source: list[int], target: list[int]) -> list[int]:
    """For each target token, the position of its aligned source token, or -1 if it is new.

    Global (Needleman-Wunsch) alignment with gap 0, match 1, mismatch -1. Ties are broken
    left (target token new), then up (source token dropped), then diagonal, as in
    prompt-to-prompt's `seq_aligner`, whose alignments we must reproduce exactly.
    """
    n_source, n_target = len(source), len(target)
    score = np.zeros((n_source + 1, n_target + 1), dtype=np.int64)
    score[0, 1:] = _GAP * np.arange(1, n_target + 1)
    score[1:, 0] = _GAP * np.arange(1, n_source + 1)
    move = np.zeros((n_source + 1, n_target + 1), dtype=np.int64)
    move[0, 1:] = _LEFT
    move[1:, 0] = _UP
    move[0, 0] = _STOP
    for i in range(1, n_source + 1):
        for j in range(1, n_target + 1):
            left = score[i, j - 1] + _GAP
            up = score[i - 1, j] + _GAP
            pair = _MATCH if source[i - 1] == target[j - 1] else _MISMATCH
            diag = score[i - 1, j - 1] + pair
            best = max(left, up, diag)
            score[i, j] = best
            move[i, j] = _LEFT if best == left else _UP if best == up else _DIAG

    target_to_source = []  # filled from the last target token backwards
    i, j = n_source, n_target
    while move[i, j] != _STOP:
        if move[i, j] == _DIAG:
            i, j = i - 1, j - 1
            target_to_source.append(i)
        elif move[i, j] == _LEFT:
            j -= 1
            target_to_source.append(-1)
        else:
            i -= 1
    return target_to_source[::-1]


def refinement_mapper(
    tokenizer: PreTrainedTokenizerBase, source: str, target: str, max_len: int = MAX_TOKENS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt-to-prompt's "refine" alignment of one source/target pair (`get_refinement_mapper`).

    Returns `(mapper, alphas)`, both (max_len,):
    - `mapper` (int64): for target position p < len(target tokens), the aligned source position,
      or -1 for a new target token; for the padding positions p >= len(target tokens), p itself
      (len(target tokens) + k), as prompt-to-prompt does.
    - `alphas` (float32): 0 at the new target tokens, 1 everywhere else.
    The refined cross-attention is `source_maps[..., mapper] * alphas + target_maps * (1 - alphas)`;
    the -1 entries pick position max_len - 1 and are zeroed by their alpha.
    Token sequences include BOS and EOS and are not padded. Raises ValueError if a prompt has
    more than `max_len` tokens.
    """
    source_ids = token_ids(tokenizer, source)
    target_ids = token_ids(tokenizer, target)
    for what, prompt, ids in (("source", source, source_ids), ("target", target, target_ids)):
        if len(ids) > max_len:
            raise ValueError(
                f"the {what} prompt '{quoted(prompt)}' has {len(ids)} tokens, more than the "
                f"{max_len} positions of the alignment; shorten it"
            )
    n_target = len(target_ids)
    target_to_source = torch.tensor(_align(source_ids, target_ids), dtype=torch.int64)
    mapper = torch.zeros(max_len, dtype=torch.int64)
    mapper[:n_target] = target_to_source
    mapper[n_target:] = n_target + torch.arange(max_len - n_target)
    alphas = torch.ones(max_len)
    alphas[:n_target] = (target_to_source != -1).float()
    return mapper, alphas


def new_token_positions(tokenizer: PreTrainedTokenizerBase, source: str, target: str) -> list[int]:
    """Target positions of the tokens the target adds (alpha 0 in `refinement_mapper`), ascending."""
    _, alphas = refinement_mapper(tokenizer, source, target)
    return torch.nonzero(alphas == 0).flatten().tolist()


# English function words never chosen as automatic edit words (when a content word is new too).
STOPWORDS = frozenset(
    {
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "with",
        "by",
        "from",
        "as",
        "into",
        "onto",
        "over",
        "under",
        "near",
        "next",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "this",
        "that",
        "these",
        "those",
        "its",
        "it",
        "his",
        "her",
        "their",
        "our",
        "my",
        "your",
        "some",
    }
)


def _symbols(text: str) -> str:
    """`text` from its first to its last symbol character (Unicode So: emoji, ©...), or ""."""
    kept = [i for i, c in enumerate(text) if unicodedata.category(c) == "So"]
    return text[kept[0] : kept[-1] + 1] if kept else ""


def edit_words(tokenizer: PreTrainedTokenizerBase, source: str, target: str) -> list[str]:
    """The words of `target` that hold new tokens: the default edit words when none is given.

    A word is a whitespace-separated chunk of the target without the punctuation around it,
    lowercased ("Tie-Dye," -> "tie-dye"). A new token without a letter or digit names no word,
    except an emoji (or other symbol character), which names itself ("🐱"). Words come in
    target order, each once; every returned word is found by
    `word_token_indices(tokenizer, target, word)`. Preference: content words, else emoji, else
    the function words in `STOPWORDS` ("a photo of a sofa" -> "a photo of a 🐱 on a sofa" gives
    ["🐱"], not ["on", "a"]).
    Raises ValueError if the target adds no new word.
    """
    text = unicodedata.normalize("NFC", target)
    spans = _token_spans(tokenizer, text)
    words: list[str] = []
    symbols: list[str] = []
    for position in new_token_positions(tokenizer, source, text):
        start, end = spans[position]
        if not re.search(_ALNUM, text[start:end]):
            symbol = _symbols(text[start:end])
            if symbol and symbol not in symbols:
                symbols.append(symbol)
            continue
        while start > 0 and not text[start - 1].isspace():
            start -= 1
        while end < len(text) and not text[end].isspace():
            end += 1
        word = _OUTER_PUNCTUATION.sub("", text[start:end]).lower()
        if word not in words:
            words.append(word)
    # Function words the alignment marks as new ("a cat" -> "a cat and a dog" adds "and", "a")
    # carry no edit; guide the content words when there are any, else the emoji.
    content = [w for w in words if w not in STOPWORDS]
    words = content or symbols or words
    if not words:
        raise ValueError(
            f"the target prompt '{quoted(target)}' adds no new word to the source prompt "
            f"'{quoted(source)}'; change the words that describe the edit"
        )
    return words


def edit_word_positions(
    tokenizer: PreTrainedTokenizerBase,
    source: str,
    target: str,
    words: Sequence[str] | None = None,
    *,
    guided: bool = True,
) -> tuple[list[str], list[list[int]]]:
    """Choose and check the edit words of an edit: (words, positions of each in the target).

    `words` None or empty (or only blank strings) picks the words the target adds
    (`edit_words`); a bare string is one word. Each word must be in the target prompt. With
    `guided` (MAG runs while cross-attention is injected), each word must hold at least one
    token that is new in the target: the maps of tokens shared with the source are copied from
    the reconstruction branch, so guidance could not move them.
    """
    if isinstance(words, str):  # one word given bare, not the characters of a sequence
        words = [words]
    # Blank entries (an empty text box) mean "pick for me"; anything else that is not text
    # reaches `_normalize_word`, which says so.
    given = [w for w in (words or []) if not (isinstance(w, str) and not w.strip())]
    chosen = given or edit_words(tokenizer, source, target)
    if len(chosen) > MAX_EDIT_WORDS:
        what = "were given" if given else "are new in the target prompt"
        raise ValueError(
            f"{len(chosen)} edit words {what}; give at most {MAX_EDIT_WORDS}, the words of the "
            "target prompt that describe the change"
        )
    seen: set[str] = set()
    for word in chosen:
        key = _normalize_word(word).lower()
        if key in seen:
            raise ValueError(f"the edit word '{quoted(key)}' is given twice; give each word once")
        seen.add(key)
    new = set(new_token_positions(tokenizer, source, target)) if guided else set()
    positions = []
    for word in chosen:
        found = require_word(tokenizer, target, word, what="target prompt")
        if guided and not new.intersection(found):
            raise ValueError(
                f"edit word '{quoted(word)}' is in both prompts, so its attention is copied from "
                "the photo and guidance cannot change it; choose a word that is new in the "
                "target prompt"
            )
        positions.append(found)
    return chosen, positions


def replaced_words(tokenizer: PreTrainedTokenizerBase, source: str, target: str) -> list[str]:
    """The content words of `source` whose tokens the target dropped ("a red sofa" -> "a green
    sofa" gives ["red"]): the usual negative word (Eq. 7). Lowercased, in source order, each
    once; function words (`STOPWORDS`) are left out."""
    source_text = unicodedata.normalize("NFC", source)
    n_source = len(token_ids(tokenizer, source_text))
    mapper, alphas = refinement_mapper(tokenizer, source_text, target)
    n_target = len(token_ids(tokenizer, target))
    kept = {int(p) for p, a in zip(mapper[:n_target], alphas[:n_target], strict=True) if a > 0}
    spans = _token_spans(tokenizer, source_text)
    words: list[str] = []
    for position in range(1, n_source - 1):
        if position in kept:
            continue
        start, end = spans[position]
        while start > 0 and not source_text[start - 1].isspace():
            start -= 1
        while end < len(source_text) and not source_text[end].isspace():
            end += 1
        word = _OUTER_PUNCTUATION.sub("", source_text[start:end]).lower()
        if word and re.search(_ALNUM, word) and word not in STOPWORDS and word not in words:
            words.append(word)
    return words


@dataclass(frozen=True)
class EditText:
    """The text of an edit, checked: what ``check_edit_text`` returns."""

    source: str  # stripped
    target: str
    words: list[list[str]]  # per region, its edit words
    positions: list[list[list[int]]]  # per region, per word, its target-prompt token positions
    negative_word: str | None
    negative_prompt: str | None  # the prompt the negative word is read under (None without one)
    negative_positions: list[int] | None
    mapper: torch.Tensor  # (77,) int64, refinement_mapper's
    alphas: torch.Tensor  # (77,) float32


def check_edit_text(
    tokenizer: PreTrainedTokenizerBase,
    source: str,
    target: str,
    words: Sequence[Sequence[str] | str | None] = (None,),
    negative_word: str | None = None,
    negative_prompt: str | None = None,
    *,
    guided: bool = True,
) -> EditText:
    """Check the text of an edit once: both prompts, each region's edit words, the negative word.

    ``words`` holds one entry per region: its words, or None for the words the target adds that
    no other region was given. No two regions may share a word. ``negative_word`` (Eq. 7) must be
    in ``negative_prompt`` (default: the source prompt). ``guided``: MAG runs while
    cross-attention is injected, so every edit word must hold a token that is new in the target.

    Raises ``errors.InputError`` naming the input at fault ("source_prompt", "target_prompt",
    "words" with its 1-based region, "negative_word", "negative_prompt").
    """
    with blame("source_prompt"):
        source = check_prompt(tokenizer, source, what="source prompt")
    with blame("target_prompt"):
        target = check_prompt(tokenizer, target, what="target prompt")
    given = [
        [words_of] if isinstance(words_of, str) else list(words_of or ()) for words_of in words
    ]
    owner: dict[str, int] = {}
    for region, chosen in enumerate(given, 1):
        for word in chosen:
            with blame("words", region):
                key = _normalize_word(word).lower()
            if owner.setdefault(key, region) != region:
                raise InputError(
                    "words",
                    f"the edit word '{quoted(key)}' is given to regions {owner[key]} and {region}; "
                    "give each region its own words of the target prompt",
                    region,
                )
    chosen_words, positions = [], []
    for region, chosen in enumerate(given, 1):
        chosen = [w for w in chosen if not (isinstance(w, str) and not w.strip())]
        if not chosen:
            with blame("target_prompt"):  # the prompts say what changes, or fail to
                chosen = [w for w in edit_words(tokenizer, source, target) if w not in owner]
            if not chosen:
                raise InputError(
                    "words",
                    f"the target prompt adds no word for region {region} besides the other "
                    f"regions' words; type region {region}'s edit words",
                    region,
                )
        with blame("words", region):
            found = edit_word_positions(tokenizer, source, target, chosen, guided=guided)
        chosen_words.append(found[0])
        positions.append(found[1])
    negative_word = (negative_word or "").strip() or None
    negative_positions = None
    if negative_word:
        what = "negative prompt" if negative_prompt else "source prompt"
        if negative_prompt:
            with blame("negative_prompt"):
                negative_prompt = check_prompt(tokenizer, negative_prompt, what=what)
        else:
            negative_prompt = source  # checked above
        with blame("negative_word"):
            negative_positions = require_word(
                tokenizer, negative_prompt, negative_word, what=what, kind="negative word"
            )
    elif negative_prompt:
        raise InputError(
            "negative_word", "a negative prompt needs a negative word (the word it holds)"
        )
    else:
        negative_prompt = None
    mapper, alphas = refinement_mapper(tokenizer, source, target)
    return EditText(
        source=source,
        target=target,
        words=chosen_words,
        positions=positions,
        negative_word=negative_word,
        negative_prompt=negative_prompt,
        negative_positions=negative_positions,
        mapper=mapper,
        alphas=alphas,
    )
