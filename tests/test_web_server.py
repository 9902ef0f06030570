"""The page's frame: its two safe components, the middleware in front of it, the entry point
app.py (arguments, loading, launch) and the page's layout and wiring, without a browser."""

import asyncio
import inspect
import io
import math
import types
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from gradio.components.image_editor import EditorData
from gradio.data_classes import FileData
from PIL import Image
from starlette.testclient import TestClient
from web_support import OBJECT, png_header, request, write_photo

import app
from magedit import controls
from magedit.config import EditConfig, config_from
from magedit.segment import Segmenter
from magedit.web import build_demo, events, job, limits, masks, middleware
from magedit.web.admission import Admission
from magedit.web.api import API_PARAMETERS
from magedit.web.components import BrushEditor, PhotoInput
from magedit.web.layout import ASSETS_DIR
from magedit.web.middleware import Guard, UploadBudget


# ------------------------------------------------------------------------------ components
def blob(id: str, content: bytes, kind: str = "layer", index: str | None = "0"):
    """What Gradio's AcceptBlobs gives ``accept_blobs``: the blob's description and its file."""
    return types.SimpleNamespace(
        data={"type": kind, "index": index, "id": id}, files=[(kind, content)]
    )


def png(width: int, height: int, mode: str = "RGBA") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), (255, 45, 85, 153)).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_brush_keeps_a_bounded_number_of_paintings():
    editor = BrushEditor(type="numpy", image_mode="RGBA")
    for number in range(200):
        editor.accept_blobs(blob(f"painting-{number}", b"x" * 1000))
    assert len(editor.blob_storage) == limits.MAX_BLOBS == 128
    assert list(editor.blob_storage) == [f"painting-{n}" for n in range(72, 200)]  # the newest


def test_the_brush_keeps_a_bounded_number_of_bytes():
    editor = BrushEditor(type="numpy", image_mode="RGBA")
    layer = bytes(3 * 2**20)  # one object: 200 uploads of it cost 3 MB here, 600 MB counted
    for number in range(200):
        editor.accept_blobs(blob(f"painting-{number}", layer))
    kept = len(editor.blob_storage)
    assert kept == limits.MAX_BLOB_STORE // len(layer) == 85
    assert kept * len(layer) <= limits.MAX_BLOB_STORE
    assert "painting-199" in editor.blob_storage and "painting-114" not in editor.blob_storage


@pytest.mark.parametrize(
    ("index", "size"),
    [
        (str(limits.MAX_LAYERS), 100),
        ("1000000", 100),
        ("-1", 100),
        ("abc", 100),
        ("0", limits.MAX_BLOB_BYTES + 1),
    ],
)
def test_the_brush_ignores_a_layer_beyond_the_bounds(index, size):
    editor = BrushEditor(type="numpy", image_mode="RGBA")
    editor.accept_blobs(blob("painting", bytes(size), index=index))
    assert editor.blob_storage == {}
    editor.accept_blobs(blob("painting", bytes(100), index=str(limits.MAX_LAYERS - 1)))
    assert len(editor.blob_storage["painting"].layers) == limits.MAX_LAYERS


def test_the_brush_refuses_a_huge_layer_from_its_header_before_decoding(monkeypatch):
    editor = BrushEditor(type="numpy", image_mode="RGBA")
    bomb = png_header(10_000, 10_000)  # 100 megapixels in a few hundred bytes
    assert len(bomb) < 12_000
    editor.accept_blobs(blob("bomb", bomb))
    decoded = []
    real = editor.convert_and_format_image
    monkeypatch.setattr(
        editor, "convert_and_format_image", lambda *a, **k: decoded.append(1) or real(*a, **k)
    )
    with pytest.raises(gr.Error) as error:
        editor.preprocess(EditorData(id="bomb", background=None, layers=[], composite=None))
    assert error.value.message == (
        "a brush layer of 10000x10000 pixels; paint on the photo with the brush (clear the "
        "painting and try again)"
    )
    assert error.value.title == "Cannot read the brush" and not decoded
    # A layer of the displayed photo's size is read as usual.
    editor.accept_blobs(blob("fine", png(64, 48)))
    value = editor.preprocess(EditorData(id="fine", background=None, layers=[], composite=None))
    assert len(value["layers"]) == 1 and value["layers"][0].shape == (48, 64, 4)
    assert "fine" not in editor.blob_storage  # read once, then forgotten


