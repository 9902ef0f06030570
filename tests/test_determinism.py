"""Determinism (issue 6, item 7): the same image, mask, prompts and settings give the same
output bytes on the CPU, through the command line's own read -> invert -> edit -> PNG path.

There is no seed, because nothing in an edit draws a random number: the image is encoded to the
VAE posterior's mean, DDIM runs with eta = 0, null-text inversion is Adam on fixed data and MAG
is gradient descent. So the inputs and settings alone fix the output; the tests below move the
global torch generator between two runs and find every byte and tensor equal. (A ``seed``
setting once existed and changed nothing; it was removed with the "one prepared edit" API.)
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from conftest import scene, scene_mask
from PIL import Image

from magedit import EditConfig, cli
from magedit.pipeline import EditResult

SOURCE = "a photo of a red sofa"
TARGET = "a photo of a green sofa"
# The paper's pipeline (null-text inversion, MAG, injection, blend) at toy size.
SMALL = ["--steps", "5", "--iterations", "2", "--null-steps", "2", "--resolution", "128"]
SMALL += ["--inversion", "null_text"]  # the optimised inversion: the one that could vary


@pytest.fixture
def cli_on_tiny(tiny_pipe, monkeypatch, tmp_path):
    """``cli.main`` using the session's tiny pipeline (a model load is not what is tested), with
    its inversion cache emptied before each run so every run inverts again."""

    def load_pipeline(*args, **kwargs):
        tiny_pipe.cache.clear()
        return tiny_pipe

    monkeypatch.setattr(cli, "load_pipeline", load_pipeline)
    Image.fromarray(scene(96, 128)).save(tmp_path / "photo.png")
    Image.fromarray(scene_mask(96, 128)).save(tmp_path / "mask.png")

    def run(name: str, *flags: str) -> tuple[bytes, bytes, dict]:
        out, raw, log = (tmp_path / f"{name}{suffix}" for suffix in (".png", ".raw.png", ".json"))
        argv = ["edit", "--tiny", "--quiet", "--image", str(tmp_path / "photo.png")]
        argv += ["--mask", str(tmp_path / "mask.png"), "--source", SOURCE, "--target", TARGET]
        argv += ["--out", str(out), "--raw", str(raw), "--log", str(log), *SMALL, *flags]
        assert cli.main(argv) == 0
        return out.read_bytes(), raw.read_bytes(), json.loads(log.read_text())

    return run


def test_same_inputs_give_identical_png_bytes(cli_on_tiny) -> None:
    torch.manual_seed(3)
    first, first_raw, first_log = cli_on_tiny("first")
    torch.manual_seed(4)
    torch.rand(1000)
    second, second_raw, second_log = cli_on_tiny("second")
    assert first == second and first_raw == second_raw
    assert "seed" not in first_log and "seed" not in first_log["config"]
    assert first_log["config"]["inversion"] == "null_text" and first_log["config"]["max_iter"] == 2
    assert first_log["losses"] == second_log["losses"]
    # The output is a real edit of the photo, not a copy of it (so equality means something).
    edited = np.asarray(Image.open(io.BytesIO(first)))
    assert edited.shape == (96, 128, 3)
    assert not np.array_equal(edited, scene(96, 128))
    assert np.asarray(Image.open(io.BytesIO(first_raw))).shape == (128, 128, 3)  # processing size


def test_the_global_generator_changes_no_byte(tiny_pipe) -> None:
    """Two fresh inversions and edits of the same prepared inputs, the global generator seeded
    differently and moved on in between: every tensor and array is equal."""
    config = EditConfig(resolution=64, inversion="direct", max_iter=2).with_steps(3)
    results = []
    for global_seed in (11, 123456):
        torch.manual_seed(global_seed)
        tiny_pipe.cache.clear()
        prepared = tiny_pipe.prepare(
            scene(96, 128), SOURCE, TARGET, scene_mask(96, 128), config=config
        )
        inversion = tiny_pipe.invert(prepared)
        assert not inversion.cached
        events = list(tiny_pipe.edit(prepared, inversion))
        assert isinstance(events[-1], EditResult)
        results.append((inversion, events))
        torch.rand(1000)
    (inv_a, events_a), (inv_b, events_b) = results
    assert torch.equal(inv_a.trajectory, inv_b.trajectory) and torch.equal(
        inv_a.uncond, inv_b.uncond
    )
    a, b = events_a[-1], events_b[-1]
    assert a.config == b.config == config
    assert torch.equal(a.latents, b.latents) and torch.equal(a.source_latents, b.source_latents)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.composited.tobytes() == b.composited.tobytes()
    assert [e.loss for e in events_a[:-1]] == [e.loss for e in events_b[:-1]]
    assert len(events_a) > 3  # guidance iterations and denoising steps ran
