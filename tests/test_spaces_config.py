"""The Space's configuration: spaces.yaml and README.md's front matter (what the Hub reads) agree,
the Gradio version is the one requirements.txt pins, and the files preloaded from the Hub are the
ones the app loads."""

import re
from pathlib import Path

import gradio
import pytest
import yaml
from test_hub import SD14_LISTING

from magedit import hub, segment
from magedit.config import DEFAULT_SAM_MODEL, SD14_MODEL

ROOT = Path(__file__).resolve().parents[1]
SHARED_KEYS = (
    "sdk",
    "sdk_version",
    "python_version",
    "app_file",
    "suggested_hardware",
    "models",
    "preload_from_hub",
)


def front_matter() -> dict:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.DOTALL)
    assert match, "README.md starts with a YAML front matter between --- lines"
    return yaml.safe_load(match.group(1))


def space() -> dict:
    return yaml.safe_load((ROOT / "spaces.yaml").read_text(encoding="utf-8"))["space"]


def gradio_pin() -> str:
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    pins = [re.match(r"gradio==([\w.]+)", line) for line in lines]
    (pin,) = [p.group(1) for p in pins if p]
    return pin


@pytest.mark.parametrize("key", SHARED_KEYS)
def test_readme_header_and_spaces_yaml_agree(key):
    assert key in space() and key in front_matter()
    assert front_matter()[key] == space()[key]


def test_spaces_yaml_holds_no_key_the_header_lacks():
    assert set(space()) == set(SHARED_KEYS)


def test_sdk_version_is_the_pinned_and_installed_gradio():
    assert space()["sdk"] == "gradio"
    assert str(space()["sdk_version"]) == gradio_pin() == gradio.__version__


def test_app_file_and_python_version():
    assert (ROOT / space()["app_file"]).is_file()
    assert isinstance(space()["python_version"], str)  # "3.10" would be read as 3.1 unquoted
    assert re.fullmatch(r"3\.\d+", space()["python_version"])


def test_preload_from_hub_holds_sd14_and_the_sam_checkpoint():
    preload = dict(entry.split(" ", 1) for entry in space()["preload_from_hub"])
    assert set(preload) == {SD14_MODEL, segment.SAM_REPO}
    assert set(space()["models"]) == set(preload)
    sam_files = preload[segment.SAM_REPO].split(",")
    assert sam_files == [segment.SAM_FILES[DEFAULT_SAM_MODEL]]
    # What the engine reads on a GPU (half precision) from SD v1.4's repository, and nothing else.
    assert preload[SD14_MODEL].split(",") == hub.sd_files(SD14_LISTING, half=True)


def test_suggested_hardware_is_a_gpu():
    assert re.fullmatch(r"(t4|a10g|a100|l4|l40s|h100|zero)-\w+", space()["suggested_hardware"])
