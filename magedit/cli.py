"""The command line: ``magedit edit`` makes one localized edit of a photo; ``magedit segment``
makes a mask from clicks with Segment Anything.

    magedit edit --image room.jpg --mask sofa.png --source "a room with a red sofa" \\
        --target "a room with a green sofa" --out green.png
    magedit segment --image room.jpg --point 320,240 --negative 40,30 --out sofa.png
    magedit edit --image room.jpg --point 320,240 --source ... --target ... --out green.png
    magedit bench DATASET --methods magedit-tr,p2p --out results/   (``magedit.bench``)

Most of the file (over 700 lines) is the argument parser: every flag with its help text. Nothing
heavy is imported here: torch, diffusers and the pipeline load inside the command functions, so
``magedit --help`` answers at once. Bad input ends in one line ``magedit: error: <message>`` on
stderr and exit status 2; Ctrl-C in exit status 130.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magedit import __version__, controls
from magedit.config import (
    DEFAULT_SAM_MODEL,
    METHOD_LABELS,
    METHODS,
    SAM_MODEL_TYPES,
    SD14_MODEL,
    TINY_QUICK,
    EditConfig,
)
from magedit.controls import say
from magedit.errors import is_out_of_memory
from magedit.files import IMAGE_FORMATS, edit_phrase, result_name, write_bytes, write_image
from magedit.loading import DTYPES, load_pipeline, load_segmenter, model_name, quiet_libraries
from magedit.loading import report_clip as load_report_clip

if TYPE_CHECKING:
    import numpy as np

    from magedit.segment import MaskCandidate

PROG = "magedit"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad command-line input, reported as one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing the usage block and exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


# ----------------------------------------------------------------------------------------------
# Parser


def build_parser() -> argparse.ArgumentParser:
    """The ``magedit`` argument parser with its subcommands."""
    parser = _Parser(
        prog=PROG,
        description="MAG-Edit: localized text-guided editing of real photos (Stable Diffusion).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_edit(commands)
    _add_segment(commands)
    _add_bench(commands)
    _add_doctor(commands)
    return parser


# `magedit bench`'s settings, and its quick ones with --tiny (every method runs null-text
# inversion, as the paper's comparison does).
BENCH_SETTINGS = ("steps", "resolution", "iterations", "inversion")
BENCH_TINY = {"steps": 5, "resolution": 128}


def add_settings(group, settings: Sequence[controls.Control], tiny: dict | None = None) -> None:
    """One flag per setting of ``settings`` (``magedit.controls``): its help says what it
    accepts and its default (``tiny``: the defaults with --tiny, default config.TINY_QUICK).
    Every flag defaults to None: not given (the preset's value)."""
    tiny = TINY_QUICK if tiny is None else tiny
    for control in settings:
        default = control.default()
        shown = "auto" if default is None else default
        note = f"; --tiny: {tiny[control.field]}" if control.field in tiny else ""
        options: dict[str, Any] = {"dest": control.name, "default": None}
        if control.kind == "bool":
            options["action"] = argparse.BooleanOptionalAction
            shown = {True: "on", False: "off", None: "auto"}[default]
        elif control.kind == "choice":
            options["choices"] = control.values
            if all(isinstance(v, int) for v in control.values):
                options["type"] = int
        else:
            options["type"] = int if control.kind == "int" else float
            options["metavar"] = "N" if control.kind == "int" else "X"
        accepts = "" if control.kind in ("bool", "choice") else f"{control.text()}; "
        help_text = f"{control.help} [{accepts}default {shown}{note}]"
        group.add_argument(control.flag, *control.aliases, help=help_text, **options)


def _add_edit(commands) -> None:
    edit = commands.add_parser(
        "edit",
        help="edit the masked region of a photo so that it matches the target prompt",
        description=(
            "Edit the masked region of a photo so that it matches the target prompt; every pixel "
            "outside the (slightly dilated) mask keeps its value. Tuning flags that are not given "
            "keep the preset's values (without --preset: the paper's defaults). Beside the result "
            "it writes OUT.report.json (what the edit did outside and inside the mask), "
            "OUT.leakage.png (where the raw decode differs from the photo outside the mask) and "
            "OUT.recipe.json (everything to replay it: --recipe)."
        ),
    )
    edit.set_defaults(func=run_edit)

    io_group = edit.add_argument_group("input and output")
    io_group.add_argument(
        "--image", required=True, metavar="IMG", help="the photo to edit (PNG, JPEG, WebP...)"
    )
    io_group.add_argument(
        "--mask",
        metavar="IMG",
        help="the region to edit: an image, non-black pixels are inside (or give --point/--box)",
    )
    io_group.add_argument(
        "--source",
        metavar="TEXT",
        help="a prompt describing the photo (required, but with --recipe)",
    )
    io_group.add_argument(
        "--target",
        metavar="TEXT",
        help="the same prompt with the edit, e.g. 'a green sofa' (required, but with --recipe)",
    )
    io_group.add_argument(
        "--out",
        metavar="PATH",
        help="where to write the result (.png, .jpg, .jpeg or .webp; default: a new file in the "
        "current folder named after the edit, e.g. green-sofa-3f2a.png)",
    )
    io_group.add_argument(
        "--raw",
        metavar="PATH",
        help="also write the decoded edit at processing size, before compositing",
    )
    io_group.add_argument(
        "--log",
        metavar="PATH",
        help="write a JSON record of the run (config, prompts, losses, timings)",
    )
    io_group.add_argument("--quiet", action="store_true", help="no progress bars")
    io_group.add_argument(
        "--compare",
        action="store_true",
        help="also run the prompt-to-prompt baselines (with and without the latent blend) on the "
        "same inversion and mask: one image per method and a side-by-side sheet (OUT-compare.png)",
    )
    io_group.add_argument(
        "--recipe",
        metavar="FILE",
        help="replay a recipe (the OUT.recipe.json every edit writes) on --image, the recipe's "
        "photo: its prompts, words, mask and settings; the same model, device and dtype give the "
        "same PNG, byte for byte",
    )

    clicks = edit.add_argument_group(
        "region from clicks, instead of --mask (Segment Anything; pixels from the top-left corner)"
    )
    _add_clicks(clicks)

    words = edit.add_argument_group("words")
    words.add_argument(
        "--words",
        nargs="+",
        metavar="WORD",
        help="edit words of the target prompt whose attention should fill the mask "
        "(default: the words the target adds to the source)",
    )
    words.add_argument(
        "--negative-word",
        metavar="WORD",
        help="a word whose attention is pushed out of the mask (Eq. 7)",
    )
    words.add_argument(
        "--negative-prompt",
        metavar="TEXT",
        help="a prompt holding the negative word (default: the source prompt)",
    )

    tune = edit.add_argument_group(
        "settings (given ones override the preset's; --tiny: quick ones for those not given)"
    )
    add_settings(tune, controls.CLI_SETTINGS)

    model = edit.add_argument_group("model")
    source = model.add_mutually_exclusive_group()
    source.add_argument(
        "--model",
        metavar="ID_OR_FOLDER",
        help="Hub id or local diffusers folder of an SD v1.x model "
        f"(default: $MAGEDIT_MODEL or {SD14_MODEL})",
    )
    source.add_argument(
        "--tiny", action="store_true", help="random-weight offline components: the output is noise"
    )
    model.add_argument(
        "--device", metavar="DEVICE", help="torch device (default: cuda if available, else cpu)"
    )
    _add_sam_model(model)
    model.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="weights' dtype; auto is bfloat16 on recent CUDA GPUs (float16 on older ones), float32 elsewhere",
    )


