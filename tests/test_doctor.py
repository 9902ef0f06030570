"""``magedit doctor``: the built-in checks pass on the tiny models (what holds for any weights),
and each check fails, with its advice, when what it guards is broken."""

import types

import numpy as np
import pytest
import torch

from magedit import cli, doctor, images
from magedit.controls import say
from magedit.pipeline import EditEvent


@pytest.fixture(scope="module")
def tiny_report(tiny_pipe):
    from magedit.segment import Segmenter

    return doctor.run(tiny_pipe, Segmenter.tiny(), tiny=True)


def test_tiny_runs_the_checks_that_hold_for_any_weights(tiny_report):
    marks = {check.name: check.passed for check in tiny_report.checks}
    assert marks == {
        "no NaN or inf": True,
        "null-text reconstruction": None,  # random weights reconstruct nothing
        "only the region changes": True,
        "MAG raises the in-mask attention": True,
        "a click finds the object": None,
    }
    assert tiny_report.ok
    figures = {check.name: check.figure for check in tiny_report.checks}
    assert figures["only the region changes"].startswith("0 pixels changed outside the mask")
    gain = figures["MAG raises the in-mask attention"]
    assert "over 3 iterations" in gain and "(+" in gain
    facts = dict(tiny_report.facts)
    assert facts["torch"] == torch.__version__.split("+")[0] and facts["dtype"] == "float32"
    assert set(tiny_report.timings) == {"inversion", "editing", "click"}
    assert tiny_report.lines()[-1] == "all checks passed"


def test_the_command_prints_the_report_and_exits_0(capsys, monkeypatch, tiny_report):
    asked = {}

    def run(pipe, segmenter, **kwargs):
        asked.update(kwargs, pipe=pipe, segmenter=segmenter)
        return tiny_report

    monkeypatch.setattr(doctor, "run", run)
    assert cli.main(["doctor", "--tiny"]) == 0
    assert capsys.readouterr().out.splitlines() == tiny_report.lines()
    assert asked["tiny"] is True
    assert asked["sources"] == {"models": "random weights built from configs (magedit.tiny)"}
    assert asked["pipe"].model_id == "tiny-0" and asked["segmenter"].model_id == "tiny-sam-0"


