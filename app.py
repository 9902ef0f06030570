"""MAG-Edit Studio, the web page: upload a photo, click the object, type the edit, watch it run.

    python app.py            # SD v1.4 and SAM vit_b ($MAGEDIT_MODEL / --model, --sam-checkpoint)
    python app.py --tiny     # offline demo on random weights: the results are noise

This file is the entry point only: arguments, loading, launch. The page is ``magedit.web``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from magedit.config import DEFAULT_SAM_MODEL, SAM_MODEL_TYPES, SD14_MODEL, default_model
from magedit.controls import say
from magedit.errors import Says
from magedit.loading import DTYPES
from magedit.web.limits import MAX_FILE_SIZE, TIME_LIMIT

# Results are written here under generated names; Gradio copies what a handler returns into its
# own cache and serves it from there, so this folder must lie under the working folder or the
# temp folder (check_output_dir), and is never served as a folder.
OUTPUT_DIR = Path(
    os.environ.get("MAGEDIT_OUTPUT_DIR") or Path(__file__).resolve().parent / "outputs"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="app.py", description="MAG-Edit Studio: the web page for localized image editing."
    )
    model = parser.add_mutually_exclusive_group()
    model.add_argument(
        "--model", default=default_model(), metavar="ID_OR_FOLDER",
        help=f"Hub id or local diffusers folder of an SD v1.x model (default: $MAGEDIT_MODEL or "
        f"{SD14_MODEL})",
    )  # fmt: skip
    model.add_argument(
        "--tiny", action="store_true", help="random-weight offline demo: the results are noise"
    )
    parser.add_argument(
        "--sam-model", choices=SAM_MODEL_TYPES, default=DEFAULT_SAM_MODEL,
        help=f"Segment Anything model for click-to-segment (default: {DEFAULT_SAM_MODEL})",
    )  # fmt: skip
    parser.add_argument(
        "--sam-checkpoint", metavar="PATH",
        help="a local SAM checkpoint, Meta's .pth for --sam-model (default: "
        "$MAGEDIT_SAM_CHECKPOINT, else downloaded once from the Hugging Face Hub)",
    )  # fmt: skip
    parser.add_argument(
        "--device", help="torch device of the one pipeline (default: see --devices)"
    )
    parser.add_argument(
        "--devices", metavar="LIST",
        help="one pipeline per device, comma-separated (cuda:0,cuda:1); edits run on as many at "
        "once, each on a free one (default: every visible GPU, else the CPU)",
    )  # fmt: skip
    parser.add_argument(
        "--dtype", choices=DTYPES, default="auto",
        help="the SD model's dtype; auto is bfloat16 on recent CUDA GPUs (float16 on older ones), "
        "float32 elsewhere (float32 if an edit overflows to NaN)",
    )  # fmt: skip
    parser.add_argument(
        "--host",  # Hugging Face Spaces sets GRADIO_SERVER_NAME=0.0.0.0; an explicit --host wins
        default=os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only)",
    )
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT") or 7860),
        help="port to listen on (default: 7860)",
    )  # fmt: skip
    parser.add_argument(
        "--share", action="store_true", help="also serve the page on a public gradio.live link"
    )
    parser.add_argument(
        "--time-limit", type=_seconds, default=TIME_LIMIT, metavar="SECONDS",
        help=f"wall-clock limit of one edit; a longer one is stopped (default: {TIME_LIMIT:g})",
    )  # fmt: skip
    parser.add_argument(
        "--behind-proxy", action="store_true", default=bool(os.environ.get("SPACE_ID")),
        help="trust X-Forwarded-For for the visitor's address (default: on a Hugging Face Space)",
    )  # fmt: skip
    parser.add_argument(
        "--doctor", action="store_true", default=bool(os.environ.get("MAGEDIT_DOCTOR")),
        help="before serving, run `magedit doctor`'s checks on the loaded models and refuse to "
        "start if one fails (default: $MAGEDIT_DOCTOR set)",
    )  # fmt: skip
    return parser


def _seconds(text: str) -> float:
    """argparse type of --time-limit: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def main(argv: Sequence[str] | None = None) -> None:
    """Load the models (a failure ends in one line naming the way out, exit status 2), then
    serve the page until Ctrl-C."""
    from magedit import loading

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.tiny and args.sam_checkpoint:
        parser.error("--sam-checkpoint does not go with --tiny (random weights for every model)")
    try:  # first: offline without the weights, this fails at once, before gradio is imported
        devices = pipeline_devices(args)
        pipe = loading.load_pipeline(args.model, devices[0], args.dtype, args.tiny)
        if devices[1:] == [ALL_GPUS]:
            devices = [str(pipe.device), *other_gpus(pipe.device)]
        more = [loading.load_pipeline(args.model, d, args.dtype, args.tiny) for d in devices[1:]]
    except (ValueError, OSError) as error:  # the message names the way out
        _fail(say(error, "cli"))
    if more:
        print(f"app.py: a pipeline on each of {', '.join(devices)}", file=sys.stderr)
    try:
        segmenter = loading.load_segmenter(
            args.sam_model, args.sam_checkpoint, segmenter_device(args), "auto", args.tiny
        )
    except (ValueError, OSError) as error:
        message = say(error, "cli")
        if not isinstance(error, Says):  # not ours: it names no way out
            message += "; pass --sam-checkpoint /path/to/the/checkpoint.pth, or --tiny"
        _fail(f"Segment Anything: {message}")
    if args.tiny:
        print("app.py: --tiny: random, untrained weights; the results are noise", file=sys.stderr)
    if args.doctor:
        check_models([pipe, *more], segmenter, args)
    from magedit.web import build_demo

    if pipe.device.type == "cpu":
        leave_a_core_for_the_server()
    try:
        check_output_dir(OUTPUT_DIR)
    except ValueError as error:
        _fail(str(error))
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    demo = build_demo(
        lambda: pipe,
        lambda: segmenter,
        tiny=args.tiny,
        output_dir=OUTPUT_DIR,
        time_limit=args.time_limit,
        trust_forwarded=args.behind_proxy,
        more_pipelines=[(lambda other=other: other) for other in more],
        load_clip=lambda: loading.report_clip(args.tiny, str(pipe.device)),
    )
    demo.launch(**launch_options(args))