def _add_segment(commands) -> None:
    segment = commands.add_parser(
        "segment",
        help="make a mask from clicks on a photo with Segment Anything",
        description=(
            "Make a mask from clicks (and/or a box) on a photo with Segment Anything: white inside, "
            "black outside, the photo's size. Prints SAM's candidate masks with their scores, "
            "best first; --candidate picks another."
        ),
    )
    segment.set_defaults(func=run_segment)

    io_group = segment.add_argument_group("input and output")
    io_group.add_argument("--image", required=True, metavar="IMG", help="the photo to segment")
    io_group.add_argument(
        "--out", required=True, metavar="PATH", help="where to write the mask (.png or .webp)"
    )
    io_group.add_argument(
        "--overlay",
        metavar="PATH",
        help="also write the photo with the mask tinted and outlined, to check it",
    )

    clicks = segment.add_argument_group("prompts (pixels from the image's top-left corner)")
    _add_clicks(clicks)

    refine = segment.add_argument_group("refine the mask (in this order)")
    refine.add_argument(
        "--remove-specks",
        type=int,
        default=0,
        metavar="AREA",
        help="drop the mask's parts smaller than AREA pixels",
    )
    refine.add_argument(
        "--fill-holes",
        type=int,
        default=0,
        metavar="AREA",
        help="fill the mask's holes of at most AREA pixels",
    )
    refine.add_argument(
        "--grow",
        type=int,
        default=0,
        metavar="PX",
        help="grow the mask by PX pixels (negative: shrink it)",
    )

    model = segment.add_argument_group("model")
    source = model.add_mutually_exclusive_group()
    _add_sam_model(model, source)
    source.add_argument(
        "--tiny", action="store_true", help="a random-weight offline SAM: the mask is noise"
    )
    model.add_argument(
        "--device", metavar="DEVICE", help="torch device (default: cuda if available, else cpu)"
    )


