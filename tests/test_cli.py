"""`magedit edit` end to end on tiny random-weight components (CPU, offline), in-process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import scene, scene_mask
from PIL import Image

from magedit import EditConfig, cli, images
from magedit.config import PRESETS

REPO = Path(__file__).resolve().parents[1]
SOURCE = "a photo of a red sofa"
TARGET = "a photo of a green sofa"
H, W = 240, 320  # processed at 192 x 256 (--resolution 256), so --raw differs in size
FAST = ["--tiny", "--resolution", "256", "--steps", "6", "--iterations", "1"]
FAST += ["--inversion", "direct"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The tiny model's ops are too small to gain from threads, and on a busy 2-core runner two
    # threads make an edit ten times slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    Image.fromarray(scene(H, W)).save(folder / "photo.png")
    Image.fromarray(scene_mask(H, W).astype(np.uint8) * 255).save(folder / "mask.png")
    Image.new("L", (W, H), 0).save(folder / "empty.png")
    (folder / "text.png").write_text("not an image")
    return folder


def edit_args(files, out, *extra, image="photo.png", mask="mask.png", target=TARGET):
    return [
        "edit",
        "--image",
        str(files / image),
        "--mask",
        str(files / mask),
        "--source",
        SOURCE,
        "--target",
        target,
        "--out",
        str(out),
        *FAST,
        *extra,
    ]


def test_help_is_fast_and_lists_edit():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "magedit", "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "edit" in done.stdout
    # Importing the CLI pulls in neither torch nor the pipeline.
    probe = (
        "import sys, magedit.cli; print(sorted({'torch', 'magedit.pipeline'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "magedit 0.1.0"


def test_edit_writes_the_composite_the_raw_edit_and_the_log(files, tmp_path, capsys):
    out = tmp_path / "new" / "folder" / "out.png"  # the folder does not exist yet
    raw, log = tmp_path / "raw.png", tmp_path / "run.json"
    code = cli.main(edit_args(files, out, "--raw", str(raw), "--log", str(log)))
    captured = capsys.readouterr()
    assert code == 0, captured.err

    photo = scene(H, W)
    result = np.asarray(Image.open(out))
    assert result.shape == photo.shape
    band = images.dilate(scene_mask(H, W), max(2, round(0.01 * max(H, W))))
    assert np.array_equal(result[~band], photo[~band])
    assert np.asarray(Image.open(raw)).shape == (192, 256, 3)
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.png"]  # no temp file left

    record = json.loads(log.read_text())
    config = EditConfig.from_dict(record["config"])
    assert config.max_iter == 1 and config.steps == 6 and config.resolution == 256
    assert config.inversion == "direct" and record["seed"] == config.seed == 0
    assert record["source_prompt"] == SOURCE and record["target_prompt"] == TARGET
    assert record["words"] == [["green"]] and record["tiny"] is True
    guided = [i for i in range(config.steps) if config.guide_at(i)]
    assert len(record["losses"]) == len(guided) * config.max_iter == 3
    assert all(np.isfinite(entry["loss"]) for entry in record["losses"])
    assert [d["step"] for d in record["denoise"]] == list(range(1, 7))
    assert all(0 <= d["in_mask_ratio"] <= 1 for d in record["denoise"])
    assert {"load", "inversion", "editing", "decode", "total"} <= set(record["timings"])
    assert record["image_size"] == [W, H] and record["processing_size"] == [256, 192]

    line = captured.out.strip()
    assert "\n" not in line and line.startswith(str(out)) and "total" in line
    assert "random, untrained weights" in captured.err  # the --tiny warning
    assert "edit" in captured.err  # the progress bar


def test_preset_first_then_the_flags_given(files, tmp_path, capsys):
    log = tmp_path / "run.json"
    args = ["--preset", "object", "--tau1", "5", "--log", str(log), "--quiet"]
    assert cli.main(edit_args(files, tmp_path / "out.png", *args)) == 0
    assert capsys.readouterr().err.count("\n") == 1  # only the --tiny warning: no bars
    record = json.loads(log.read_text())
    assert record["preset"] == "object"
    expected = (
        PRESETS["object"]
        .with_steps(6)
        .replace(tau1=5, max_iter=1, resolution=256, inversion="direct")
    )
    assert record["config"] == expected.to_dict()
    assert record["config"]["constraint"] == "spatial_ratio"


def parse(*args):
    return cli.build_config(cli.build_parser().parse_args(edit_args(Path("."), "o.png", *args)))


def test_build_config_precedence():
    base = EditConfig(resolution=256, inversion="direct", max_iter=1).with_steps(6)
    assert parse() == base
    # --steps rescales the preset's taus; explicit taus are taken as given, at the new count.
    assert parse("--preset", "object") == PRESETS["object"].with_steps(6).replace(
        resolution=256, inversion="direct", max_iter=1
    )
    assert parse("--preset", "object").tau1 == round(40 * 6 / 50)
    assert parse("--steps", "10", "--tau2", "2").tau2 == 2
    assert parse("--steps", "10").tau2 == 5
    assert parse("--scale", "4", "--seed", "7", "--reference").replace(
        scale=2.5, seed=0, reference=False
    ) == base.with_steps(10).with_steps(6)


BAD = {
    "missing image": (dict(image="nope.png"), [], "--image: no such file"),
    "unreadable image": (dict(image="text.png"), [], "is not an image"),
    "empty mask": (dict(mask="empty.png"), [], "the mask is empty"),
    "word not in target": ({}, ["--words", "blue"], "'blue' is not in the target prompt"),
    "word in both prompts": ({}, ["--words", "sofa"], "'sofa' is in both prompts"),
    "prompt too long": (dict(target="a green sofa " * 30), [], "CLIP reads at most 77"),
    "negative iterations": ({}, ["--iterations", "-1"], "--iterations must be between 0"),
    "tau past steps": ({}, ["--tau1", "9"], "--tau1 must be between 0 and steps (6)"),
    "resolution": ({}, ["--resolution", "100"], "--resolution must be a multiple of 64"),
    "not a number": ({}, ["--scale", "big"], "argument --scale: invalid float value"),
    "not finite": ({}, ["--guidance", "nan"], "--guidance must be a finite number, got nan"),
    "negative prompt alone": ({}, ["--negative-prompt", "a sofa"], "needs --negative-word"),
    "negative word absent": ({}, ["--negative-word", "chair"], "not in the negative prompt"),
    "raw over out": ({}, ["--raw", "{out}"], "--raw and --out name the same file"),
    "bad device": ({}, ["--device", "toaster"], "is not a torch device"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_error_line_and_exit_2(case, files, tmp_path, capsys):
    inputs, extra, message = BAD[case]
    out = tmp_path / "out.png"
    extra = [str(out) if arg == "{out}" else arg for arg in extra]
    assert cli.main(edit_args(files, out, *extra, "--quiet", **inputs)) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("magedit: error: ") and captured.err.count("\n") == 1
    assert message in captured.err and "Traceback" not in captured.err
    assert captured.out == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["out.gif", "out", "out.png.txt"])
def test_output_extension_is_checked_before_any_work(name, files, tmp_path, capsys):
    assert cli.main(edit_args(files, tmp_path / name, "--raw", "r.png")) == 2
    err = capsys.readouterr().err
    assert err.startswith("magedit: error: --out") and ".png, .jpg, .jpeg, .webp" in err
    assert list(tmp_path.iterdir()) == []


def test_missing_arguments_are_one_line(capsys):
    assert cli.main(["edit", "--image", "x.png"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "required: --mask, --source, --target, --out" in err
    assert cli.main([]) == 2
    assert capsys.readouterr().err.startswith("magedit: error: ")


@pytest.mark.parametrize("model", ["/no/such/folder", "nobody/not-a-cached-model"])
def test_unloadable_model_points_to_tiny_and_a_local_folder(model, files, tmp_path, capsys):
    args = edit_args(files, tmp_path / "out.png", "--model", model)
    args.remove("--tiny")
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--tiny" in err and "Traceback" not in err
    assert "--model /local/folder" in err or "--model: no folder" in err


def test_ctrl_c_exits_130_with_one_line(files, tmp_path, capsys, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "load_pipeline", interrupted)
    assert cli.main(edit_args(files, tmp_path / "out.png")) == 130
    assert capsys.readouterr().err == "magedit: interrupted\n"


def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.png"
    path.write_bytes(b"old")

    def half_then_interrupt(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cli.write_atomic(path, half_then_interrupt)
    assert path.read_bytes() == b"old" and list(tmp_path.iterdir()) == [path]
    cli.write_image(path, scene(64, 64))
    assert np.array_equal(np.asarray(Image.open(path)), scene(64, 64))
