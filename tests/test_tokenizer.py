"""The offline CLIP tokenizer equals SD v1.4's, file for file and token for token."""

import gzip
import hashlib
import importlib.util
import json
import os
from pathlib import Path

import pytest
from transformers import CLIPTokenizer

from magedit import tokenizer as tok_module
from magedit.tokenizer import BPE_VOCAB_PATH, bpe_to_hf_files, clip_tokenizer, tokenizer_folder

SD14_TOKENIZER = Path(__file__).resolve().parent / "oracle" / "model" / "sdm-1.4" / "tokenizer"

SHIPPED_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
SENTENCES = [
    "a photo of a red sofa in a living room",
    "a photo of a green sofa in a living room",
    "A Champagne Lamborghini with a tiedye, tie-dye seat!",
    "  two   spaces\tand a tab\nand a newline  ",
    "a 🙂🐱 sofa, 🧑\u200d🚀 and 🫠 (emoji)",
    "café, cafe\u0301 and naïve Grüne İstanbul",
    "the sofa's 3d render from 2023 costs $1,299.99 & more...",
    "red_sofa red-sofa red/sofa 'sofa'",
]


@pytest.fixture(scope="module")
def open_clip_gz() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("open_clip_torch is not installed; its BPE file is the reference copy")
    return Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"


@pytest.fixture(scope="module")
def built_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clip-tokenizer")
    bpe_to_hf_files(BPE_VOCAB_PATH, folder)
    return folder


def _merges(folder: Path) -> list[str]:
    return (folder / "merges.txt").read_text(encoding="utf-8").split("\n")


def _vocab(folder: Path) -> dict[str, int]:
    return json.loads((folder / "vocab.json").read_text(encoding="utf-8"))


def test_shipped_file_is_clips(open_clip_gz: Path) -> None:
    shipped = BPE_VOCAB_PATH.read_bytes()
    assert hashlib.sha256(shipped).hexdigest() == SHIPPED_SHA256
    assert shipped == open_clip_gz.read_bytes()


def test_built_from_open_clip_equals_built_from_shipped(
    open_clip_gz: Path, built_folder: Path, tmp_path: Path
) -> None:
    bpe_to_hf_files(open_clip_gz, tmp_path)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / name).read_bytes() == (built_folder / name).read_bytes(), name


def test_vocab_layout(built_folder: Path) -> None:
    vocab = _vocab(built_folder)
    merges = _merges(built_folder)
    assert len(vocab) == 49408
    assert sorted(vocab.values()) == list(range(49408))
    assert merges[0] == "#version: 0.2"
    assert merges[-1] == ""  # the file ends with a newline
    assert len(merges) == 1 + 48894 + 1
    assert merges[1] == "i n" and merges[-2] == "jeky ll</w>"
    assert vocab["!"] == 0 and vocab["!</w>"] == 256 and vocab["in"] == 512
    assert vocab["jekyll</w>"] == 49405
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407


def test_converter_rejects_a_short_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt.gz"
    with gzip.open(bad, "wt", encoding="utf-8") as f:
        f.write("header\ni n\nt h\n")
    with pytest.raises(ValueError, match="holds 3 merges, expected 48894"):
        bpe_to_hf_files(bad, tmp_path / "out")


def test_files_equal_sd14(built_folder: Path) -> None:
    assert _vocab(built_folder) == _vocab(SD14_TOKENIZER)
    assert _merges(built_folder) == _merges(SD14_TOKENIZER)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        built = json.loads((built_folder / name).read_text(encoding="utf-8"))
        assert built == json.loads((SD14_TOKENIZER / name).read_text(encoding="utf-8")), name
    # Byte for byte, too, so the folder can stand in for SD v1.4's.
    for name in ("vocab.json", "merges.txt"):
        assert (built_folder / name).read_bytes() == (SD14_TOKENIZER / name).read_bytes(), name


def test_tokenization_equals_sd14(tmp_path: Path) -> None:
    ours = clip_tokenizer(tmp_path)
    reference = CLIPTokenizer.from_pretrained(str(SD14_TOKENIZER))
    assert ours.model_max_length == reference.model_max_length == 77
    for sentence in SENTENCES:
        assert ours.encode(sentence) == reference.encode(sentence), sentence
        padded = ours(sentence, padding="max_length", max_length=77, truncation=True)
        expected = reference(sentence, padding="max_length", max_length=77, truncation=True)
        assert padded["input_ids"] == expected["input_ids"], sentence
    long = " ".join(SENTENCES * 3)
    truncated = ours(long, max_length=77, truncation=True)["input_ids"]
    assert truncated == reference(long, max_length=77, truncation=True)["input_ids"]
    assert len(truncated) == 77 and truncated[-1] == 49407


def test_known_tokens(tmp_path: Path) -> None:
    tokenizer = clip_tokenizer(tmp_path)
    assert tokenizer.encode("a red sofa") == [49406, 320, 736, 15723, 49407]
    assert tokenizer.tokenize("Champagne tiedye") == ["champagne</w>", "ti", "ed", "ye</w>"]
    padded = tokenizer("a red sofa", padding="max_length", max_length=77)["input_ids"]
    assert len(padded) == 77 and padded[5:] == [49407] * 72


def test_clip_tokenizer_is_cached(tmp_path: Path) -> None:
    first = clip_tokenizer(tmp_path)
    assert clip_tokenizer(tmp_path) is first
    folders = [p.name for p in tmp_path.iterdir()]
    assert folders == [f"clip-tokenizer-{SHIPPED_SHA256[:16]}"]  # no staging folder left


def test_folder_reused_when_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tokenizer_folder(tmp_path)

    def fail(*args: object) -> None:
        raise AssertionError("rebuilt a complete folder")

    monkeypatch.setattr(tok_module, "bpe_to_hf_files", fail)
    assert tokenizer_folder(tmp_path) == folder


def test_concurrent_builder_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process renames its complete copy into place between our build and our rename."""
    real_rename = os.rename

    def rename_after_other_process(src: str, dst: str) -> None:
        other = Path(str(dst) + ".other")
        bpe_to_hf_files(BPE_VOCAB_PATH, other)
        real_rename(other, dst)
        real_rename(src, dst)  # fails: dst exists and is not empty

    monkeypatch.setattr(tok_module.os, "rename", rename_after_other_process)
    folder = tokenizer_folder(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]
    assert len(_vocab(folder)) == 49408