def _add_bench(commands) -> None:
    bench = commands.add_parser(
        "bench",
        help="run methods on a dataset and measure them as the paper's Table 1",
        description=(
            "Run each method on each item of a dataset (a folder with images, masks and "
            "prompts.jsonl, or PIE-Bench's folder with --format pie-bench) and measure the edits: "
            "local CLIP score, DINO-ViT distance, PSNR/SSIM outside the mask, attention in the "
            "mask (and PIE-Bench's own metrics for its format). Writes the edits, results.csv, "
            "table.md and a contact sheet; a second run resumes. Under `accelerate launch -m "
            "magedit bench ...` each process takes its shard of the items."
        ),
    )
    bench.set_defaults(func=run_bench)
    bench.add_argument("dataset", nargs="?", metavar="DATASET", help="the dataset folder")
    bench.add_argument(
        "--make-sample",
        metavar="DIR",
        help="write a sample dataset from the repository's assets/ examples into DIR and stop",
    )
    bench.add_argument(
        "--format",
        choices=("mag", "pie-bench"),
        default="mag",
        help="the dataset's format: ours (prompts.jsonl) or PIE-Bench's as distributed "
        "(mapping_file.json, annotation_images/); pie-bench also writes PIE-Bench's metrics and "
        "its published rows beside ours",
    )
    bench.add_argument(
        "--methods",
        default="magedit-tr,magedit-sr,p2p-blend,p2p",
        metavar="LIST",
        help="comma-separated, from magedit-tr, magedit-sr, p2p-blend (MAX_IT = 0), p2p (no "
        "latent blend); default: all four",
    )
    bench.add_argument(
        "--out", default="results", metavar="DIR", help="output folder (default: results)"
    )
    # The settings every method shares (the iterations: the magedit methods'), from the table.
    add_settings(bench, [controls.BY_NAME[name] for name in BENCH_SETTINGS], tiny=BENCH_TINY)
    bench.add_argument("--limit", type=int, metavar="N", help="only the first N items")
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    model = bench.add_argument_group("models")
    source = model.add_mutually_exclusive_group()
    source.add_argument(
        "--model",
        metavar="ID_OR_FOLDER",
        help=f"SD v1.x model (default: $MAGEDIT_MODEL or {SD14_MODEL})",
    )
    source.add_argument(
        "--tiny",
        action="store_true",
        help="random-weight offline SD, CLIP and DINO: the numbers are meaningless",
    )
    model.add_argument(
        "--clip-model",
        metavar="ID_OR_FOLDER",
        help="CLIP for the local CLIP score (default: openai/clip-vit-large-patch14)",
    )
    model.add_argument(
        "--dino-model",
        metavar="ID_OR_FOLDER",
        help="DINO ViT for the structure distance (default: facebook/dino-vitb8)",
    )
    model.add_argument(
        "--device",
        metavar="DEVICE",
        help="torch device (default: this process's GPU under accelerate, else cuda if "
        "available, else cpu)",
    )
    model.add_argument("--dtype", choices=DTYPES, default="auto", help="the SD model's dtype")


def _add_clicks(group) -> None:
    group.add_argument(
        "--point",
        action="append",
        type=_point,
        metavar="X,Y",
        help="a click on the object (repeat for more points)",
    )
    group.add_argument(
        "--negative",
        action="append",
        type=_point,
        metavar="X,Y",
        help="a click on what is not part of the object, e.g. the background (repeatable)",
    )
    group.add_argument(
        "--box", type=_box, metavar="X0,Y0,X1,Y1", help="a box around the object (corners)"
    )
    group.add_argument(
        "--candidate",
        type=int,
        default=1,
        metavar="N",
        help="which of Segment Anything's masks to use, best first (1 to 3; default 1)",
    )


def _add_doctor(commands) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="check that the models load and an edit works here (run once weights are in place)",
        description=(
            "Load Stable Diffusion and Segment Anything as the page does, print versions, device, "
            "dtype, free memory and where each model came from, then run one built-in edit and "
            "one click on the examples in assets/ and check them (reconstruction, the pixels "
            "outside the mask, the guidance, NaNs, the click). Exit status 0 when all hold, 1 "
            "with one line per failed check otherwise."
        ),
    )
    doctor.set_defaults(func=run_doctor)
    model = doctor.add_argument_group("model")
    source = model.add_mutually_exclusive_group()
    source.add_argument(
        "--model",
        metavar="ID_OR_FOLDER",
        help=f"Hub id or local diffusers folder of an SD v1.x model (default: $MAGEDIT_MODEL or "
        f"{SD14_MODEL})",
    )
    source.add_argument(
        "--tiny",
        action="store_true",
        help="random weights: only the checks that hold for any weights run",
    )
    model.add_argument("--device", metavar="DEVICE", help="torch device (default: cuda if any)")
    model.add_argument("--dtype", choices=DTYPES, default="auto", help="weights' dtype")
    _add_sam_model(model)


def _add_sam_model(group, checkpoint_group=None) -> None:
    group.add_argument(
        "--sam-model",
        choices=SAM_MODEL_TYPES,
        default=DEFAULT_SAM_MODEL,
        help=f"Segment Anything model (default: {DEFAULT_SAM_MODEL})",
    )
    (checkpoint_group or group).add_argument(
        "--sam-checkpoint",
        metavar="PATH",
        help="a local SAM checkpoint, Meta's .pth for --sam-model (default: "
        "$MAGEDIT_SAM_CHECKPOINT, else downloaded once from the Hugging Face Hub)",
    )


def _numbers(text: str, count: int, form: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"'{text}' is not {form}")
    return values


def _point(text: str) -> tuple[float, ...]:
    return _numbers(text, 2, "X,Y (two numbers in pixels, e.g. 120,80)")