def test_the_photo_input_hands_the_upload_over_undecoded(tmp_path, monkeypatch):
    page = tmp_path / "photo.png"
    page.write_bytes(b"<html><body>not a photo</body></html>")

    def no_decoding(*args, **kwargs):
        raise AssertionError("the upload was decoded before our reader saw it")

    monkeypatch.setattr(Image, "open", no_decoding)
    photo_input = PhotoInput(type="filepath", image_mode=None)
    assert photo_input.preprocess(FileData(path=str(page))) == str(page)
    assert photo_input.preprocess(None) is None
    assert page.read_bytes() == b"<html><body>not a photo</body></html>"


# ------------------------------------------------------------------------------ middleware
async def hello(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"a", b"b")]})
    await send({"type": "http.response.body", "body": b"hello"})


def test_every_response_says_nosniff():
    client = TestClient(Guard(hello))
    for method, where in [("GET", "/"), ("GET", "/file=x.png"), ("POST", "/upload")]:
        answer = client.request(method, where, content=b"12345")
        assert answer.status_code == 200 and answer.text == "hello"
        assert answer.headers["x-content-type-options"] == "nosniff"


def test_uploads_beyond_the_budget_are_refused_with_429():
    now = [0.0]
    guard = Guard(hello, budget=UploadBudget(limit=1000, window=60, clock=lambda: now[0]))
    client = TestClient(guard)
    assert client.post("/gradio_api/upload", content=bytes(600)).status_code == 200
    refused = client.post("/gradio_api/upload", content=bytes(600))
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/json"
    assert refused.headers["x-content-type-options"] == "nosniff"
    detail = refused.json()["detail"]
    assert detail.startswith("too many uploads from your network") and "wait a minute" in detail
    # The brush's layers count too; other requests are not uploads.
    assert client.post("/gradio_api/component_server/", content=bytes(600)).status_code == 429
    assert client.post("/gradio_api/queue/join", content=bytes(600)).status_code == 200
    now[0] = 61.0  # the window passed
    assert client.post("/gradio_api/upload", content=bytes(600)).status_code == 200


def test_an_upload_without_its_length_gets_411():
    client = TestClient(Guard(hello))
    answer = client.post("/upload", content=iter([b"12", b"34"]))  # chunked: no length
    assert answer.status_code == 411
    assert answer.json() == {"detail": "send the upload with a Content-Length"}


def test_the_upload_budget_is_per_address_and_frees_after_the_window():
    now = [100.0]
    budget = UploadBudget(limit=100, window=60, clock=lambda: now[0])
    assert budget.take("1.1.1.1", 60) and not budget.take("1.1.1.1", 50)
    assert budget.take("2.2.2.2", 100)  # another address has its own budget
    now[0] = 130.0
    assert budget.take("1.1.1.1", 40) and not budget.take("1.1.1.1", 1)
    now[0] = 161.0  # the first 60 bytes are out of the window, the 40 are not
    assert budget.take("1.1.1.1", 60) and not budget.take("1.1.1.1", 1)
    assert (middleware.UPLOAD_BYTES, middleware.UPLOAD_WINDOW) == (100 * 2**20, 60.0)


def test_the_guard_counts_the_forwarded_address_only_behind_a_proxy():
    def sent(guard, forwarded: str) -> int:
        messages = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            messages.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/upload",
            "headers": [(b"content-length", b"600"), (b"x-forwarded-for", forwarded.encode())],
            "client": ("9.9.9.9", 1234),
        }
        asyncio.run(guard(scope, receive, send))
        return messages[0]["status"]

    budget = UploadBudget(limit=1000, window=60, clock=lambda: 0.0)
    proxied = Guard(hello, budget=budget, trust_forwarded=True)
    assert [sent(proxied, f"1.1.1.{n}") for n in range(3)] == [200, 200, 200]
    direct = Guard(hello, budget=UploadBudget(limit=1000, window=60, clock=lambda: 0.0))
    assert [sent(direct, f"1.1.1.{n}") for n in range(3)] == [200, 429, 429]  # forged: ignored


