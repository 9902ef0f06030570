"""Shared objects stay correct when the page's threads use them at once (issue: prompt checks
on every keystroke ran beside edits and changed their prompt encodings through the tokenizer)."""

import threading

import numpy as np
import pytest
import torch

from magedit import prompts
from magedit.config import EditConfig
from magedit.pipeline import EditResult
from tests.conftest import SOURCE, TARGET, scene, scene_mask

CHECKED = [
    ("a photo of a red sofa", "a photo of a green sofa"),
    ("a cat on a mat", "a black cat on a mat"),
    ("a living room with a grey sofa and a wooden table", "a living room with a tie-dye sofa"),
]


class Checkers:
    """Threads that check prompts as the page does on every keystroke, until stopped; given a
    pipeline, they also prepare whole edits with it (``prepare`` runs beside a running edit)."""

    def __init__(self, tokenizer, count: int = 2, pipe=None):
        self.tokenizer = tokenizer
        self.pipe = pipe
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.rounds = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                for source, target in CHECKED:
                    prompts.check_prompt(self.tokenizer, target)
                    prompts.edit_word_positions(self.tokenizer, source, target)
                    if self.pipe is not None:
                        self.pipe.prepare(scene(), source, target, scene_mask(), negative_word="a")
                    self.rounds += 1
        except BaseException as error:  # reported by the test
            self.errors.append(error)

    def __enter__(self) -> "Checkers":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


def test_prompt_checks_in_threads_do_not_change_encodings(tiny_pipe):
    # Before the tokenizer was locked, about 1 encoding in 250 came out unpadded (14 tokens)
    # and the checks themselves failed with IndexError.
    texts = [SOURCE, TARGET, "", "a black cat on a mat"]
    alone = {text: tiny_pipe.encode_prompt(text) for text in texts}
    ids_alone = {
        text: tiny_pipe.tokenizer(
            [text], padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        for text in texts
    }
    differing = 0
    with Checkers(tiny_pipe.tokenizer) as checkers:
        for n in range(3000):
            text = texts[n % len(texts)]
            ids = tiny_pipe.tokenizer(
                [text], padding="max_length", max_length=77, truncation=True, return_tensors="pt"
            ).input_ids
            differing += not torch.equal(ids, ids_alone[text])
            if n % 20 == 0:
                assert torch.equal(tiny_pipe.encode_prompt(text), alone[text])
    assert checkers.errors == []
    assert checkers.rounds > 0
    assert differing == 0


def test_edit_beside_prompt_checks_equals_edit_alone(tiny_pipe):
    # An edit whose prompts are encoded while other threads check prompts and prepare edits
    # (with the same pipeline) gives the same latents bit for bit, and the inversion it caches is
    # the one a quiet run makes.
    config = EditConfig(
        steps=4,
        max_iter=2,
        tau1=1,
        tau2=2,
        tau_self=2,
        blend_steps=1,
        inversion="null_text",
        null_inner_steps=2,
        resolution=64,
    )

    def run() -> EditResult:
        tiny_pipe.cache.clear()
        prepared = tiny_pipe.prepare(scene(), SOURCE, TARGET, scene_mask(), config=config)
        *_, result = tiny_pipe.edit(prepared, tiny_pipe.invert(prepared))
        return result

    quiet = run()
    with Checkers(tiny_pipe.tokenizer, count=3, pipe=tiny_pipe) as checkers:
        busy = [run() for _ in range(3)]
    assert checkers.errors == []
    assert checkers.rounds > 0
    for result in busy:
        assert torch.equal(result.latents, quiet.latents)
        np.testing.assert_array_equal(result.composited, quiet.composited)


def test_encode_prompt_refuses_a_tokenizer_that_does_not_pad(tiny_pipe, monkeypatch):
    # Defence in depth: an encoding of the wrong length never reaches the text encoder (and so
    # never an inversion in the shared cache).
    inner = tiny_pipe.tokenizer

    class Unpadded:
        def __call__(self, texts, **_):
            return inner(texts, return_tensors="pt")

    monkeypatch.setattr(tiny_pipe, "tokenizer", Unpadded())
    with pytest.raises(RuntimeError, match=r"gave \(1, 4\) ids for one prompt, not \(1, 77\)"):
        tiny_pipe.encode_prompt("a sofa")