def _box(text: str) -> tuple[float, ...]:
    return _numbers(text, 4, "X0,Y0,X1,Y1 (four numbers in pixels, e.g. 10,20,200,180)")


# ----------------------------------------------------------------------------------------------
# Entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``magedit`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = None
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as done:  # --help and --version
            return done.code if isinstance(done.code, int) else EXIT_OK
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except FloatingPointError as error:
        # The library's advice holds everywhere; the dtype is this face's own lever.
        dtype, device = getattr(args, "dtype", None), getattr(args, "device", None) or ""
        torch = sys.modules.get("torch")
        on_gpu = torch is not None and torch.cuda.is_available() and device != "cpu"
        half = dtype in ("float16", "bfloat16") or (dtype == "auto" and on_gpu)
        hint = "; or run in float32 (--dtype float32)" if half else ""
        print(f"{PROG}: error: {say(error, 'cli')}{hint}", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, ValueError, OSError) as error:
        return _fail(error)
    except RuntimeError as error:
        if is_out_of_memory(error):
            print(
                f"{PROG}: error: out of GPU memory; lower --resolution or use --dtype float16",
                file=sys.stderr,
            )
            return EXIT_FAILED
        raise


def _fail(error: BaseException) -> int:
    print(f"{PROG}: error: {say(error, 'cli')}", file=sys.stderr)
    return EXIT_USAGE


# ----------------------------------------------------------------------------------------------
# magedit doctor


def run_doctor(args: argparse.Namespace) -> int:
    """``magedit doctor``: load the models as the page does, run the built-in checks, print the
    report; exit 0 when every check that ran passed, else 1."""
    from magedit import doctor, loading

    if args.tiny and args.sam_checkpoint:
        raise UsageError(
            "--sam-checkpoint does not go with --tiny (random weights for every model)"
        )
    pipe = load_pipeline(args.model, args.device, args.dtype, args.tiny)
    segmenter = load_segmenter(
        args.sam_model, args.sam_checkpoint, args.device, args.dtype, args.tiny
    )
    sources = loading.sources(args.model, args.sam_model, args.sam_checkpoint, args.tiny)
    report = doctor.run(pipe, segmenter, tiny=args.tiny, sources=sources)
    print("\n".join(report.lines("cli")))
    return EXIT_OK if report.ok else EXIT_FAILED


# ----------------------------------------------------------------------------------------------
# magedit edit


def run_edit(args: argparse.Namespace) -> int:
    """``magedit edit``: check every input, load the model, invert, edit (and with --compare the
    baselines), write the result, its report, leakage map and recipe."""
    start = time.perf_counter()
    # 1. Check inputs that need no model, quickest first: paths, numbers, the text (with the
    #    model's tokenizer alone), the image and the mask (or the recipe that holds them).
    if not args.recipe and (not args.source or not args.target):
        raise UsageError("give --source and --target (the prompts), or --recipe FILE")
    image_path = _input_path(args.image, "--image")
    out, raw, log = _edit_outputs(args)
    recipe = _read_recipe(args) if args.recipe else None
    mask_path = None
    if recipe is None:
        mask_path = _check_edit_flags(args)
        config = build_config(args)
        check_text(args, config)
    from magedit import images

    image = images.load_image(image_path)
    segmented = None
    if recipe is not None:
        # The photo and the model named, before the model loads (and again once it has).
        recipe.check(image, model_name(args.model, args.tiny))
    elif mask_path is not None:
        mask = _fitted_mask(args, images.load_mask(mask_path), image)
    else:
        mask, segmented = _segmented_mask(args, image)

    # 2. Load the model (cached per process); check the prompts, words and mask with it, once,
    #    before the (possibly long) inversion.
    quick = tiny_quick(args) if recipe is None else {}
    if quick:
        chosen = ", ".join(f"{controls.word(name, 'cli')} {value}" for name, value in quick.items())
        print(
            f"{PROG}: --tiny runs quick settings: {chosen} (give those flags to change them)",
            file=sys.stderr,
        )
    load_start = time.perf_counter()
    pipe = load_pipeline(args.model, args.device, args.dtype, args.tiny)
    load_seconds = time.perf_counter() - load_start
    if recipe is not None:
        prepared = recipe.prepare(pipe, image)
    else:
        prepared = pipe.prepare(
            image,
            args.source,
            args.target,
            mask,
            args.words,
            negative_word=args.negative_word,
            negative_prompt=args.negative_prompt,
            config=config,
        )
    while out is None or (not args.out and out.exists()):
        out = Path(result_name(edit_phrase(prepared)))  # a new name, never another's file
    if args.tiny:
        print(
            f"{PROG}: warning: --tiny uses random, untrained weights; the output is noise",
            file=sys.stderr,
        )

    # 3. Invert (one bar), then edit (one bar over the denoising steps per method).
    from tqdm import tqdm

    bar = functools.partial(tqdm, file=sys.stderr, disable=args.quiet, dynamic_ncols=True)
    config = prepared.config
    with _LazyBar(bar, desc=f"inversion ({config.inversion})", unit="step") as inversion_bar:
        inversion = pipe.invert(prepared, progress=inversion_bar.update_to)
    methods = list(METHODS) if args.compare else ["magedit"]
    results, denoise = {}, []
    for method in methods:
        label = METHOD_LABELS[method] if args.compare else "edit"
        results[method], steps = _edit_steps(
            pipe, prepared.as_method(method), inversion, bar, label
        )
        if method == "magedit":
            denoise = steps
    result = results["magedit"]

    # 4. Write the outputs, each atomically: the result, its report, leakage map and recipe.
    from magedit import report
    from magedit.recipe import Recipe

    write_image(out, result.composited)
    if raw is not None:
        write_image(raw, result.image)
    clip, note = load_report_clip(args.tiny, str(pipe.device))
    reports = {m: report.measure(r, prepared.original, clip, note) for m, r in results.items()}
    written = [out]
    for suffix, content in (
        (".report.json", json.dumps({m: r.to_dict() for m, r in reports.items()}, indent=2)),
        (".recipe.json", Recipe.of(prepared, pipe.model_id).to_json()),
    ):
        written.append(out.with_suffix(suffix))
        write_bytes(written[-1], content.encode())
    written.append(out.with_suffix(".leakage.png"))
    write_image(written[-1], report.leakage_map(result, prepared.original))
    if args.compare:
        panels = [("photo", prepared.original)]
        for method, edited in results.items():
            if method != "magedit":
                written.append(out.with_name(f"{out.stem}-{method}{out.suffix}"))
                write_image(written[-1], edited.composited)
            seconds = edited.timings["editing"] + edited.timings["decode"]
            panels.append((f"{METHOD_LABELS[method]} · {seconds:.1f} s", edited.composited))
        written.append(out.with_name(f"{out.stem}-compare.png"))
        write_image(written[-1], report.side_by_side(panels))
    # This run's times: the result's say what the edit spent (a cached inversion: 0 s).
    timings = {"load": load_seconds, **result.timings, "total": time.perf_counter() - start}
    if log is not None:
        record = _log_record(args, pipe, result, denoise, timings, out, raw, segmented)
        record["report"] = {m: r.to_dict() for m, r in reports.items()}
        write_bytes(log, (json.dumps(record, indent=2) + "\n").encode())
    if not args.quiet:
        for method, said in reports.items():
            name = f"{METHOD_LABELS[method]}: " if args.compare else ""
            print(f"{PROG}: {name}{report_line(said)}", file=sys.stderr)
    cached = " (inversion cached)" if result.inversion_cached else ""
    spent = "  ".join(f"{name} {seconds:.1f}s" for name, seconds in timings.items())
    print(f"{out}  {spent}{cached}")
    return EXIT_OK


