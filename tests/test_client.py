"""The API end to end: ``gradio_client`` against ``python app.py --tiny`` on a free loopback port,
segment (a click -> mask PNG) then edit with that mask, through the named endpoints."""

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ (the server helper) lives at the repo root

from benchmarks.load import AppServer, check_edit, write_inputs  # noqa: E402

pytestmark = pytest.mark.slow  # a real server

SOURCE = "a close-up photo of a tabby cat with green eyes"
TARGET = "a close-up photo of a tabby cat with blue eyes"
QUICK = {"steps": 10, "iterations": 1}  # seconds on a CPU with the tiny model


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with AppServer(tmp_path_factory.mktemp("client-app")) as server:
        yield server


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    from gradio_client import Client

    client = Client(
        server.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads"))
    )
    yield client
    client.close()


@pytest.fixture(scope="module")
def photo_path(tmp_path_factory) -> Path:
    path = ROOT / "assets" / "cat.jpg"
    return path if path.exists() else write_inputs(tmp_path_factory.mktemp("photo"))[0]


@pytest.fixture(scope="module")
def photo(photo_path) -> np.ndarray:
    from magedit import images

    return images.load_image(photo_path)  # what the server decodes: (H, W, 3) uint8


@pytest.fixture(scope="module")
def segmented(client, photo_path, photo):
    """/segment with one click in the middle of the photo: (mask path, score)."""
    from gradio_client import handle_file

    height, width = photo.shape[:2]
    return client.predict(
        image=handle_file(str(photo_path)),
        points=[[width // 2, height // 2]],
        labels=[1],
        api_name="/segment",
    )


def edit(client, photo_path, mask_path, **settings):
    from gradio_client import handle_file

    settings = {"source": SOURCE, "target": TARGET, **QUICK, **settings}
    return client.predict(
        image=handle_file(str(photo_path)),
        mask_file=handle_file(str(mask_path)),
        **settings,
        api_name="/edit",
    )


def test_the_api_names_segment_and_edit(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/segment", "/edit"} <= set(endpoints)
    edit_parameters = [p["parameter_name"] for p in endpoints["/edit"]["parameters"]]
    assert edit_parameters[:3] == ["image", "source", "target"]
    # Everything after the photo and the prompts has a default: three values make an edit.
    assert all(p["parameter_has_default"] for p in endpoints["/edit"]["parameters"][3:])


def test_segment_returns_a_mask_of_the_photo_size(segmented, photo):
    from PIL import Image

    path, score = segmented
    mask = np.asarray(Image.open(path))
    assert mask.shape[:2] == photo.shape[:2]
    assert set(np.unique(mask)) <= {0, 255}
    assert 0 < (mask > 0).mean() < 0.99  # a region, neither empty nor the whole photo
    assert isinstance(score, float) and np.isfinite(score)


@pytest.fixture(scope="module")
def edited(client, segmented, photo_path):
    """/edit of the photo with the segmented mask: its outputs."""
    return edit(client, photo_path, segmented[0])


def test_edit_with_the_segmented_mask_changes_only_the_region(edited, segmented, photo):
    from PIL import Image

    mask = np.asarray(Image.open(segmented[0])) > 0
    result = check_edit(edited, photo, mask, TARGET)  # shape, outside kept, inside changed
    assert result.dtype == np.uint8 and result.shape == photo.shape
    settings = next(o for o in edited if isinstance(o, dict) and "source prompt" in o)
    assert settings["source prompt"] == SOURCE and "seed" not in settings
    assert settings["edit words"] == ["blue"]
    # The report and the recipe come with every API result (issue 23).
    said = settings["report"]["magedit"]
    assert said["psnr_outside"] == "inf" and said["changed_outside"] == 0
    assert said["raw_changed_outside"] > 0 and said["clip_local"] is None
    assert settings["recipe"]["kind"] == "magedit-recipe"
    assert settings["recipe"]["source_prompt"] == SOURCE


def test_the_same_edit_again_gives_the_same_bytes(client, edited, segmented, photo_path, photo):
    from PIL import Image

    mask = np.asarray(Image.open(segmented[0])) > 0
    again = check_edit(edit(client, photo_path, segmented[0]), photo, mask, TARGET)
    assert np.array_equal(check_edit(edited, photo, mask, TARGET), again)


def test_a_bad_request_is_a_readable_error(client, segmented, photo_path, server):
    from gradio_client.exceptions import ValidationError

    # Refused before it joins the queue, naming the parameter at fault, in plain text (no HTML
    # escapes: the prompt is quoted as typed).
    with pytest.raises(ValidationError) as error:
        edit(client, photo_path, segmented[0], words="purple", target=TARGET + " <b>&</b>")
    message = str(error.value)
    assert "- words: edit word 'purple' is not in the target prompt" in message
    assert "<b>&</b>" in message and "&lt;" not in message and "&#x27;" not in message
    assert str(ROOT) not in message and "Traceback" not in message
    with pytest.raises(ValidationError, match="- steps: steps is 4, out of range"):
        edit(client, photo_path, segmented[0], steps=4)