def test_a_failed_check_exits_1_with_what_it_means(capsys, monkeypatch, tiny_pipe):
    # A compositing bug: one pixel far outside the mask is changed.
    composite = images.composite

    def leaky(original, edited, mask, **kwargs):
        out = composite(original, edited, mask, **kwargs).copy()
        out[0, 0] = 255 - out[0, 0]
        return out

    monkeypatch.setattr(images, "composite", leaky)
    monkeypatch.setattr(cli, "load_pipeline", lambda *args: tiny_pipe)
    assert cli.main(["doctor", "--tiny"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == "1 check(s) failed: only the region changes"
    assert out[-1].startswith("  only the region changes: the compositing is broken")
    assert any(
        line.startswith("FAIL  only the region changes: 1 pixels changed outside") for line in out
    )


def events(ratios):
    return [EditEvent("guidance", 1, 20, i + 1, len(ratios), 1.0, r) for i, r in enumerate(ratios)]


def test_the_ratio_check_fails_when_guidance_lowers_it():
    assert doctor._ratio_rises(events([0.20, 0.22, 0.25])).passed is True
    falling = doctor._ratio_rises(events([0.20, 0.19, 0.18]))
    assert falling.passed is False and "(-10.0%)" in falling.figure
    flat = doctor._ratio_rises(events([0.20, 0.2001]))  # +0.05%: below the 1% floor
    assert flat.passed is False
    assert doctor._ratio_rises(events([0.2])).passed is None  # one iteration: nothing to compare


def result_with(latents):
    return types.SimpleNamespace(latents=latents, source_latents=torch.zeros(1, 4, 8, 8))


def test_nan_anywhere_fails():
    clean = doctor._finite(result_with(torch.zeros(1, 4, 8, 8)), events([0.1, 0.2]))
    assert clean.passed is True and "2 losses" not in clean.figure
    broken = torch.zeros(1, 4, 8, 8)
    broken[0, 0, 0, 0] = torch.nan
    check = doctor._finite(result_with(broken), events([0.1, 0.2]))
    assert (
        check.passed is False
        and "edit latent" in check.figure
        and "--dtype" in say(check.advice, "cli")
    )
    check = doctor._finite(result_with(torch.zeros(1, 4, 8, 8)), events([0.1, float("inf")]))
    assert check.passed is False and "losses or in-mask ratios" in check.figure


def test_the_reconstruction_check_reads_psnr_against_its_threshold():
    processed = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)

    def pipe_decoding(image):
        tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        return types.SimpleNamespace(decode_latents=lambda latents: tensor)

    result = result_with(torch.zeros(1, 4, 8, 8))
    exact = doctor._reconstruction(pipe_decoding(processed), processed, result, tiny=False)
    assert exact.passed is True and exact.figure.startswith("PSNR inf dB")
    noisy = np.clip(processed.astype(int) + 20, 0, 255).astype(np.uint8)  # about 22 dB
    check = doctor._reconstruction(pipe_decoding(noisy), processed, result, tiny=False)
    assert check.passed is False and "SD v1.x" in check.advice
    assert 20 < float(check.figure.split()[1]) < doctor.MIN_RECONSTRUCTION_PSNR


class FakeSegmenter:
    """Answers a click with the example's own mask, shifted by ``dx`` pixels."""

    def __init__(self, dx):
        self.dx = dx

    def predict(self, photo, points, labels):
        entry = doctor.example(doctor.CLICK_EXAMPLE)
        mask = images.load_mask(doctor.ASSETS / entry["mask"], size=photo.shape[:2])
        ((x, y),) = points
        assert mask[y, x]  # the click is on the object
        return [types.SimpleNamespace(mask=np.roll(mask, self.dx, axis=1))]


def test_the_click_check_needs_the_mask_to_overlap():
    assert doctor._click(FakeSegmenter(0), tiny=False, timings={}).passed is True
    missed = doctor._click(FakeSegmenter(250), tiny=False, timings={})
    assert missed.passed is False and missed.figure.startswith("IoU 0.")
    assert "--sam-model" in say(missed.advice, "cli")
    assert "check that sam_model matches" in say(missed.advice)  # the library's word
    assert doctor._click(None, tiny=False, timings={}).passed is None


def test_app_doctor_refuses_to_start_when_a_check_fails(monkeypatch, capsys, tiny_pipe):
    import app
    import magedit.loading
    import magedit.web

    failed = doctor.Report(checks=[doctor.Check("only the region changes", False, "3 pixels", "x")])
    monkeypatch.setattr(magedit.loading, "load_pipeline", lambda *args: tiny_pipe)
    monkeypatch.setattr(magedit.loading, "load_segmenter", lambda *args: None)
    monkeypatch.setattr(doctor, "run", lambda *args, **kwargs: failed)
    monkeypatch.setattr(magedit.web, "build_demo", lambda *a, **k: pytest.fail("page built"))
    with pytest.raises(SystemExit) as done:
        app.main(["--tiny", "--doctor", "--port", "0"])
    assert done.value.code == 1
    err = capsys.readouterr().err
    assert "app.py: doctor: FAIL  only the region changes: 3 pixels" in err


def test_an_edit_that_stops_on_nan_is_a_failed_check(tiny_pipe, monkeypatch):
    from magedit.segment import Segmenter

    def nan(*args, **kwargs):
        raise FloatingPointError("the edited latent became NaN or infinite at step 3 of 20")

    monkeypatch.setattr(tiny_pipe, "edit", nan)
    report = doctor.run(tiny_pipe, Segmenter.tiny(), tiny=True)
    assert not report.ok
    (failed,) = [c for c in report.checks if c.passed is False]
    assert failed.name == "the built-in edit runs"
    assert failed.figure == "it stopped: the edited latent became NaN or infinite at step 3 of 20"
    assert "--dtype float32" in say(failed.advice, "cli")
    assert "--dtype" in "\n".join(report.lines("cli")) and "--" not in "\n".join(report.lines())
    assert report.checks[-1].name == "a click finds the object"  # the click still ran