def report_line(said: Any) -> str:
    """An edit's report in one line (``report.EditReport``)."""
    clip = (
        f"CLIP {said.clip_local:.1f} local, {said.clip_whole:.1f} whole"
        if said.clip_local is not None
        else f"CLIP: not measured ({said.clip_note})"
    )
    return (
        f"outside the mask the result is the photo ({said.changed_outside} pixels changed); the "
        f"raw decode: PSNR {said.raw_psnr_outside:.1f} dB, {said.raw_changed_outside} pixels "
        f"changed. In the mask the {said.ratio_name} went {said.ratio_before:.4f} -> "
        f"{said.ratio_after:.4f}. {clip}"
    )


def _edit_outputs(args: argparse.Namespace) -> tuple[Path | None, Path | None, Path | None]:
    """--out (None: named after the edit), --raw and --log, checked before any work."""
    out = _output_path(args.out, "--out") if args.out else None
    raw = _output_path(args.raw, "--raw") if args.raw else None
    log = Path(args.log).expanduser() if args.log else None
    if log is not None and log.is_dir():
        raise UsageError(f"--log '{args.log}' is a folder; give a file name")
    named = [(flag, p.resolve()) for flag, p in (("--raw", raw), ("--log", log)) if p]
    for flag, path in named:
        if out is not None and path == out.resolve():
            raise UsageError(f"{flag} and --out name the same file '{args.out}'")
    return out, raw, log


# The edit's own inputs, which a recipe holds: refused beside --recipe.
RECIPE_HOLDS = ("mask", "point", "negative", "box", "source", "target", "words", "negative_word",
                "negative_prompt")  # fmt: skip


def _read_recipe(args: argparse.Namespace) -> Any:
    """The --recipe file, read strictly, with no flag beside it that it would override."""
    from magedit.recipe import MAX_BYTES, Recipe

    given = [f"--{name.replace('_', '-')}" for name in RECIPE_HOLDS if getattr(args, name)]
    given += [c.flag for c in controls.CLI_SETTINGS if getattr(args, c.name) is not None]
    if given:
        raise UsageError(
            f"--recipe holds the edit's prompts, words, mask and settings; leave out {', '.join(given)}"
        )
    path = _input_path(args.recipe, "--recipe")
    if path.stat().st_size > MAX_BYTES:
        raise UsageError(f"--recipe '{args.recipe}' is over {MAX_BYTES} bytes: not a recipe")
    return Recipe.from_json(path.read_bytes())


