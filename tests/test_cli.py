"""`magedit edit` end to end on tiny random-weight components (CPU, offline), in-process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
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
    band = images.dilate(scene_mask(H, W), images.composite_band((H, W)))
    assert np.array_equal(result[~band], photo[~band])
    assert np.asarray(Image.open(raw)).shape == (192, 256, 3)
    written = sorted(p.name for p in out.parent.iterdir())  # no temp file left
    assert written == ["out.leakage.png", "out.png", "out.recipe.json", "out.report.json"]

    record = json.loads(log.read_text())
    config = EditConfig.from_dict(record["config"])
    assert config.max_iter == 1 and config.steps == 6 and config.resolution == 256
    assert config.inversion == "direct" and "seed" not in record
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
    assert parse("--scale", "4", "--reference").replace(
        scale=2.5, reference=False
    ) == base.with_steps(10).with_steps(6)
    assert parse().cuda_graphs is True
    assert parse("--no-cuda-graphs") == base.replace(cuda_graphs=False)


BAD = {
    "missing image": (dict(image="nope.png"), [], "--image: no such file"),
    "unreadable image": (dict(image="text.png"), [], "is not an image"),
    "empty mask": (dict(mask="empty.png"), [], "the mask is empty"),
    "word not in target": ({}, ["--words", "blue"], "'blue' is not in the target prompt"),
    "word in both prompts": ({}, ["--words", "sofa"], "'sofa' is in both prompts"),
    "prompt too long": (dict(target="a green sofa " * 30), [], "CLIP reads at most 77"),
    "negative iterations": (
        {},
        ["--iterations", "-1"],
        "--iterations is -1, out of range; give a whole number from 0 to 30",
    ),
    "too few steps": (
        {},
        ["--steps", "4"],
        "--steps is 4, out of range; give a whole number from 5",
    ),
    "tau past steps": ({}, ["--tau1", "9"], "--tau1 must be between 0 and steps (6)"),
    "resolution": (
        {},
        ["--resolution", "100"],
        "argument --resolution: invalid choice: 100 (choose from 128, 256, 384, 512)",
    ),
    "not a number": ({}, ["--scale", "big"], "argument --granularity/--scale: invalid float value"),
    "not finite": ({}, ["--guidance", "nan"], "--guidance is nan; give a number from 1 to 15"),
    "negative prompt alone": ({}, ["--negative-prompt", "a sofa"], "needs --negative-word"),
    "negative word absent": (
        {},
        ["--negative-word", "chair"],
        "negative word 'chair' is not in the source prompt",
    ),
    "negative word not in its prompt": (
        {},
        ["--negative-word", "red", "--negative-prompt", "a sofa"],
        "negative word 'red' is not in the negative prompt 'a sofa'",
    ),
    "word twice": ({}, ["--words", "green", "green"], "edit word 'green' is given twice"),
    "no seed any more": ({}, ["--seed", "3"], "unrecognized arguments: --seed 3"),
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
    # --mask is not required: the region may come from --point/--box clicks instead.
    assert err == "magedit: error: give --source and --target (the prompts), or --recipe FILE\n"
    assert cli.main([]) == 2
    assert capsys.readouterr().err.startswith("magedit: error: ")


@pytest.mark.parametrize("model", ["/no/such/folder", "nobody/not-a-cached-model"])
def test_unloadable_model_points_to_tiny_and_a_local_folder(model, files, tmp_path, capsys):
    args = edit_args(files, tmp_path / "out.png", "--model", model)
    args.remove("--tiny")
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--tiny" in err and "Traceback" not in err
    if model.startswith("/"):
        assert "--model: no folder '/no/such/folder'" in err
    else:  # offline (tests/conftest.py): said at once, with no inner cause quoted
        assert err == (
            "magedit: error: the model 'nobody/not-a-cached-model' is not in the Hugging Face "
            "cache and the Hub is switched off here (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is "
            "set): give the model as a local folder (--model FOLDER: a downloaded diffusers SD "
            "v1.x folder), or use the offline demo with random weights (--tiny)\n"
        )


def test_ctrl_c_exits_130_with_one_line(files, tmp_path, capsys, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "load_pipeline", interrupted)
    assert cli.main(edit_args(files, tmp_path / "out.png")) == 130
    assert capsys.readouterr().err == "magedit: interrupted\n"


def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    from magedit import files

    path = tmp_path / "out.png"
    path.write_bytes(b"old")

    def half_then_interrupt(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.write_atomic(path, half_then_interrupt)
    assert path.read_bytes() == b"old" and list(tmp_path.iterdir()) == [path]
    files.write_image(path, scene(64, 64))
    assert np.array_equal(np.asarray(Image.open(path)), scene(64, 64))


# ----------------------------------------------------------------------------------------------
# magedit segment, and clicks instead of --mask on edit (tiny SAM)

POINT = ["--point", "160,120"]  # the centre of the scene's dark rectangle (the "sofa")


def segment_args(files, out, *extra):
    return ["segment", "--tiny", "--image", str(files / "photo.png"), "--out", str(out), *extra]


def without_mask(args):
    at = args.index("--mask")
    return args[:at] + args[at + 2 :]


def tiny_candidates(points, labels, box=None):
    from magedit.segment import Segmenter

    return Segmenter.tiny().predict(scene(H, W), points=points, labels=labels, box=box)


def test_segment_writes_a_mask_of_the_image_size(files, tmp_path, capsys):
    out, overlay = tmp_path / "mask.png", tmp_path / "overlay.png"
    args = segment_args(files, out, *POINT, "--negative", "10,10", "--overlay", str(overlay))
    code = cli.main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err

    written = np.asarray(Image.open(out))
    assert written.shape == (H, W) and written.dtype == np.uint8
    assert set(np.unique(written).tolist()) == {0, 255}
    candidates = tiny_candidates([(160, 120), (10, 10)], [1, 0])
    np.testing.assert_array_equal(written == 255, candidates[0].mask)
    expected_overlay = images.mask_overlay(scene(H, W), candidates[0].mask)
    np.testing.assert_array_equal(np.asarray(Image.open(overlay)), expected_overlay)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.png", "overlay.png"]

    lines = captured.out.splitlines()
    assert len(lines) == len(candidates) + 1
    assert lines[0] == (
        f"candidate 1: score {candidates[0].score:.3f}, covers {candidates[0].coverage:.1%} "
        "of the image  <- written"
    )
    assert lines[-1].startswith(f"{out}  320x240, covers ")
    assert "random, untrained SAM" in captured.err


def test_segment_candidate_and_refinements(files, tmp_path, capsys):
    candidates = tiny_candidates([(160, 120)], [1])
    assert len(candidates) >= 2
    out = tmp_path / "mask.webp"
    args = ["--candidate", "2", "--remove-specks", "30", "--fill-holes", "30", "--grow", "3"]
    assert cli.main(segment_args(files, out, *POINT, *args)) == 0, capsys.readouterr().err
    expected = images.remove_specks(candidates[1].mask, 30)
    expected = images.dilate(images.fill_holes(expected, 30), 3)
    np.testing.assert_array_equal(np.asarray(Image.open(out).convert("L")) == 255, expected)
    assert "<- written" in capsys.readouterr().out.splitlines()[1]


def test_edit_takes_clicks_instead_of_a_mask(files, tmp_path, capsys):
    out, log = tmp_path / "out.png", tmp_path / "run.json"
    args = without_mask(edit_args(files, out, *POINT, "--box", "60,60,260,180", "--log", str(log)))
    code = cli.main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    best = tiny_candidates([(160, 120)], [1], box=(60, 60, 260, 180))[0]
    assert "Segment Anything mask 1 of " in captured.err
    assert f"score {best.score:.3f}, covers {best.coverage:.1%} of the image" in captured.err

    photo, result = scene(H, W), np.asarray(Image.open(out))
    band = images.dilate(best.mask, images.composite_band((H, W)))
    assert result.shape == photo.shape and np.array_equal(result[~band], photo[~band])
    record = json.loads(log.read_text())
    assert record["mask"] is None
    assert record["segment"] == {
        "points": [[160.0, 120.0]],
        "negative": None,
        "box": [60.0, 60.0, 260.0, 180.0],
        "sam_model": "tiny",
        "candidate": 1,
        "score": best.score,
        "coverage": best.coverage,
    }


BAD_CLICKS = {
    "mask and point": (edit_args, True, POINT, "either as --mask or as --point"),
    "neither": (edit_args, False, [], "give the region to edit: --mask IMG, or --point X,Y"),
    "outside": (edit_args, False, ["--point", "320,10"], "(320, 10) is outside the 320x240 image"),
    "not x,y": (edit_args, False, ["--point", "3;4"], "argument --point: '3;4' is not X,Y"),
    "negatives only": (edit_args, False, ["--negative", "5,5"], "at least one --point X,Y on"),
    "candidate": (edit_args, False, [*POINT, "--candidate", "4"], "--candidate is 4; pick one"),
    "tiny + checkpoint": (
        edit_args,
        False,
        [*POINT, "--sam-checkpoint", "s.pth"],
        "not go with --tiny",
    ),
    "box inverted": (segment_args, False, ["--box", "100,100,50,50"], "x0 < x1 and y0 < y1"),
    "box format": (segment_args, False, ["--box", "1,2,3"], "'1,2,3' is not X0,Y0,X1,Y1"),
    "jpeg mask": (segment_args, False, [*POINT, "--out", "{tmp}/m.jpg"], "as .png or .webp"),
    "specks": (segment_args, False, [*POINT, "--remove-specks", "-1"], "--remove-specks is -1"),
    "no point": (segment_args, False, [], "give at least one --point X,Y on the object"),
}


@pytest.mark.parametrize("case", list(BAD_CLICKS))
def test_bad_clicks_are_one_error_line_and_exit_2(case, files, tmp_path, capsys):
    make, keep_mask, extra, message = BAD_CLICKS[case]
    extra = [arg.replace("{tmp}", str(tmp_path)) for arg in extra]
    args = make(files, tmp_path / "out.png", "--quiet")
    if make is edit_args and not keep_mask:
        args = without_mask(args)
    if make is segment_args:
        args.remove("--quiet")
    assert cli.main(args + extra) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("magedit: error: ") and captured.err.count("\n") == 1
    assert message in captured.err and "Traceback" not in captured.err
    assert captured.out == "" and list(tmp_path.iterdir()) == []


def test_a_missing_sam_checkpoint_points_to_the_flag_and_tiny(files, tmp_path, capsys):
    args = segment_args(files, tmp_path / "m.png", *POINT, "--sam-checkpoint", "/no/sam.pth")
    args.remove("--tiny")
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no SAM checkpoint at '/no/sam.pth'" in err
    assert "--sam-checkpoint" in err and "--tiny" in err and list(tmp_path.iterdir()) == []


def test_segment_help_lists_the_prompts(capsys):
    assert cli.main(["segment", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--point X,Y", "--negative X,Y", "--box X0,Y0,X1,Y1", "--candidate N", "--tiny"):
        assert flag in text
    # The models offered are Segment Anything's, from the one list the library keeps.
    import inspect

    from magedit.config import DEFAULT_SAM_MODEL, SAM_MODEL_TYPES
    from magedit.segment import Segmenter

    assert all(name in text for name in SAM_MODEL_TYPES)
    args = cli.build_parser().parse_args(["segment", "--image", "p.png", "--out", "m.png"])
    assert args.sam_model == DEFAULT_SAM_MODEL == "vit_b"
    default = inspect.signature(Segmenter.from_pretrained).parameters["model_type"].default
    assert default == DEFAULT_SAM_MODEL
    with pytest.raises(cli.UsageError, match=r"choose from 'vit_b', 'vit_l', 'vit_h'"):
        cli.build_parser().parse_args(["segment", "--sam-model", "vit_x"])


def test_tiny_means_quick_unless_told_otherwise(files, tmp_path, capsys, monkeypatch):
    # --tiny without tuning flags runs the page's quick settings (config.TINY_QUICK), says so
    # in one line, and names the result after the edit in the current folder.
    monkeypatch.chdir(tmp_path)
    args = ["edit", "--tiny", "--image", str(files / "photo.png"), "--mask"]
    args += [str(files / "mask.png"), "--source", SOURCE, "--target", TARGET, "--quiet"]
    args += ["--log", str(tmp_path / "run.json")]
    assert cli.main(args) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (
        "magedit: --tiny runs quick settings: --steps 20, --iterations 3, --inversion direct, "
        "--resolution 256 (give those flags to change them)"
    )
    config = json.loads((tmp_path / "run.json").read_text())["config"]
    assert (config["steps"], config["max_iter"], config["inversion"], config["resolution"]) == (
        20, 3, "direct", 256,
    )  # fmt: skip
    # The paper's schedule, scaled to 20 steps (tau1 10/50 -> 4).
    assert (config["tau1"], config["tau2"], config["blend_steps"]) == (4, 10, 6)
    written = sorted(p.name for p in tmp_path.glob("*.png") if ".leakage" not in p.name)
    assert len(written) == 1 and written[0].startswith("green-sofa-"), written
    # A flag given wins, and only the others are chosen for the user.
    args += ["--steps", "5", "--inversion", "null_text", "--null-steps", "1"]
    assert cli.main(args) == 0
    assert capsys.readouterr().err.splitlines()[0] == (
        "magedit: --tiny runs quick settings: --iterations 3, --resolution 256 (give those flags "
        "to change them)"
    )
    config = json.loads((tmp_path / "run.json").read_text())["config"]
    assert (config["steps"], config["inversion"], config["max_iter"]) == (5, "null_text", 3)
    assert len(list(tmp_path.glob("green-sofa-????.png"))) == 2  # a new file, never the last one
    # Real weights keep the paper's defaults.
    args = cli.build_parser().parse_args(["edit", "--image", "p.png", "--mask", "m.png",
                                          "--source", "a", "--target", "b"])  # fmt: skip
    assert cli.build_config(args) == EditConfig()


def test_the_text_is_checked_before_the_model_loads(files, tmp_path, capsys, monkeypatch):
    """Newcomer item 8: a wrong edit word was reported after the model had loaded (7 s). It is
    checked with the tokenizer alone; the model is never loaded for a refused edit."""

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded for an edit whose words are wrong")

    monkeypatch.setattr(cli, "load_pipeline", no_model)
    args = edit_args(files, tmp_path / "out.png", "--words", "purple", "--quiet")
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "edit word 'purple' is not in the target prompt" in err
    assert list(tmp_path.iterdir()) == []


def test_a_missing_file_is_reported_before_anything_heavy_is_imported(tmp_path):
    """Newcomer item 8: a missing --image took 2 s to report; it is checked first, before
    numpy, torch or transformers are imported."""
    code = (
        "import sys\n"
        "from magedit import cli\n"
        "code = cli.main(['edit', '--image', 'missing.png', '--mask', 'm.png', '--source', "
        "'a red sofa', '--target', 'a green sofa', '--tiny'])\n"
        "heavy = [m for m in ('numpy', 'torch', 'transformers') if m in sys.modules]\n"
        "print(code, heavy)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert run.stdout.strip() == "2 []", run.stdout + run.stderr
    assert run.stderr == "magedit: error: --image: no such file 'missing.png'\n"


def test_a_mask_of_another_shape_is_refused_and_a_scaled_one_is_said(
    files, tmp_path, capsys, monkeypatch
):
    """Newcomer item 8: a 512x512 mask on a 451x300 photo was stretched silently."""
    square = tmp_path / "square.png"
    Image.fromarray(np.full((512, 512), 255, np.uint8)).save(square)
    photo = tmp_path / "photo.png"
    Image.fromarray(scene(300, 451)).save(photo)
    args = edit_args(files, tmp_path / "out.png", "--quiet")
    args[args.index("--image") + 1] = str(photo)
    args[args.index("--mask") + 1] = str(square)
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "magedit: error: --mask: the mask is 512x512 pixels and the photo 451x300"
    )
    assert not (tmp_path / "out.png").exists()
    # The same shape at twice the size: scaled to the photo, and said.
    double = tmp_path / "double.png"
    Image.fromarray(scene_mask(2 * H, 2 * W).astype(np.uint8) * 255).save(double)
    args = edit_args(files, tmp_path / "out.png")
    args[args.index("--mask") + 1] = str(double)
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert f"the mask ({2 * W}x{2 * H}) has the photo's shape: scaled to {W}x{H}" in err


def test_every_edit_writes_its_report_leakage_map_and_recipe(files, tmp_path, capsys):
    out = tmp_path / "out.png"
    assert cli.main(edit_args(files, out)) == 0
    err = capsys.readouterr().err
    said = json.loads((tmp_path / "out.report.json").read_text())["magedit"]
    assert said["psnr_outside"] == "inf" and said["changed_outside"] == 0
    assert said["raw_changed_outside"] > 0 and said["clip_local"] is None
    assert "random weights" in said["clip_note"]
    assert "outside the mask the result is the photo (0 pixels changed)" in err
    leak = np.asarray(Image.open(tmp_path / "out.leakage.png"))
    assert leak.shape == (H, W, 3)
    recipe = json.loads((tmp_path / "out.recipe.json").read_text())
    assert recipe["kind"] == "magedit-recipe" and recipe["source_prompt"] == SOURCE


def test_compare_writes_one_image_per_method_and_a_sheet(files, tmp_path, capsys):
    out = tmp_path / "out.png"
    assert cli.main(edit_args(files, out, "--compare", "--quiet")) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "out-compare.png", "out-p2p-blend.png", "out-p2p.png", "out.leakage.png", "out.png",
        "out.recipe.json", "out.report.json",
    ]  # fmt: skip
    reports = json.loads((tmp_path / "out.report.json").read_text())
    assert list(reports) == ["magedit", "p2p-blend", "p2p"]
    sheet = np.asarray(Image.open(tmp_path / "out-compare.png"))
    assert sheet.shape[1] > 4 * sheet.shape[0] * W / H * 0.8  # photo + three methods in a row
    magedit, p2p = (np.asarray(Image.open(tmp_path / n)) for n in ("out.png", "out-p2p-blend.png"))
    assert not np.array_equal(magedit, p2p)


def test_a_recipe_replays_the_edit_byte_for_byte(files, tmp_path, capsys):
    first = tmp_path / "first.png"
    assert cli.main(edit_args(files, first, "--quiet", "--words", "green")) == 0
    again = tmp_path / "again.png"
    args = ["edit", "--tiny", "--image", str(files / "photo.png"), "--recipe",
            str(tmp_path / "first.recipe.json"), "--out", str(again), "--quiet"]  # fmt: skip
    assert cli.main(args) == 0
    assert again.read_bytes() == first.read_bytes()
    capsys.readouterr()
    # Another photo: refused in words, naming what differs, before the model loads.
    other = tmp_path / "other.png"
    Image.fromarray(scene(H, W)[::-1].copy()).save(other)
    args[3] = str(other)
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "the photo is not the recipe's" in err and "give the recipe's photo" in err
    # The recipe holds the edit: flags that would override it are refused.
    args[3] = str(files / "photo.png")
    assert cli.main([*args, "--steps", "8", "--words", "sofa"]) == 2
    assert "leave out --words, --steps" in capsys.readouterr().err
    # A hostile file is refused in words.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "magedit-recipe", "extra": 1}))
    args[5] = str(bad)
    assert cli.main(args) == 2
    assert "magedit: error: the recipe's keys are wrong" in capsys.readouterr().err


def test_a_recipe_of_another_model_is_refused_before_the_model_loads(
    files, tmp_path, capsys, monkeypatch
):
    first = tmp_path / "first.png"
    assert cli.main(edit_args(files, first, "--quiet")) == 0

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded for a recipe of another model")

    monkeypatch.setattr(cli, "load_pipeline", no_model)
    args = ["edit", "--image", str(files / "photo.png"), "--recipe",
            str(tmp_path / "first.recipe.json"), "--model", str(tmp_path), "--quiet"]  # fmt: skip
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert f"the model is 'local model '{tmp_path.name}'', the recipe's is 'tiny-0'" in err
