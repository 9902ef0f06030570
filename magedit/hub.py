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
    "pass --model FOLDER (a downloaded diffusers SD v1.x folder), or --tiny for the offline demo "
    "with random weights"
)


class WeightsUnavailable(ValueError):
    """The weights cannot be had here; the message says what is missing and what to do."""


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
        if f"{component}/config.json" not in files or found is None:
            raise WeightsUnavailable(
                f"it has no {component}/config.json and {component}/{safe} (or {pickled}): is it "
                "a diffusers Stable Diffusion v1.x model?"
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


def variant(folder: Path, component: str, half: bool) -> str | None:
    """The weights variant to load ``component`` of a local SD folder with: "fp16" when only
    that file is there, or when ``half`` and it is there; else None (the plain file)."""
    names = {path.name for path in (folder / component).glob("*")}
    plain = any(name in names for name in SD_WEIGHTS[component])
    fp16 = any(name.replace(".", ".fp16.", 1) in names for name in SD_WEIGHTS[component])
    return "fp16" if fp16 and (half or not plain) else None


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
    """Why the Hub cannot be reached from here (one try of its address, or of the proxy's, with
    a REACH_TIMEOUT-second limit), or None when it answered."""
    from huggingface_hub import constants

    if offline():
        return "the Hub is switched off here (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set)"
    proxy = next(
        (os.environ[name] for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
         if os.environ.get(name)), None,
    )  # fmt: skip
    url = urlsplit(proxy if proxy and "://" in proxy else f"http://{proxy}" if proxy else
                   constants.ENDPOINT)  # fmt: skip
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=REACH_TIMEOUT).close()
    except OSError as error:
        what = f"the proxy {host}:{port}" if proxy else host
        reason = error.strerror or type(error).__name__
        return f"{what} cannot be reached ({reason})"
    return None


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