def _check_edit_flags(args: argparse.Namespace) -> Path | None:
    """The prompts and the region's flags of an edit without a recipe; the mask file's path."""
    if args.negative_prompt is not None and not args.negative_word:
        raise UsageError("--negative-prompt needs --negative-word (the word it holds)")
    clicked = bool(args.point or args.negative or args.box)
    if args.mask is not None and clicked:
        raise UsageError(
            "give the region either as --mask or as --point/--negative/--box clicks for Segment "
            "Anything, not both"
        )
    if args.mask is None and not clicked:
        raise UsageError(
            "give the region to edit: --mask IMG, or --point X,Y (and/or --box X0,Y0,X1,Y1) for "
            "Segment Anything to find it"
        )
    if args.tiny and args.sam_checkpoint:
        raise UsageError(
            "--sam-checkpoint does not go with --tiny (random weights for every model)"
        )
    return _input_path(args.mask, "--mask") if args.mask is not None else None


def _fitted_mask(args: argparse.Namespace, mask: Any, image: Any) -> Any:
    """The --mask at the photo's size: as it is, scaled when it has the photo's shape (and said
    so), refused with both sizes otherwise."""
    from magedit import images

    if mask.shape == image.shape[:2]:
        return mask
    (mh, mw), (ph, pw) = mask.shape, image.shape[:2]
    try:
        mask = images.load_mask(mask, size=(ph, pw))  # the photo's shape, or refused
    except ValueError as error:
        raise UsageError(f"--mask: {error}") from None
    if not args.quiet:
        print(
            f"{PROG}: the mask ({mw}x{mh}) has the photo's shape: scaled to {pw}x{ph}",
            file=sys.stderr,
        )
    return mask


def _segmented_mask(args: argparse.Namespace, image: Any) -> tuple[Any, dict[str, Any]]:
    """The mask Segment Anything makes of the clicks, and what to log of it."""
    points, labels = _check_clicks(args, image.shape[:2])
    quiet_libraries()
    candidates = segment_image(args, image, points, labels, args.dtype)
    chosen = candidates[args.candidate - 1]
    if not args.quiet:
        print(
            f"{PROG}: Segment Anything mask {args.candidate} of {len(candidates)}: score "
            f"{chosen.score:.3f}, covers {chosen.coverage:.1%} of the image",
            file=sys.stderr,
        )
    return chosen.mask, {
        "points": args.point,
        "negative": args.negative,
        "box": args.box,
        "sam_model": "tiny" if args.tiny else args.sam_model,
        "candidate": args.candidate,
        "score": chosen.score,
        "coverage": chosen.coverage,
    }


def _edit_steps(pipe, prepared, inversion, bar, label: str) -> tuple[Any, list[dict[str, float]]]:
    """Run one edit with a progress bar over its steps: (the EditResult, each step's numbers)."""
    from magedit.pipeline import EditResult

    result = None
    denoise: list[dict[str, float]] = []
    with bar(total=prepared.config.steps, desc=label, unit="step") as edit_bar:
        for item in pipe.edit(prepared, inversion):
            if isinstance(item, EditResult):
                result = item
            elif item.phase == "guidance":
                edit_bar.set_postfix_str(
                    f"MAG {item.iteration}/{item.max_iter} loss={item.loss:.4f} "
                    f"in-mask={item.in_mask_ratio:.3f}"
                )
            else:
                denoise.append(
                    {
                        "step": item.step,
                        "loss": item.loss,
                        "in_mask_ratio": item.in_mask_ratio,
                        "elapsed": item.elapsed,
                    }
                )
                edit_bar.set_postfix_str(
                    f"loss={item.loss:.4f} in-mask={item.in_mask_ratio:.3f}", refresh=False
                )
                edit_bar.update(1)
    if result is None:
        raise RuntimeError("MagEditPipeline.edit ended without an EditResult")
    return result, denoise


# ----------------------------------------------------------------------------------------------
# magedit bench


