"""Where weights come from (``magedit.hub``): only the files the engine reads are fetched, a
cached copy is used offline, and without the weights or the Hub the answer is one line at once,
naming ``--model FOLDER`` and ``--tiny``. Offline: the Hub client is replaced where a test plays
"online"."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import huggingface_hub
import pytest
from huggingface_hub import constants
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

from magedit import hub, loading

ROOT = Path(__file__).resolve().parents[1]

# CompVis/stable-diffusion-v1-4 on the Hub (main), as its "Files" page lists them.
SD14_LISTING = [
    ".gitattributes", "README.md", "model_index.json", "v1-inference.yaml",
    "sd-v1-4.ckpt", "sd-v1-4-full-ema.ckpt",  # 4 GB and 7.7 GB single-file checkpoints
    "feature_extractor/preprocessor_config.json",
    "safety_checker/config.json", "safety_checker/model.safetensors",
    "safety_checker/model.fp16.safetensors", "safety_checker/pytorch_model.bin",
    "safety_checker/pytorch_model.fp16.bin",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json", "text_encoder/model.safetensors",
    "text_encoder/model.fp16.safetensors", "text_encoder/pytorch_model.bin",
    "text_encoder/pytorch_model.fp16.bin",
    "tokenizer/merges.txt", "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json", "tokenizer/vocab.json",
    "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.bin",
    "unet/diffusion_pytorch_model.fp16.bin", "unet/diffusion_pytorch_model.non_ema.bin",
    "unet/diffusion_pytorch_model.non_ema.safetensors",
    "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.bin",
    "vae/diffusion_pytorch_model.fp16.bin",
]  # fmt: skip
TOKENIZER = [
    "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json",
    "tokenizer/special_tokens_map.json",
]  # fmt: skip
OFFLINE_LINE = (
    "the model 'nobody/not-cached' is not in the Hugging Face cache and the Hub is switched off "
    "here (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set): give the model as a local folder "
    "(model FOLDER: a downloaded diffusers SD v1.x folder), or use the offline demo with random "
    "weights (tiny)"
)


def test_sd14_gives_the_engine_its_files_and_nothing_else():
    assert hub.sd_files(SD14_LISTING, half=True) == [
        "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors",
        "text_encoder/config.json", "text_encoder/model.fp16.safetensors",
        *TOKENIZER,
    ]  # fmt: skip
    assert hub.sd_files(SD14_LISTING, half=False) == [
        "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json", "text_encoder/model.safetensors",
        *TOKENIZER,
    ]  # fmt: skip


def test_older_repositories_fall_back_to_what_they_have():
    pickled = ["unet/config.json", "unet/diffusion_pytorch_model.bin", "vae/config.json",
               "vae/diffusion_pytorch_model.fp16.bin", "text_encoder/config.json",
               "text_encoder/pytorch_model.bin", "tokenizer/vocab.json", "tokenizer/merges.txt"]  # fmt: skip
    chosen = hub.sd_files(pickled, half=False)
    assert chosen[1] == "unet/diffusion_pytorch_model.bin"
    assert chosen[3] == "vae/diffusion_pytorch_model.fp16.bin"  # the only weights there are
    assert chosen[5] == "text_encoder/pytorch_model.bin"
    assert chosen[6:] == ["tokenizer/vocab.json", "tokenizer/merges.txt"]
    with pytest.raises(
        hub.WeightsUnavailable,
        match="no vae/config.json and no vae/diffusion_pytorch_model.safetensors ",
    ):
        hub.sd_files([f for f in SD14_LISTING if not f.startswith("vae/")], half=True)
    with pytest.raises(hub.WeightsUnavailable, match="no tokenizer/vocab.json"):
        hub.sd_files([f for f in SD14_LISTING if "vocab" not in f], half=True)
    saved = [f for f in SD14_LISTING if not f.endswith(("vocab.json", "merges.txt"))]
    assert hub.sd_files([*saved, "tokenizer/tokenizer.json"], half=True)[6:] == [
        "tokenizer/tokenizer.json",
        "tokenizer/tokenizer_config.json",
        "tokenizer/special_tokens_map.json",
    ]  # fmt: skip (what transformers 5 saves)


def test_a_local_folder_loads_the_variant_sd_files_chose(tmp_path):
    def folder(*files):
        where = tmp_path / str(len(list(tmp_path.iterdir())))
        for name in ("unet/config.json", "vae/config.json", "text_encoder/config.json",
                     "tokenizer/vocab.json", "tokenizer/merges.txt", *files):  # fmt: skip
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            (where / name).write_bytes(b"")
        return where

    both = folder("unet/diffusion_pytorch_model.safetensors",
                  "unet/diffusion_pytorch_model.fp16.safetensors",
                  "vae/diffusion_pytorch_model.fp16.safetensors", "text_encoder/model.safetensors",
                  "text_encoder/pytorch_model.fp16.bin")  # fmt: skip
    assert hub.variants(both, half=True) == {"unet": "fp16", "vae": "fp16", "text_encoder": None}
    # Full precision: the plain files; the VAE has only its fp16 one.
    assert hub.variants(both, half=False) == {"unet": None, "vae": "fp16", "text_encoder": None}
    with pytest.raises(
        hub.WeightsUnavailable, match=r"no unet/diffusion_pytorch_model.safetensors \(nor"
    ):
        hub.variants(folder("vae/diffusion_pytorch_model.bin"), half=False)


@pytest.fixture
def online(monkeypatch):
    """The Hub as if reachable, with nothing cached; records what is asked of it."""
    asked: dict = {}

    def list_repo_files(self, repo, **kwargs):
        asked["listed"] = repo
        return SD14_LISTING

    def snapshot_download(repo, **kwargs):
        asked.update(kwargs, repo=repo)
        return "/hub/snapshot"

    monkeypatch.setattr(hub, "unreachable", lambda: None)
    monkeypatch.setattr(hub, "cached_snapshot", lambda repo: None)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", list_repo_files)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return asked


def test_a_download_asks_the_hub_for_the_chosen_files_only(online):
    assert hub.sd_folder("CompVis/stable-diffusion-v1-4", half=True) == Path("/hub/snapshot")
    assert online["repo"] == online["listed"] == "CompVis/stable-diffusion-v1-4"
    assert online["allow_patterns"] == hub.sd_files(SD14_LISTING, half=True)
    assert not [f for f in online["allow_patterns"] if f.endswith((".ckpt", ".bin"))]
    assert not [f for f in online["allow_patterns"] if f.startswith("safety_checker/")]


@pytest.mark.parametrize(
    "error, said",
    [
        (GatedRepoError, "the model 'org/sd' is gated on the Hub: accept its licence at "
         "https://huggingface.co/org/sd while logged in, then set HF_TOKEN"),
        (RepositoryNotFoundError, "there is no model 'org/sd' on the Hub (or it is private: set "
         "HF_TOKEN to a token that can read it); check the name, or give the model as a local "
         "folder (model FOLDER"),
    ],
)  # fmt: skip
def test_gated_or_missing_repositories_say_what_to_do(online, monkeypatch, error, said):
    response = httpx.Response(403, request=httpx.Request("GET", "https://huggingface.co/api"))

    def refuse(self, repo, **kwargs):
        raise error("refused", response=response)

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", refuse)
    with pytest.raises(hub.WeightsUnavailable) as raised:
        hub.sd_folder("org/sd", half=False)
    assert str(raised.value).startswith(said)
    assert "repo" not in online  # nothing was downloaded


def test_offline_a_missing_model_is_one_line_and_no_connection(monkeypatch):
    tried = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: tried.append(a))
    with pytest.raises(hub.WeightsUnavailable) as raised:
        loading.load_pipeline.__wrapped__("nobody/not-cached")
    assert str(raised.value) == OFFLINE_LINE
    assert tried == []


def test_out_of_reach_is_found_in_one_try(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    tried = []

    def refuse(address, timeout):
        tried.append((address, timeout))
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(constants, "ENDPOINT", "https://huggingface.co")
    with pytest.raises(hub.WeightsUnavailable) as raised:
        hub.check_available("nobody/not-cached")
    assert str(raised.value) == (
        "the model 'nobody/not-cached' is not in the Hugging Face cache and huggingface.co "
        "cannot be reached (Connection refused)"
    )
    assert tried == [(("huggingface.co", 443), hub.REACH_TIMEOUT)]
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.local:3128")
    with pytest.raises(hub.WeightsUnavailable, match=r"the proxy proxy.local:3128 cannot be rea"):
        hub.check_available("nobody/not-cached", "weights.pth")
    assert tried[-1] == (("proxy.local", 3128), hub.REACH_TIMEOUT)
    monkeypatch.setenv("NO_PROXY", "localhost,.huggingface.co")  # the Hub is reached directly
    with pytest.raises(hub.WeightsUnavailable, match="huggingface.co cannot be reached"):
        hub.check_available("nobody/not-cached")
    assert tried[-1] == (("huggingface.co", 443), hub.REACH_TIMEOUT)
    monkeypatch.delenv("NO_PROXY")
    monkeypatch.setenv("HTTPS_PROXY", "proxy.local:abc")  # no usable port: the scheme's
    with pytest.raises(hub.WeightsUnavailable, match="the proxy proxy.local:80 cannot be reached"):
        hub.check_available("nobody/not-cached")


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache in tmp_path, and a way to put a snapshot into it."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))

    def snapshot(repo: str) -> Path:
        root = tmp_path / f"models--{repo.replace('/', '--')}"
        (root / "refs").mkdir(parents=True)
        (root / "refs" / "main").write_text("0" * 40)
        folder = root / "snapshots" / ("0" * 40)
        folder.mkdir(parents=True)
        return folder

    return snapshot


def test_a_cached_model_loads_offline(hub_cache, tiny_pipe):
    from magedit.tiny import tiny_components

    folder = hub_cache("me/tiny-sd")
    for name, component in tiny_components(0).items():
        component.save_pretrained(folder / name)
    pipe = loading.load_pipeline.__wrapped__("me/tiny-sd", "cpu", "float32")
    assert pipe.model_id == "me/tiny-sd"
    for name in ("unet", "vae", "text_encoder"):  # the same weights as the tiny pipeline's
        ours, theirs = getattr(pipe, name).state_dict(), getattr(tiny_pipe, name).state_dict()
        assert ours.keys() == theirs.keys()
        assert all(ours[key].equal(theirs[key]) for key in ours)
    prompt = "a photo of a green sofa"
    assert pipe.encode_prompt(prompt).equal(tiny_pipe.encode_prompt(prompt))


def test_a_partly_cached_model_offline_says_so(hub_cache):
    folder = hub_cache("me/half-sd")
    (folder / "unet").mkdir()
    (folder / "unet" / "config.json").write_text(json.dumps({}))
    with pytest.raises(hub.WeightsUnavailable) as raised:
        hub.sd_folder("me/half-sd", half=False)
    assert str(raised.value).startswith(
        "the model 'me/half-sd' is only partly in the Hugging Face cache (it has no "
        "unet/diffusion_pytorch_model.safetensors (nor diffusion_pytorch_model.bin): is it a "
        "diffusers Stable Diffusion v1.x model?) and the Hub is switched off here"
    )


def test_app_offline_fails_in_one_line_before_torch_or_gradio_load(tmp_path):
    # The check runs first: offline, the page's start costs an interpreter and huggingface_hub,
    # not torch, diffusers and gradio (about 6 s on this machine's CPUs).
    code = (
        "import sys, app\n"
        "try:\n    app.main([])\n"
        "except SystemExit as done:\n"
        "    print(done.code, sorted(m for m in ('torch', 'gradio', 'diffusers') if m in sys.modules))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path)}
    env.pop("MAGEDIT_MODEL", None)
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.stdout == "2 []\n"
    assert run.stderr == (
        "app.py: error: the model 'CompVis/stable-diffusion-v1-4' is not in the Hugging Face "
        "cache and the Hub is switched off here (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set): "
        "give the model as a local folder (--model FOLDER: a downloaded diffusers SD v1.x folder), "
        "or use the offline demo with random weights (--tiny)\n"
    )


def test_a_snapshot_with_only_our_files_counts_as_cached(hub_cache, monkeypatch):
    # huggingface_hub caches the repository's whole file list: asked for the snapshot with
    # local_files_only, it refuses one that lacks any file of the repository (the multi-GB
    # checkpoints we never fetch). Ours is read from the cache's refs and snapshots instead.
    import huggingface_hub
    from huggingface_hub.errors import IncompleteSnapshotError

    folder = hub_cache("org/sd")
    for name in hub.sd_files(SD14_LISTING, half=True):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")

    def incomplete(repo, **kwargs):
        raise IncompleteSnapshotError("1 file(s) are missing (sd-v1-4.ckpt)", snapshot_path=folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", incomplete)
    assert hub.cached_snapshot("org/sd") == folder
    assert hub.sd_folder("org/sd", half=True) == folder  # offline: no download asked
    hub.check_available("org/sd")
    assert hub.cached_snapshot("org/other") is None
