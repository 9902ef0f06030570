"""Where weights come from: a local folder, the Hugging Face cache, or the Hub, in that order.

Only the files the engine reads are fetched: for SD v1.x the UNet, VAE and text encoder (config
and one weights file each, safetensors first, the fp16 variant when the pipeline runs in half
precision) and the tokenizer; never the repository's single-file checkpoints (``*.ckpt``, 4-8 GB
in SD v1.4's), its non-EMA weights or its safety checker. For Segment Anything, the one
checkpoint file (``segment.checkpoint_path``).

Offline, or with the Hub out of reach, a model that is not in the cache fails at once with one
line naming the two ways forward (``--model FOLDER`` or ``--tiny``): the cache and the offline
flags are read first and the Hub's address is tried once, with a short timeout, before any
download starts (huggingface_hub's own client retries for half a minute and then reports a
misleading "no file named config.json"). Only ``huggingface_hub`` is imported here: the check
runs before torch, diffusers or gradio are loaded.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from magedit.errors import Says

# SD v1.x's components the engine loads, and each one's weights files (safetensors, pickle); the
# fp16 variant of a file has ".fp16" before its extension.
SD_WEIGHTS = {
    "unet": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "text_encoder": ("model.safetensors", "pytorch_model.bin"),
}
# The tokenizer's files: vocab.json and merges.txt (SD v1.4's), or tokenizer.json (what
# transformers 5 saves), with their configs.
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json")  # fmt: skip
# How long one try of the Hub's address may take before it counts as out of reach.
REACH_TIMEOUT = 3.0
WAYS_FORWARD = (
    "give the model as a local folder ({model} FOLDER: a downloaded diffusers SD v1.x folder), "
    "or use the offline demo with random weights ({tiny})"
)


class WeightsUnavailable(Says, ValueError):
    """The weights cannot be had here; the message says what is missing and what to do (naming
    the options as ``{field}`` placeholders, see ``errors.Says``)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.template = message


def public_name(model: str) -> str:
    """The model as others may see it: a Hub id as it is, a local folder by its name only (its
    path would tell a page's visitors about the server's disk; a recipe names it the same way on
    every machine)."""
    if is_local(model) or "\\" in model or Path(model).is_absolute():
        return f"local model '{Path(model).name}'"
    return model


def is_local(name: str) -> bool:
    """Whether a model name is a path (it starts with /, ./, ../ or ~), not a Hub id."""
    return name.startswith(("/", "./", "../", "~"))


def offline() -> bool:
    """Whether the Hugging Face libraries are told to stay offline (HF_HUB_OFFLINE or
    TRANSFORMERS_OFFLINE set to 1, true, yes or on)."""
    return any(
        os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def sd_files(listing: Iterable[str], half: bool) -> list[str]:
    """The files of an SD v1.x diffusers repository (or folder) that the engine reads, chosen
    from ``listing`` (its files, relative paths with "/"): per component its ``config.json`` and
    one weights file (safetensors before pickled ``.bin``; with ``half`` the fp16 variant first,
    else the full-precision file first), and the tokenizer's files.

    Raises WeightsUnavailable naming what is missing when the listing is not such a model.
    """
    files = set(listing)
    wanted: list[str] = []
    for component, (safe, pickled) in SD_WEIGHTS.items():
        full = [f"{component}/{name}" for name in (safe, pickled)]
        fp16 = [path.replace(".", ".fp16.", 1) for path in full]
        order = [fp16[0], full[0], fp16[1], full[1]] if half else [*full, *fp16]
        found = next((path for path in order if path in files), None)
        missing = [f"{component}/config.json"] if f"{component}/config.json" not in files else []
        if found is None:
            missing.append(f"{component}/{safe} (nor {pickled})")
        if missing:
            raise WeightsUnavailable(
                f"it has no {' and no '.join(missing)}: is it a diffusers Stable Diffusion v1.x "
                "model?"
            )
        wanted += [f"{component}/config.json", found]
    tokenizer = [f"tokenizer/{name}" for name in TOKENIZER_FILES if f"tokenizer/{name}" in files]
    bpe = {"tokenizer/vocab.json", "tokenizer/merges.txt"} <= set(tokenizer)
    if not (bpe or "tokenizer/tokenizer.json" in tokenizer):
        raise WeightsUnavailable(
            "it has no tokenizer/vocab.json and tokenizer/merges.txt (or tokenizer/tokenizer.json)"
            ": is it a diffusers Stable Diffusion v1.x model?"
        )
    return wanted + tokenizer


def variants(folder: Path, half: bool) -> dict[str, str | None]:
    """Per component of a local SD folder, the weights variant to load it with: "fp16" when
    the file ``sd_files`` chooses there is the fp16 one, else None. WeightsUnavailable when the
    folder is not an SD v1.x model (its message names the missing file)."""
    chosen = sd_files(listing(folder), half)
    found = {}
    for component in SD_WEIGHTS:
        weights = chosen[chosen.index(f"{component}/config.json") + 1]
        found[component] = "fp16" if ".fp16." in weights else None
    return found


def listing(folder: Path) -> list[str]:
    """The files under ``folder``, as paths relative to it with "/"."""
    return [path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()]


def cached_snapshot(repo: str) -> Path | None:
    """The cached snapshot folder of Hub repository ``repo`` (its main revision), or None.

    Read from the cache's layout (``models--org--name/refs/main`` -> ``snapshots/<commit>``),
    not through ``snapshot_download(local_files_only=True)``: since huggingface_hub caches the
    repository's whole file list, that call refuses a snapshot missing any file of the
    repository, so a copy holding exactly the files the engine reads (what ``sd_folder``
    downloads) would count as absent. Whether the files present suffice is ``sd_files``' call.
    """
    from huggingface_hub import constants

    root = Path(constants.HF_HUB_CACHE) / ("models--" + repo.replace("/", "--"))
    try:
        commit = (root / "refs" / "main").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    folder = root / "snapshots" / commit
    return folder if commit and folder.is_dir() else None


def unreachable() -> str | None:
    """Why the Hub cannot be reached from here, or None when it answered: one TCP connection to
    its address, or to the proxy the environment names for it (``HTTPS_PROXY``/``HTTP_PROXY``/
    ``ALL_PROXY``, unless ``NO_PROXY`` covers the Hub), name lookup included, within
    REACH_TIMEOUT seconds."""
    import threading

    from huggingface_hub import constants

    if offline():
        return "the Hub is switched off here (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set)"
    endpoint = urlsplit(constants.ENDPOINT)
    proxy = None if _bypassed(endpoint.hostname or "") else _proxy_for(endpoint.scheme)
    target = urlsplit(proxy if "://" in (proxy or "://") else f"http://{proxy}")
    target = target if proxy else endpoint
    try:
        port = target.port
    except ValueError:  # "proxy:abc"
        port = None
    host = target.hostname or ""
    port = port or (443 if target.scheme == "https" else 80)
    what = f"the proxy {host}:{port}" if proxy else host
    failure: list[str] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=REACH_TIMEOUT).close()
        except OSError as error:
            failure.append(error.strerror or type(error).__name__)

    attempt = threading.Thread(target=connect, daemon=True)
    attempt.start()
    attempt.join(REACH_TIMEOUT + 0.5)
    if attempt.is_alive():  # a name lookup that hangs: socket's timeout does not cover it
        return f"{what} did not answer within {REACH_TIMEOUT:g} s"
    return f"{what} cannot be reached ({failure[0]})" if failure else None