def run_bench(args: argparse.Namespace) -> int:
    """``magedit bench``: write a sample dataset, or check a dataset, load the models (once per
    process), run this process's shard, merge on the main process."""
    from magedit import bench, piebench
    from magedit.loading import load_metrics

    # 1. Check inputs that need no model: the dataset, the methods, the numbers.
    if args.make_sample:
        if args.dataset:
            raise UsageError("--make-sample DIR writes a dataset; give no DATASET with it")
        if args.format == "pie-bench":
            path = piebench.make_sample(args.make_sample)
            count = len(piebench.load(path.parent))
            run = f"{PROG} bench {path.parent} --format pie-bench --tiny"
        else:
            path = bench.make_sample(args.make_sample)
            count = len(bench.load_dataset(path.parent))
            run = f"{PROG} bench {path.parent} --tiny"
        print(f"{path}  {count} items; run: {run}")
        return EXIT_OK
    if not args.dataset:
        raise UsageError("give a DATASET folder, or --make-sample DIR to write an example one")
    if args.tiny and (args.clip_model or args.dino_model):
        raise UsageError("--clip-model/--dino-model do not go with --tiny (random weights)")
    methods = bench.parse_methods(args.methods)
    pie = args.format == "pie-bench"
    items = piebench.items(piebench.load(args.dataset)) if pie else bench.load_dataset(args.dataset)
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit is {args.limit}; give 1 or more items")
    given = {name: getattr(args, name) for name in BENCH_SETTINGS}
    checked = {
        name: controls.BY_NAME[name].check(value)
        for name, value in given.items()
        if value is not None
    }
    quick = BENCH_TINY if args.tiny else {}
    steps = checked.get("steps", quick.get("steps", controls.BY_NAME["steps"].default()))
    resolution = checked.get(
        "resolution", quick.get("resolution", controls.BY_NAME["resolution"].default())
    )
    inversion = checked.get("inversion", controls.BY_NAME["inversion"].default())
    iterations = checked.get("iterations")
    bench.method_config("magedit-tr", items[0].type, steps, resolution, "ddim", iterations)
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out '{args.out}' is a file; give a folder")

    # 2. Models: this process's device under accelerate, loaded once.
    rank, world, state = bench.process_state(args.device)
    device = args.device or (str(state.device) if state is not None else None)
    quiet_libraries()
    pipe = load_pipeline(args.model, device, args.dtype, args.tiny)
    metrics = load_metrics(args.clip_model, args.dino_model, str(pipe.device), args.tiny)
    if pie:  # LPIPS' backbone is a download too: tried with real weights only
        metrics = piebench.PieMetrics(metrics, lpips=not args.tiny)
    if args.tiny and rank == 0:
        print(
            f"{PROG}: warning: --tiny uses random, untrained weights; the numbers are noise",
            file=sys.stderr,
        )

    # 3. Run the shard; the main process merges and writes the table and the contact sheet.
    summary = bench.run_bench(
        args.dataset,
        out,
        methods,
        pipe=pipe,
        metrics=metrics,
        steps=steps,
        resolution=resolution,
        inversion=inversion,
        iterations=iterations,
        model=pipe.model_id,
        limit=args.limit,
        state=state,
        quiet=args.quiet,
        format=args.format,
    )
    for path in summary.outputs:
        print(path)
    return EXIT_OK


# ----------------------------------------------------------------------------------------------
# magedit segment


def run_segment(args: argparse.Namespace) -> int:
    """``magedit segment``: clicks and/or a box -> SAM's masks -> the chosen one, refined, as PNG."""
    from magedit import images

    # 1. Check inputs that need no model: paths, numbers, the image, the clicks.
    out = _output_path(args.out, "--out")
    if IMAGE_FORMATS[out.suffix.lower()] == "JPEG":
        raise UsageError(
            f"--out '{args.out}': write the mask as .png or .webp (JPEG's artefacts would mark "
            "pixels outside it)"
        )
    overlay = _output_path(args.overlay, "--overlay") if args.overlay else None
    if overlay is not None and overlay.resolve() == out.resolve():
        raise UsageError(f"--overlay and --out name the same file '{args.out}'")
    for flag, value in (("--remove-specks", args.remove_specks), ("--fill-holes", args.fill_holes)):
        if value < 0:
            raise UsageError(f"{flag} is {value}; give an area of 0 or more pixels")
    image = images.load_image(_input_path(args.image, "--image"))
    points, labels = _check_clicks(args, image.shape[:2])

    # 2. Segment (the model is cached per process), pick the candidate.
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()
    candidates = segment_image(args, image, points, labels, "auto")
    mask = candidates[args.candidate - 1].mask

    # 3. Refine: specks, then holes, then grow or shrink; the result must still be a region.
    if args.remove_specks:
        mask = images.remove_specks(mask, args.remove_specks)
    if args.fill_holes:
        mask = images.fill_holes(mask, args.fill_holes)
    if args.grow:
        mask = images.dilate(mask, args.grow)
    coverage = images.check_mask_coverage(mask)

    # 4. Write the mask (white on black, the image's size) and the overlay, each atomically.
    write_image(out, mask.astype("uint8") * 255)
    if overlay is not None:
        write_image(overlay, images.mask_overlay(image, mask))
    if args.tiny:
        print(
            f"{PROG}: warning: --tiny uses a random, untrained SAM; the mask is noise",
            file=sys.stderr,
        )
    for number, candidate in enumerate(candidates, 1):
        chosen = "  <- written" if number == args.candidate else ""
        print(
            f"candidate {number}: score {candidate.score:.3f}, covers {candidate.coverage:.1%} "
            f"of the image{chosen}"
        )
    print(f"{out}  {mask.shape[1]}x{mask.shape[0]}, covers {coverage:.1%} of the image")
    return EXIT_OK


