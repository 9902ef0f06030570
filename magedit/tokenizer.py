"""The real CLIP tokenizer of Stable Diffusion v1.4, built offline from the BPE file we ship.

SD v1.4's `tokenizer/` folder (`vocab.json` + `merges.txt`) is a re-encoding of OpenAI CLIP's
`bpe_simple_vocab_16e6.txt.gz`. We ship that file (`magedit/data/`, MIT, see its README) and
rebuild the folder from it, so tokenization is right without the Hub.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

BPE_VOCAB_PATH = Path(__file__).resolve().parent / "data" / "bpe_simple_vocab_16e6.txt.gz"

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MODEL_MAX_LENGTH = 77  # CLIP ViT-L/14 text encoder: BOS + 75 tokens + EOS

# CLIP keeps the first 49152 - 256 - 2 merges: a vocabulary of 49408 = 2 * 256 byte symbols
# + 48894 merges + 2 special tokens (OpenAI CLIP `simple_tokenizer.py`).
_NUM_MERGES = 49152 - 256 - 2
_MERGES_HEADER = "#version: 0.2"  # first line of SD v1.4's merges.txt; tokenizers skips "#version"

_FILE_NAMES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


def _added_token(content: str) -> dict[str, object]:
    return {
        "content": content,
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    }


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from the 256 byte values to printable unicode characters.

    Printable Latin-1 bytes map to themselves; the other 68 bytes map to 256, 257, ... in byte
    order. The dict's insertion order (printable bytes first) is the order of the first 256 ids.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    byte_values = printable[:]
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            byte_values.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(byte_values, map(chr, chars), strict=True))


def bpe_to_hf_files(bpe_gz_path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> None:
    """Write SD v1.4's tokenizer files, converted from CLIP's `bpe_simple_vocab_16e6.txt.gz`.

    Writes `vocab.json` (49408 entries), `merges.txt` (header + 48894 merges),
    `tokenizer_config.json` and `special_tokens_map.json` into `folder` (created if missing),
    byte-identical in content to `CompVis/stable-diffusion-v1-4/tokenizer/`.

    Vocabulary ids, in order: the 256 byte symbols, the same 256 with the end-of-word mark
    `</w>`, each merge joined into one string, then `<|startoftext|>` and `<|endoftext|>`.
    """
    with gzip.open(bpe_gz_path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    # Line 0 is the file's own header ("bpe_simple_vocab_16e6.txt#version: 0.2").
    merges = lines[1 : _NUM_MERGES + 1]
    if len(merges) != _NUM_MERGES:
        raise ValueError(
            f"{bpe_gz_path} holds {len(merges)} merges, expected {_NUM_MERGES}; "
            "pass CLIP's bpe_simple_vocab_16e6.txt.gz"
        )

    byte_symbols = list(_bytes_to_unicode().values())
    symbols = byte_symbols + [s + "</w>" for s in byte_symbols]
    symbols += [merge.replace(" ", "") for merge in merges]
    symbols += [BOS_TOKEN, EOS_TOKEN]
    vocab = {symbol: i for i, symbol in enumerate(symbols)}

    special_tokens_map = {
        "bos_token": _added_token(BOS_TOKEN),
        "eos_token": _added_token(EOS_TOKEN),
        "pad_token": EOS_TOKEN,
        "unk_token": _added_token(EOS_TOKEN),
    }
    tokenizer_config = {
        "bos_token": {"__type": "AddedToken", **_added_token(BOS_TOKEN)},
        "eos_token": {"__type": "AddedToken", **_added_token(EOS_TOKEN)},
        "errors": "replace",
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": EOS_TOKEN,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": {"__type": "AddedToken", **_added_token(EOS_TOKEN)},
    }

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_files = {
        "vocab.json": vocab,
        "tokenizer_config.json": tokenizer_config,
        "special_tokens_map.json": special_tokens_map,
    }
    for name, content in json_files.items():
        text = json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        (folder / name).write_text(text, encoding="utf-8")
    merges_text = "\n".join([_MERGES_HEADER, *merges]) + "\n"
    (folder / "merges.txt").write_text(merges_text, encoding="utf-8")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tokenizer_folder(
    cache_dir: str | os.PathLike[str] | None = None,
    bpe_gz_path: str | os.PathLike[str] = BPE_VOCAB_PATH,
) -> Path:
    """The folder of SD v1.4 tokenizer files built from `bpe_gz_path`, building it if needed.

    The folder is `<cache_dir>/clip-tokenizer-<sha256 of the gz, 16 hex>`; `cache_dir` defaults to
    `<tempfile.gettempdir()>/magedit`. It is written to a temporary sibling and renamed into
    place, so concurrent processes see either no folder or a complete one.
    """
    bpe_gz_path = Path(bpe_gz_path)
    parent = Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir()) / "magedit"
    folder = parent / f"clip-tokenizer-{_sha256(bpe_gz_path)[:16]}"
    if all((folder / name).is_file() for name in _FILE_NAMES):
        return folder
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=parent))
    try:
        bpe_to_hf_files(bpe_gz_path, staging)
        try:
            os.rename(staging, folder)
        except OSError:
            # Another process renamed its copy first (the target exists and is not empty).
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


class ThreadSafeTokenizer:
    """A Hugging Face tokenizer shared by threads: every method call holds one lock.

    A fast tokenizer is not safe to share: each call sets the padding and truncation of its one
    Rust backend (`set_truncation_and_padding`), so a `tokenizer.encode(text)` in one thread
    (a prompt check) between that setting and the encoding of `tokenizer(texts,
    padding="max_length")` in another (an edit's prompt encoding) makes the second come out
    unpadded (14 tokens instead of 77), and its spans wrong. Tokenizing takes microseconds, so
    one lock costs nothing. Attributes read through (`is_fast`, `model_max_length`, ...).
    """

    def __init__(self, tokenizer: Any):
        self._tokenizer = tokenizer
        self._lock = threading.RLock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._tokenizer(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._tokenizer, name)
        if not callable(value) or isinstance(value, type):
            return value

        @functools.wraps(value)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return value(*args, **kwargs)

        return locked

    def __repr__(self) -> str:
        return f"ThreadSafeTokenizer({self._tokenizer!r})"


def thread_safe(tokenizer: Any) -> ThreadSafeTokenizer:
    """`tokenizer` behind one lock (itself when it already is)."""
    if isinstance(tokenizer, ThreadSafeTokenizer):
        return tokenizer
    return ThreadSafeTokenizer(tokenizer)


@functools.lru_cache(maxsize=4)
def clip_tokenizer(cache_dir: str | os.PathLike[str] | None = None) -> ThreadSafeTokenizer:
    """SD v1.4's CLIP tokenizer (49408 tokens, 77 positions), built from the shipped BPE file.

    Needs no network. The object is cached per `cache_dir` and shared by every thread, so it is
    wrapped in `ThreadSafeTokenizer`: do not change its settings in place.
    """
    from transformers import CLIPTokenizer

    folder = tokenizer_folder(cache_dir)
    # On transformers 5, CLIPTokenizer(vocab_file=...) silently ignores its files; from_pretrained
    # on the folder reads them.
    return thread_safe(
        CLIPTokenizer.from_pretrained(str(folder), model_max_length=MODEL_MAX_LENGTH)
    )