# ------------------------------------------------------------------------------ app.py
def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("app.py: error: ")
    return err


def test_main_reports_a_model_that_cannot_load(capsys, tmp_path):
    with pytest.raises(SystemExit) as done:
        app.main(["--model", str(tmp_path / "missing"), "--port", "0"])
    assert done.value.code == 2
    err = one_error_line(capsys)
    assert f"--model: no folder '{tmp_path / 'missing'}'" in err and "--tiny" in err


def test_main_reports_a_hub_model_that_cannot_load(capsys, monkeypatch):
    import magedit.loading

    def offline(*args):
        raise ValueError(
            "cannot load the model 'nobody/none' (offline:\nnot in the cache); pass --model "
            "/local/folder, or --tiny to try the tool offline"
        )

    monkeypatch.setattr(magedit.loading, "load_pipeline", offline)
    with pytest.raises(SystemExit) as done:
        app.main(["--model", "nobody/none", "--port", "0"])
    assert done.value.code == 2
    err = one_error_line(capsys)
    assert "cannot load the model 'nobody/none' (offline: not in the cache)" in err


def test_main_reports_a_sam_checkpoint_that_cannot_load(capsys, tmp_path, monkeypatch, tiny_pipe):
    import magedit.loading

    monkeypatch.setattr(magedit.loading, "load_pipeline", lambda *args: tiny_pipe)
    with pytest.raises(SystemExit) as done:
        app.main(["--sam-checkpoint", str(tmp_path / "sam.pth"), "--port", "0"])
    assert done.value.code == 2
    err = one_error_line(capsys)
    assert err.startswith("app.py: error: Segment Anything: no SAM checkpoint at")
    assert "--sam-checkpoint" in err and "--tiny" in err

    def unreachable(*args):
        raise OSError("the Hub cannot be reached")

    monkeypatch.setattr(magedit.loading, "load_segmenter", unreachable)
    with pytest.raises(SystemExit):
        app.main(["--port", "0"])
    assert one_error_line(capsys) == (
        "app.py: error: Segment Anything: the Hub cannot be reached; pass --sam-checkpoint "
        "/path/to/the/checkpoint.pth, or --tiny"
    )


def test_tiny_does_not_go_with_a_sam_checkpoint(capsys, tmp_path):
    with pytest.raises(SystemExit) as done:
        app.main(["--tiny", "--sam-checkpoint", str(tmp_path / "sam.pth")])
    assert done.value.code == 2
    assert "--sam-checkpoint does not go with --tiny" in capsys.readouterr().err


def test_main_builds_the_page_on_the_loaded_models_and_launches_it(
    monkeypatch, tmp_path, tiny_pipe, capsys
):
    import magedit.loading
    import magedit.web

    segmenter = object()
    built, launched = {}, {}
    monkeypatch.setattr(magedit.loading, "load_pipeline", lambda *args: tiny_pipe)
    monkeypatch.setattr(magedit.loading, "load_segmenter", lambda *args: segmenter)
    monkeypatch.setattr(app, "OUTPUT_DIR", tmp_path / "outputs")
    monkeypatch.setattr(app, "leave_a_core_for_the_server", lambda: launched.update(core=1))

    def build(load_pipeline, load_segmenter, **kwargs):
        built.update(kwargs, pipe=load_pipeline(), segmenter=load_segmenter())
        return types.SimpleNamespace(launch=lambda **options: launched.update(options))

    monkeypatch.setattr(magedit.web, "build_demo", build)
    app.main(["--tiny", "--time-limit", "45", "--behind-proxy", "--port", "7999"])
    scorer, why = built.pop("load_clip")()
    assert scorer is None and "random weights" in why  # --tiny: no CLIP score, and why
    assert built == {
        "tiny": True,
        "output_dir": tmp_path / "outputs",
        "time_limit": 45.0,
        "trust_forwarded": True,
        "pipe": tiny_pipe,
        "segmenter": segmenter,
        "more_pipelines": [],
    }
    assert (tmp_path / "outputs").is_dir()
    assert launched["server_port"] == 7999 and launched["core"] == 1  # a CPU pipeline
    assert "--tiny: random, untrained weights" in capsys.readouterr().err