def _check_clicks(
    args: argparse.Namespace, size: tuple[int, int]
) -> tuple[list[tuple[float, ...]] | None, list[int] | None]:
    """The clicks as SAM's points and labels (1 on the object, 0 off it), checked against the
    image's (H, W) before any model is loaded."""
    from magedit.segment import check_prompts

    positive, negative = args.point or [], args.negative or []
    if not positive and args.box is None:
        raise UsageError(
            "give at least one --point X,Y on the object, or a --box X0,Y0,X1,Y1 around it "
            "(--negative points only say what is not part of it)"
        )
    if not 1 <= args.candidate <= 3:
        raise UsageError(f"--candidate is {args.candidate}; pick one of Segment Anything's 3 masks")
    points = positive + negative or None
    labels = [1] * len(positive) + [0] * len(negative) or None
    check_prompts(points, labels, args.box, size)
    return points, labels


def segment_image(
    args: argparse.Namespace,
    image: np.ndarray,
    points: list[tuple[float, ...]] | None,
    labels: list[int] | None,
    dtype: str,
) -> list[MaskCandidate]:
    """SAM's usable masks for the clicks, best first; ``--candidate`` must name one of them."""
    segmenter = load_segmenter(args.sam_model, args.sam_checkpoint, args.device, dtype, args.tiny)
    candidates = segmenter.predict(image, points=points, labels=labels, box=args.box)
    if args.candidate > len(candidates):
        raise UsageError(
            f"--candidate {args.candidate}: Segment Anything gave {len(candidates)} usable "
            f"mask(s) for these clicks; pick 1 to {len(candidates)}"
        )
    return candidates


# ----------------------------------------------------------------------------------------------
# Configuration


def check_text(args: argparse.Namespace, config: EditConfig) -> None:
    """The prompts, the edit words and the negative word, checked with the model's tokenizer
    alone (a second) before the model loads; skipped when the tokenizer is not on this machine
    yet (``prepare`` checks them once the model is there)."""
    from magedit import prompts
    from magedit.loading import load_tokenizer

    tokenizer = load_tokenizer(args.model, args.tiny)
    if tokenizer is None:
        return
    prompts.check_edit_text(
        tokenizer,
        args.source,
        args.target,
        [args.words],
        args.negative_word,
        args.negative_prompt,
        guided=config.max_iter > 0 and config.cross_inject_at(0),
    )


def build_config(args: argparse.Namespace) -> EditConfig:
    """The settings flags given, over the preset's (without --preset: the paper's defaults),
    rescaled to ``--steps``; with --tiny the quick settings for the flags not given
    (``controls.config_from_values``). Errors name the flag (``controls.say``)."""
    given = {c.name: getattr(args, c.name, None) for c in controls.CLI_SETTINGS}
    values = {name: value for name, value in given.items() if value is not None}
    return controls.config_from_values(values, tiny=getattr(args, "tiny", False))


def tiny_quick(args: argparse.Namespace) -> dict[str, Any]:
    """With ``--tiny``: the quick settings (``config.TINY_QUICK``) of the flags not given."""
    if not getattr(args, "tiny", False):
        return {}
    given = {
        controls.BY_NAME[c.name].field
        for c in controls.CLI_SETTINGS
        if getattr(args, c.name) is not None
    }
    return {field: value for field, value in TINY_QUICK.items() if field not in given}


def _input_path(name: str, flag: str) -> Path:
    path = Path(name).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{flag}: no such file '{name}'")
    return path


def _output_path(name: str, flag: str) -> Path:
    path = Path(name).expanduser()
    if path.suffix.lower() not in IMAGE_FORMATS:
        raise UsageError(
            f"{flag} '{name}' must end in {', '.join(IMAGE_FORMATS)} (the extension picks the "
            "format)"
        )
    if path.is_dir():
        raise UsageError(f"{flag} '{name}' is a folder; give a file name")
    return path


class _LazyBar:
    """A progress bar opened on the first ``update_to(done, total)`` call, when the total is
    known (a cached inversion never calls it, so no bar appears)."""

    def __init__(self, make: Callable[..., Any], **options: Any):
        self.make, self.options, self.bar = make, options, None

    def update_to(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = self.make(total=total, **self.options)
        self.bar.update(done - self.bar.n)

    def __enter__(self) -> _LazyBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------------------------
# Outputs


def _log_record(
    args, pipe, result, denoise, timings, out: Path, raw: Path | None, segmented: dict | None
) -> dict:
    return {
        "magedit": __version__,
        "command": "edit",
        "image": str(Path(args.image).resolve()),
        "mask": None if args.mask is None else str(Path(args.mask).resolve()),
        "segment": segmented,  # the clicks and SAM's mask when the region came from clicks
        "out": str(out.resolve()),
        "raw": None if raw is None else str(raw.resolve()),
        "model": pipe.model_id,
        "tiny": bool(args.tiny),
        "device": str(pipe.device),
        "dtype": str(pipe.dtype).removeprefix("torch."),
        "preset": args.preset,
        "config": result.config.to_dict(),
        "source_prompt": result.source_prompt,
        "target_prompt": result.target_prompt,
        "words": result.words,
        "negative_word": result.negative_word,
        "negative_prompt": args.negative_prompt,
        "image_size": list(result.composited.shape[1::-1]),  # [width, height]
        "processing_size": list(result.image.shape[1::-1]),
        "inversion_cached": result.inversion_cached,
        "timings": timings,
        "losses": result.losses,
        "denoise": denoise,
    }