def _proxy_for(scheme: str) -> str | None:
    names = ("HTTPS_PROXY", "https_proxy") if scheme == "https" else ("HTTP_PROXY", "http_proxy")
    for name in (*names, "ALL_PROXY", "all_proxy"):
        if os.environ.get(name):
            return os.environ[name]
    return None


def _bypassed(host: str) -> bool:
    """Whether ``NO_PROXY`` says to reach ``host`` directly."""
    entries = [
        e.strip().lower()
        for e in os.environ.get("NO_PROXY", os.environ.get("no_proxy", "")).split(",")
    ]
    host = host.lower()
    return any(e == "*" or (e and (host == e.lstrip(".") or host.endswith("." + e.lstrip("."))))
               for e in entries)  # fmt: skip


def check_available(repo: str, filename: str | None = None) -> None:
    """Fail fast, before anything heavy loads: WeightsUnavailable when Hub repository ``repo``
    (or its ``filename``) is not in the Hugging Face cache and the Hub is off or out of reach.
    Says nothing about a cached copy's completeness (the loader checks that)."""
    if filename is not None:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(repo, filename), str):
            return
    elif cached_snapshot(repo) is not None:
        return
    why = unreachable()
    if why is not None:
        what = f"'{filename}' of '{repo}'" if filename else f"the model '{repo}'"
        raise WeightsUnavailable(f"{what} is not in the Hugging Face cache and {why}")


def sd_folder(repo: str, half: bool) -> Path:
    """A local folder with the files ``sd_files`` chooses from Hub repository ``repo``: the
    cached snapshot when it holds them all, else downloaded (only those files) into the cache.

    Raises WeightsUnavailable, its message naming what is missing and what to do, when the cache
    lacks the files and the Hub is off or out of reach, or the repository is gated, missing or
    not an SD v1.x model.
    """
    snapshot = cached_snapshot(repo)
    where = "not in the Hugging Face cache"
    if snapshot is not None:
        try:
            sd_files(listing(snapshot), half)
            return snapshot
        except WeightsUnavailable as missing:  # an incomplete copy: fetch the rest
            where = f"only partly in the Hugging Face cache ({missing})"
    why = unreachable()
    if why is not None:
        raise WeightsUnavailable(f"the model '{repo}' is {where} and {why}: {WAYS_FORWARD}")
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        files = sd_files(HfApi().list_repo_files(repo), half)
        return Path(snapshot_download(repo, allow_patterns=files))
    except GatedRepoError:
        raise WeightsUnavailable(
            f"the model '{repo}' is gated on the Hub: accept its licence at "
            f"https://huggingface.co/{repo} while logged in, then set HF_TOKEN to one of your "
            "access tokens (or run `hf auth login`)"
        ) from None
    except RepositoryNotFoundError:
        raise WeightsUnavailable(
            f"there is no model '{repo}' on the Hub (or it is private: set HF_TOKEN to a token "
            f"that can read it); check the name, or {WAYS_FORWARD}"
        ) from None
    except WeightsUnavailable as error:
        raise WeightsUnavailable(f"the Hub repository '{repo}': {error}") from None