def test_launch_options_serve_only_the_assets_behind_the_guard():
    args = app.build_parser().parse_args(["--port", "7999", "--time-limit", "45"])
    options = app.launch_options(args)
    assert options["allowed_paths"] == [str(ASSETS_DIR)]
    assert options["show_error"] is False and options["enable_monitoring"] is False
    assert options["max_file_size"] == limits.MAX_FILE_SIZE
    assert options["server_name"] == "127.0.0.1" and options["server_port"] == 7999
    (guard,) = options["app_kwargs"]["middleware"]
    assert guard.cls is Guard and guard.kwargs == {"trust_forwarded": False}
    behind = app.launch_options(app.build_parser().parse_args(["--behind-proxy"]))
    assert behind["app_kwargs"]["middleware"][0].kwargs == {"trust_forwarded": True}
    assert args.time_limit == 45.0
    assert app.build_parser().parse_args([]).time_limit == limits.TIME_LIMIT
    for bad in ("0", "-3", "nan", "inf", "soon"):
        with pytest.raises(SystemExit):
            app.build_parser().parse_args(["--time-limit", bad])


def test_the_output_folder_must_be_one_gradio_serves_results_from(tmp_path):
    app.check_output_dir(tmp_path)  # the temp folder
    app.check_output_dir(Path.cwd() / "outputs")
    with pytest.raises(ValueError, match="MAGEDIT_OUTPUT_DIR"):
        app.check_output_dir(Path("/opt/magedit-results"))