ALL_GPUS = "all other GPUs"  # pipeline_devices' placeholder, resolved once torch is loaded


def pipeline_devices(args: argparse.Namespace) -> list[str | None]:
    """The devices that get a pipeline each: ``--devices``, else ``--device``, else the default
    device followed by ALL_GPUS (every further visible GPU, found once the first pipeline has
    loaded torch: offline, a missing model is reported before torch is imported). ValueError
    for a device named twice or both options given."""
    if args.devices and args.device:
        raise ValueError("give --device or --devices, not both")
    if args.devices:
        devices = [d.strip() for d in args.devices.split(",") if d.strip()]
        repeated = sorted({d for d in devices if devices.count(d) > 1})
        if not devices or repeated:
            raise ValueError(
                f"--devices {args.devices!r}: name each device once (one pipeline per device), "
                "e.g. cuda:0,cuda:1"
            )
        return devices
    if args.device or args.tiny or on_zero_gpu():  # ZeroGPU lends one GPU per call
        return [args.device]
    return [None, ALL_GPUS]


def other_gpus(first: Any) -> list[str]:
    """Every visible GPU but ``first`` (a torch device), as device names."""
    import torch

    if first.type != "cuda":
        return []
    index = first.index if first.index is not None else torch.cuda.current_device()
    return [f"cuda:{i}" for i in range(torch.cuda.device_count()) if i != index]


def segmenter_device(args: argparse.Namespace) -> str | None:
    """Segment Anything's device: ``--device``, except on a ZeroGPU Space, where it is the CPU.
    There a GPU exists only inside ``spaces.GPU`` calls, which may run in a worker process whose
    changes do not come back, so the clicks' embedding cache must live in the page's own process
    (an embedding costs a few seconds of CPU once per photo, on upload; a click then takes
    tens of milliseconds), and clicks spend none of the visitor's GPU quota."""
    return "cpu" if on_zero_gpu() else args.device


def on_zero_gpu() -> bool:
    """Whether the page runs on a ZeroGPU Space (``spaces`` sets SPACES_ZERO_GPU there)."""
    return os.environ.get("SPACES_ZERO_GPU", "").strip().lower() in ("1", "true", "yes")


def check_models(pipes: list[Any], segmenter: Any, args: argparse.Namespace) -> None:
    """``--doctor``: the checks of ``magedit doctor`` on each loaded pipeline (one per GPU),
    reported on stderr; a failed check ends the start with exit status 1 (a page that cannot
    edit serves no one)."""
    from magedit import doctor, loading

    sources = loading.sources(args.model, args.sam_model, args.sam_checkpoint, args.tiny)
    failed = False
    for pipe in pipes:
        report = doctor.run(pipe, segmenter, tiny=args.tiny, sources=sources)
        where = f" {pipe.device}" if len(pipes) > 1 else ""
        for line in report.lines("cli"):
            print(f"app.py: doctor{where}: {line}", file=sys.stderr)
        failed = failed or not report.ok
    if failed:
        raise SystemExit(1)


def _fail(message: str) -> None:
    print(f"app.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def leave_a_core_for_the_server() -> int:
    """When the models run on the CPU, give torch one core fewer than the machine has, so that
    the server's own thread answers clicks, cancels and page loads while an edit computes (on 2
    cores with torch on both, a cancel request went unanswered for over 5 s). Returns the count."""
    import torch

    threads = max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - 1))
    torch.set_num_threads(threads)
    return threads


def check_output_dir(folder: Path) -> None:
    """Gradio accepts the files a handler returns only from the working folder, the temp folder
    or launch's allowed_paths (which serve a folder to anyone: only assets/ is). ValueError
    naming the fix when ``folder`` is elsewhere."""
    folder = Path(folder).resolve()
    for root in (Path.cwd().resolve(), Path(tempfile.gettempdir()).resolve()):
        if folder.is_relative_to(root):
            return
    raise ValueError(
        f"the output folder {folder} is outside the working folder and the temp folder; set "
        "MAGEDIT_OUTPUT_DIR to a folder inside one of them, or start app.py from a folder above it"
    )


def launch_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of demo.launch for the parsed command line."""
    from starlette.middleware import Middleware

    from magedit.web.layout import ASSETS_DIR, CSS
    from magedit.web.middleware import Guard

    return {
        "server_name": args.host,
        "server_port": args.port,
        "share": args.share,
        # Expected failures are shown in words by the page; anything else shows a generic
        # error, never the exception's text or traceback.
        "show_error": False,
        # Only the examples are served as files; results reach the page through Gradio's cache.
        "allowed_paths": [str(ASSETS_DIR)],
        "max_file_size": MAX_FILE_SIZE,
        # /monitoring would tell anyone each endpoint's timings and success rate.
        "enable_monitoring": False,
        "css": CSS,
        # nosniff on every response, and a per-address budget for uploads.
        "app_kwargs": {"middleware": [Middleware(Guard, trust_forwarded=args.behind_proxy)]},
    }


if __name__ == "__main__":
    main()