def test_on_a_cpu_the_server_keeps_a_core_for_itself(monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(app.os, "cpu_count", lambda: 2)
        assert app.leave_a_core_for_the_server() == 1 and torch.get_num_threads() == 1
        torch.set_num_threads(4)
        monkeypatch.setattr(app.os, "cpu_count", lambda: 16)
        assert app.leave_a_core_for_the_server() == 4  # never more than torch had
        monkeypatch.setattr(app.os, "cpu_count", lambda: 1)
        assert app.leave_a_core_for_the_server() == 1
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------ layout
def never():
    raise AssertionError("a model was loaded while building the page")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    return build_demo(never, never, tiny=True, output_dir=tmp_path_factory.mktemp("out"))


def html_of(demo) -> str:
    return " ".join(str(b.value) for b in demo.blocks.values() if isinstance(b, gr.HTML))


def test_the_page_is_built_without_loading_a_model(page, tmp_path):
    assert "random, untrained weights" in html_of(page)
    sliders = {b.elem_id: b.value for b in page.blocks.values() if isinstance(b, gr.Slider)}
    assert sliders["magedit-steps"] == 20 and sliders["magedit-iterations"] == 3  # quick
    real = build_demo(never, never, tiny=False, output_dir=tmp_path)
    assert "random, untrained weights" not in html_of(real)
    radios = {b.elem_id: b.value for b in real.blocks.values() if isinstance(b, gr.Radio)}
    assert radios["magedit-inversion"] == "null_text" and radios["magedit-resolution"] == 512
    sliders = {b.elem_id: b.value for b in real.blocks.values() if isinstance(b, gr.Slider)}
    assert sliders["magedit-steps"] == 50 and sliders["magedit-iterations"] == 15  # the paper's
    with pytest.raises(ValueError, match="time_limit"):
        build_demo(never, tiny=True, output_dir=tmp_path, time_limit=0)


def test_the_api_takes_the_photo_prompts_and_settings_without_a_seed(page):
    api = page.get_api_info()["named_endpoints"]
    parameters = api["/edit"]["parameters"]
    assert [p["parameter_name"] for p in parameters] == API_PARAMETERS == [
        "image", "source", "target", "words", "negative_word", "preset", "iterations",
        "granularity", "steps", "guidance", "inversion", "resolution", "grow", "mask_file",
        "editor", "region2_mask_file", "region2_editor", "region2_words", "region2_weight",
    ]  # fmt: skip
    required = [p["parameter_name"] for p in parameters if not p["parameter_has_default"]]
    assert required == ["image", "source", "target"]
    assert [p["parameter_name"] for p in api["/segment"]["parameters"]] == [
        "image",
        "points",
        "labels",
    ]
    assert set(api) == {"/edit", "/segment"}  # the page's own events are private


def test_the_edits_share_one_gpu_queue_and_cancel_stops_the_pages_edit(page):
    fns = list(page.fns.values())
    api = next(f for f in fns if f.api_name == "edit")
    on_page = next(f for f in fns if getattr(f.fn, "__name__", "") == "edit_on_page")
    for edit in (api, on_page):
        # Queued (so Cancel and disconnects reach them) but not waiting in Gradio's queue: the
        # page's own line runs one edit at a time and tells the others their place.
        assert edit.concurrency_id == "gpu" and edit.concurrency_limit is None and edit.queue
        assert edit.validator is not None
    (cancel,) = [f for f in fns if f.cancels]
    assert cancel.cancels == [on_page._id]
    assert page._queue.max_size == limits.GRADIO_QUEUE_SIZE and page.api_open is False
    assert page.delete_cache == limits.DELETE_CACHE
    segment = next(f for f in fns if f.api_name == "segment")
    assert segment.concurrency_id == "segment"
    assert segment.concurrency_limit == limits.SEGMENT_CONCURRENCY
    clicks = [f for f in fns if getattr(f.fn, "__name__", "") == "on_click"]
    assert len(clicks) == 1 and clicks[0].queue is False  # a click is answered at once


def test_cancel_says_so_and_gives_edit_back_once_the_edit_has_ended(page):
    fns = list(page.fns.values())
    (cancel,) = [f for f in fns if f.cancels]
    (said,) = [f for f in fns if f.fn is not None and f.targets == cancel.targets]
    status, cancel_button, stopped = said.fn()
    # At once: "Cancelling", Cancel off, and the session marked stopped; Edit stays off (Gradio
    # would drop a press while the cancelled event is still ending).
    assert "Cancelling" in status and cancel_button["interactive"] is False and stopped is True
    assert [b.elem_id for b in said.outputs][:2] == ["magedit-status", "magedit-cancel"]
    # When the edit's event has ended: Edit back, Cancel off, "Cancelled" said last (after any
    # update the stopped job had sent), and the mark cleared; after a finished edit the status
    # line keeps its "Done".
    (after,) = [f for f in fns if getattr(f.fn, "__name__", "") == "after_edit"]
    status, edit_button, cancel_button, stopped = after.fn(True)
    assert "Cancelled. Press Edit to run it again." in status
    assert edit_button["interactive"] is True and cancel_button["interactive"] is False
    assert stopped is False
    status, edit_button, _, _ = after.fn(False)
    assert status == {"__type__": "update"} and edit_button["interactive"] is True


ELEM_IDS = {
    "magedit-canvas", "magedit-mask", "magedit-next", "magedit-undo", "magedit-clear",
    "magedit-grow", "magedit-brush", "magedit-mask-file", "magedit-source", "magedit-target",
    "magedit-words", "magedit-negative-word", "magedit-preset", "magedit-edit",
    "magedit-cancel", "magedit-status", "magedit-iterations", "magedit-granularity",
    "magedit-steps", "magedit-guidance", "magedit-inversion", "magedit-resolution",
    "magedit-region2-brush", "magedit-region2-mask-file", "magedit-region2-words",
    "magedit-region2-weight", "magedit-preview", "magedit-attention", "magedit-charts",
    "magedit-result", "magedit-download", "magedit-use-as-input", "magedit-settings",
    "magedit-gallery", "magedit-examples",
}  # fmt: skip


def test_the_controls_the_browser_tests_find_are_there(page):
    blocks = list(page.blocks.values())
    assert {b.elem_id for b in blocks} >= ELEM_IDS
    states = [b for b in blocks if isinstance(b, gr.State)]
    (mask_state,) = [s for s in states if isinstance(s.value, masks.MaskState)]
    assert mask_state.value.photo is None and mask_state.value.points == ()


def test_the_sliders_have_the_ranges_that_are_checked(page):
    sliders = {b.elem_id: b for b in page.blocks.values() if isinstance(b, gr.Slider)}
    shown = [c for c in controls.CONTROLS if c.label and c.kind in ("int", "float")]
    assert {f"magedit-{c.name.replace('_', '-')}" for c in shown} == set(sliders)
    for control in shown:
        slider = sliders[f"magedit-{control.name.replace('_', '-')}"]
        assert (slider.minimum, slider.maximum) == (control.low, control.high)
        assert control.check(control.low) == control.low
        assert control.check(control.high) == control.high
    assert isinstance(controls.BY_NAME["steps"].check(np.float32(20.0)), int)


def test_the_admission_reads_the_pinned_gradios_queue(page):
    """Admission reads Gradio's queue (no public hook): its parts are where it looks."""
    queue = page._queue
    assert isinstance(queue.event_queue_per_concurrency_id, dict)
    assert isinstance(queue.active_jobs, list)
    assert isinstance(queue.pending_messages_per_session, dict)
    door = Admission(page)
    assert door._events() == [] and door.listening(request("a"))
    assert door.admit(request("a")) is None and door.admit(request("a")) is not None


def test_the_segment_endpoint_answers_in_words(tmp_path, capsys):
    def missing():
        raise FileNotFoundError("no SAM checkpoint at '/secret/sam.pth'; pass --sam-checkpoint")

    photo = write_photo(tmp_path)
    without = build_demo(never, missing, tiny=True, output_dir=tmp_path / "out")
    segment = next(f for f in without.fns.values() if f.api_name == "segment")
    with pytest.raises(gr.Error) as error:
        segment.fn(photo, [list(OBJECT)], [1])
    assert error.value.title == "Cannot segment"
    assert error.value.message == "Segment Anything could not be loaded; see the server's log"
    assert "/secret/sam.pth" in capsys.readouterr().err
    demo = build_demo(never, Segmenter.tiny, tiny=True, output_dir=tmp_path / "out")
    segment = next(f for f in demo.fns.values() if f.api_name == "segment")
    path, score = segment.fn(photo, [list(OBJECT)], [1])
    assert Path(path).parent.parent == tmp_path / "out" and np.isfinite(score)
    assert np.asarray(Image.open(path)).shape == (192, 256)
    with pytest.raises(gr.Error) as error:
        segment.fn(photo, [[999, 5]], [1])
    assert error.value.title == "Cannot segment"
    assert error.value.message.startswith("the point (999, 5) is outside the 256x192 image")


def test_the_examples_stay_inside_their_folder(tmp_path):
    examples = events.load_examples(ASSETS_DIR)
    assert len(examples) >= 4 and examples[0]["caption"] == "cat eyes: green → blue"
    for entry in examples:
        for key in ("image", "mask"):
            assert Path(entry[key]).is_relative_to(ASSETS_DIR) and Path(entry[key]).is_file()
    (tmp_path / "examples.json").write_text(
        '[{"name": "x", "image": "../app.py", "mask": "m.png", "words": ["a"]}]',
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match="no file '../app.py'"):
        events.load_examples(tmp_path)
    assert events.load_examples(tmp_path / "nothing") == []


def test_the_zero_gpu_decorator_is_a_no_op_off_zero_gpu(monkeypatch):
    import spaces

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert job._gpu is spaces.GPU

    def work(x):
        return x

    assert spaces.GPU(duration=job.gpu_duration)(work) is work
    assert inspect.isgeneratorfunction(job.run_on_gpu)


def test_the_gpu_reservation_grows_with_the_work_and_is_capped():
    def duration(time_limit=limits.TIME_LIMIT, negative=None, **settings):
        values = {"steps": 50, "iterations": 15, "inversion": "direct", "resolution": 512}
        values.update(settings)
        config = config_from(
            "color",
            values["steps"],
            max_iter=values["iterations"],
            inversion=values["inversion"],
            resolution=values["resolution"],
        )
        svc = types.SimpleNamespace(time_limit=time_limit)
        prepared = types.SimpleNamespace(config=config, negative_word=negative)
        return job.gpu_duration(svc, prepared)

    # Paper defaults, from the pipeline's plan of UNet calls (pipeline.step_calls) and the
    # measured per-call seconds (H100, benchmarks/README.md). Direct inversion: 50 inversion
    # forwards; 25 guided steps of a recording forward, 15 MAG iterations and the edit's pair;
    # 15 batched steps of 3 rows while injecting, 10 of 2. Twice that plus 10 s.
    calls = job.CALL_SECONDS

    def forward(rows):
        return calls["fwd1"] + (rows - 1) / 3 * (calls["fwd4"] - calls["fwd1"])

    guided = forward(1) + 15 * calls["mag"] + forward(2)
    direct = 50 * calls["fwd1"] + 25 * guided + 15 * forward(3) + 10 * forward(2)
    assert duration() == math.ceil(10 + 2 * direct) == 20
    inversion = 50 * calls["fwd1"] + 50 * (10 * calls["null_text"] + 2 * calls["fwd1"])
    pairs = 25 * (2 * forward(2) + 15 * calls["mag"]) + 25 * calls["fwd4"]
    assert duration(inversion="null_text") == math.ceil(10 + 2 * (inversion + pairs)) == 38
    # Above what whole edits took warm on the H100 plus a fresh worker's +3 s (6.2 and 26.2 s).
    assert duration() > 6.2 + 3 and duration(inversion="null_text") > 26.2 + 3
    base = duration()
    assert duration(steps=100) > base and duration(iterations=30) > base
    assert duration(negative="red") > base and duration(resolution=256) < base
    assert duration(steps=100, iterations=30, inversion="null_text", time_limit=60) == 60
    assert duration(steps=5, iterations=0, inversion="ddim", resolution=256) == 11  # 10 s + calls


def test_a_large_request_body_is_refused_unread():
    client = TestClient(Guard(hello))
    answer = client.post("/gradio_api/queue/join", content=bytes(limits.MAX_BODY_BYTES + 1))
    assert answer.status_code == 413
    assert answer.json() == {
        "detail": f"the request is {limits.MAX_BODY_BYTES + 1} bytes; at most "
        f"{limits.MAX_BODY_BYTES} are read"
    }
    assert client.post("/gradio_api/queue/join", content=bytes(1000)).status_code == 200


def test_direct_calls_in_flight_are_capped_per_address():
    import asyncio

    release = asyncio.Event()
    entered = []

    async def slow(scope, receive, send):
        entered.append(scope["path"])
        await release.wait()
        await hello(scope, receive, send)

    guard = Guard(slow)

    async def call(host: str) -> int:
        status = []
        scope = {
            "type": "http", "method": "POST", "path": "/gradio_api/run/predict",
            "headers": [(b"content-length", b"2")], "client": (host, 1),
        }  # fmt: skip

        async def receive():
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await guard(scope, receive, send)
        return status[0]

    async def scenario():
        held = [asyncio.create_task(call("1.1.1.1")) for _ in range(limits.DIRECT_PER_ADDRESS)]
        while len(entered) < limits.DIRECT_PER_ADDRESS:
            await asyncio.sleep(0)
        over = await call("1.1.1.1")  # one more from the same address: refused at once
        other = asyncio.create_task(call("2.2.2.2"))  # another address is not held up
        while len(entered) < limits.DIRECT_PER_ADDRESS + 1:
            await asyncio.sleep(0)
        release.set()
        done = await asyncio.gather(*held, other)
        again = await call("1.1.1.1")  # the places were given back
        return over, done, again

    over, done, again = asyncio.run(scenario())
    assert over == 429 and done == [200] * (limits.DIRECT_PER_ADDRESS + 1) and again == 200


def test_on_zero_gpu_segment_anything_runs_on_the_cpu(monkeypatch):
    args = app.build_parser().parse_args(["--device", "cuda:1"])
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert app.segmenter_device(args) == "cuda:1"
    assert app.pipeline_devices(app.build_parser().parse_args([])) == [None, app.ALL_GPUS]
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert app.segmenter_device(args) == "cpu"
    # One pipeline: ZeroGPU lends one GPU to each call.
    assert app.pipeline_devices(app.build_parser().parse_args([])) == [None]


def test_a_fresh_gpu_worker_edits_as_a_warm_one(tiny_pipe, image, mask):
    # ZeroGPU may run each edit in a fresh worker: no inversion cached, nothing captured or
    # configured before. The same prepared edit on a never-used pipeline with the same weights
    # gives the warm pipeline's result, byte for byte.
    from magedit import MagEditPipeline

    config = EditConfig().with_steps(4).replace(max_iter=2, null_inner_steps=2, resolution=64)
    prepared = tiny_pipe.prepare(image, "a red sofa", "a green sofa", mask, config=config)
    *_, first = tiny_pipe.edit(prepared)
    *_, warm = tiny_pipe.edit(prepared)
    assert warm.inversion_cached
    fresh = MagEditPipeline.tiny(seed=0)
    assert not fresh.cache
    *_, cold = fresh.edit(prepared)
    assert not cold.inversion_cached
    assert np.array_equal(cold.composited, warm.composited)
    assert np.array_equal(cold.composited, first.composited)


def test_main_loads_a_pipeline_per_device_and_gives_the_page_them_all(monkeypatch, tmp_path):
    import magedit.loading
    import magedit.web

    asked, built = [], {}

    def load(model, device, dtype, tiny):
        asked.append(device)
        return types.SimpleNamespace(device=types.SimpleNamespace(type="cuda"), name=device)

    monkeypatch.setattr(magedit.loading, "load_pipeline", load)
    monkeypatch.setattr(magedit.loading, "load_segmenter", lambda *args: object())
    monkeypatch.setattr(app, "OUTPUT_DIR", tmp_path / "outputs")

    def build(load_pipeline, load_segmenter, **kwargs):
        built.update(first=load_pipeline(), more=[load() for load in kwargs["more_pipelines"]])
        return types.SimpleNamespace(launch=lambda **options: None)

    monkeypatch.setattr(magedit.web, "build_demo", build)
    app.main(["--tiny", "--devices", "cuda:0, cuda:1,cuda:2", "--port", "0"])
    assert asked == ["cuda:0", "cuda:1", "cuda:2"]
    assert built["first"].name == "cuda:0" and [p.name for p in built["more"]] == [
        "cuda:1",
        "cuda:2",
    ]


@pytest.mark.parametrize(
    "argv, said",
    [
        (["--devices", "cuda:0,cuda:0"], "--devices 'cuda:0,cuda:0': name each device once"),
        (["--devices", "cuda:0", "--device", "cuda:1"], "give --device or --devices, not both"),
    ],
)
def test_devices_are_named_once(argv, said, capsys):
    with pytest.raises(SystemExit) as done:
        app.main(["--tiny", *argv, "--port", "0"])
    assert done.value.code == 2
    assert said in capsys.readouterr().err


def test_refused_uploads_leave_a_line_in_the_log(capsys):
    """Newcomer item 9: uploads refused by the guard (over the budget, no length) were not in
    the server's log though every other refusal was."""

    async def call(headers: list[tuple[bytes, bytes]]) -> int:
        statuses = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        scope = {"type": "http", "method": "POST", "path": "/gradio_api/upload",
                 "headers": headers, "client": ("7.7.7.7", 1)}  # fmt: skip
        await Guard(hello, budget=UploadBudget(limit=1000, window=60, clock=lambda: 0.0))(
            scope, receive, send
        )
        return statuses[0]

    assert asyncio.run(call([])) == 411
    assert asyncio.run(call([(b"content-length", b"5000")])) == 429
    log = capsys.readouterr().err.splitlines()
    assert log[0] == "magedit: refused: HTTP 411: send the upload with a Content-Length"
    assert log[1].startswith("magedit: refused: HTTP 429: too many uploads from your network")
