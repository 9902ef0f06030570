"""Loading the models: Stable Diffusion and Segment Anything from a Hub id, a local folder or
``--tiny`` random weights, and the evaluation models; device and dtype defaults. The page, the
command line and the benchmark load through here, so each model loads the same way everywhere.

Nothing heavy is imported at module level. Each loader builds its model once per process for
the same arguments (an ``lru_cache``); a failure raises ``ValueError`` or ``OSError`` whose
message names the way out (``--model /local/folder``, ``--sam-checkpoint``, ``--tiny``).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magedit.config import default_model, tiny_model_id
from magedit.errors import InputError, MissingFile, one_line

if TYPE_CHECKING:
    import torch

    from magedit.evaluate import Metrics
    from magedit.pipeline import MagEditPipeline
    from magedit.segment import Segmenter

DTYPES = ("auto", "float32", "float16", "bfloat16")
# How much of a library's own error message a load failure quotes.
_REASON_CHARS = 200


def torch_device(name: str | None) -> torch.device:
    """The torch device called ``name`` (None: cuda when a GPU is available, else cpu).
    ValueError for a name torch does not know or a GPU that is not there."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(
            "device", f"{{device}} '{name}' is not a torch device; use cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            "device", f"{{device}} {name}: no CUDA GPU is available here; use {{device}} cpu"
        )
    return device


def torch_dtype(name: str, device: torch.device) -> torch.dtype:
    """``DTYPES`` name -> torch dtype; "auto" is the pipeline's default for ``device``."""
    import torch

    from magedit.pipeline import default_dtype

    if name not in DTYPES:
        raise ValueError(f"dtype '{name}' is unknown; use one of {', '.join(DTYPES)}")
    return default_dtype(device) if name == "auto" else getattr(torch, name)


def quiet_libraries() -> None:
    """Keep the libraries' info/warning logs off the terminal: transformers' "Token indices
    sequence length is longer than..." (our own check reports it better) and huggingface_hub's
    retry notices when the Hub cannot be reached (the load error names the way out)."""
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    diffusers_logging.set_verbosity_error()
    hub_logging.set_verbosity_error()


def _reason(error: BaseException) -> str:
    reason = one_line(error)
    return reason if len(reason) <= _REASON_CHARS else reason[: _REASON_CHARS - 3] + "..."


def model_name(model: str | None, tiny: bool = False) -> str:
    """The name of the model ``load_pipeline(model, tiny=tiny)`` loads (its ``model_id``), known
    before it loads."""
    return tiny_model_id() if tiny else model or default_model()


@functools.lru_cache(maxsize=8)  # one per GPU of a host (app.py --devices)
def load_pipeline(
    model: str | None = None, device: str | None = None, dtype: str = "auto", tiny: bool = False
) -> MagEditPipeline:
    """The MAG-Edit pipeline on SD v1.x ``model`` (a Hub id or a local diffusers folder; None is
    ``$MAGEDIT_MODEL`` or SD v1.4), or on tiny random weights with ``tiny``; once per process for
    these arguments.

    Raises ValueError with the way out (``--tiny`` or ``--model /local/folder``) when the weights
    cannot be loaded: at once, in one line, when they are not in the Hugging Face cache and the
    Hub is off or out of reach (``hub``).
    """
    from magedit import hub

    name = model or default_model()
    if not tiny:
        name = model_source(name)
    quiet_libraries()
    from magedit.pipeline import MagEditPipeline

    where = torch_device(device)
    kind = torch_dtype(dtype, where)
    if tiny:
        return MagEditPipeline.tiny(device=where, dtype=kind)
    try:
        with warnings.catch_warnings():
            # Library deprecation notices are not the user's to act on; stderr stays one line.
            warnings.simplefilter("ignore")
            return MagEditPipeline.from_pretrained(name, device=where, dtype=kind)
    except hub.WeightsUnavailable:
        raise  # its message is whole: what is missing and the way forward
    except (OSError, ValueError) as error:
        # A folder or download that is not a loadable SD v1.x model: the library's own words.
        raise InputError(
            "model",
            f"cannot load the model '{name}' ({_reason(error)}); give a local diffusers SD v1.x "
            "folder ({model} /local/folder), or try the tool offline with random weights ({tiny})",
        ) from None


def sources(
    model: str | None, sam_model: str | None, sam_checkpoint: str | None, tiny: bool
) -> dict[str, str]:
    """Where the loaded models' files are: {"SD model": folder, "SAM": file}, for a report."""
    if tiny:
        return {"models": "random weights built from configs (magedit.tiny)"}
    from magedit import hub
    from magedit.config import DEFAULT_SAM_MODEL
    from magedit.segment import checkpoint_path

    name = model or default_model()
    folder = Path(name).expanduser() if Path(name).expanduser().is_dir() else None
    if folder is None:
        folder = hub.cached_snapshot(name)
    found = {"SD model": f"{name} ({folder})" if folder else name}
    try:
        found["SAM"] = str(checkpoint_path(sam_model or DEFAULT_SAM_MODEL, sam_checkpoint))
    except (OSError, ValueError) as error:
        found["SAM"] = f"not found ({one_line(error)})"
    return found


def model_source(name: str) -> str:
    """An SD model's local folder (checked to exist) or Hub id (checked to be cached or within
    reach: offline this answers in a second, before torch and diffusers are imported). Raises
    FileNotFoundError / ``hub.WeightsUnavailable`` naming the way forward."""
    from magedit import hub

    path = Path(name).expanduser()
    if hub.is_local(name) and not path.is_dir():
        raise MissingFile(
            "model",
            f"{{model}}: no folder '{name}'; give a diffusers SD v1.x model folder, or try the "
            "tool offline with random weights ({tiny})",
        )
    if path.is_dir():
        return str(path)
    try:
        hub.check_available(name)
    except hub.WeightsUnavailable as error:
        raise hub.WeightsUnavailable(f"{error.template}: {hub.WAYS_FORWARD}") from None
    return name


def load_tokenizer(model: str | None = None, tiny: bool = False) -> Any:
    """The model's tokenizer alone, when it is on this machine (``tiny``: CLIP's, shipped), for
    checking the prompts and words in a second before the model loads; None when it is not
    here yet (the model's load then fetches it or says why it cannot)."""
    from magedit import hub
    from magedit.tokenizer import clip_tokenizer, thread_safe

    if tiny:
        return clip_tokenizer()
    name = model or default_model()
    folder = Path(name).expanduser()
    if not folder.is_dir():
        folder = None if hub.is_local(name) else hub.cached_snapshot(name)
    if folder is None or not (folder / "tokenizer").is_dir():
        return None
    quiet_libraries()
    from transformers import CLIPTokenizer

    try:
        return thread_safe(CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"))
    except (OSError, ValueError):  # not a tokenizer after all: the model's load says so
        return None


@functools.lru_cache(maxsize=2)
def load_segmenter(
    model_type: str | None = None,
    checkpoint: str | None = None,
    device: str | None = None,
    dtype: str = "auto",
    tiny: bool = False,
) -> Segmenter:
    """Segment Anything (``model_type`` of ``config.SAM_MODEL_TYPES``, default vit_b) from a local
    ``checkpoint`` or the Hub, or tiny random weights with ``tiny``; once per process for these
    arguments.

    Raises FileNotFoundError / ValueError with the way out (``--sam-checkpoint`` or ``--tiny``)
    when the checkpoint cannot be found or downloaded.
    """
    from magedit.config import DEFAULT_SAM_MODEL
    from magedit.segment import Segmenter

    where = torch_device(device)
    if tiny:
        if checkpoint:
            raise InputError(
                "sam_checkpoint",
                "{sam_checkpoint} does not go with {tiny} (random weights for every model)",
            )
        return Segmenter.tiny(device=where)
    kind = None if dtype == "auto" else torch_dtype(dtype, where)
    return Segmenter.from_pretrained(
        model_type or DEFAULT_SAM_MODEL, checkpoint, device=where, dtype=kind
    )


@functools.lru_cache(maxsize=4)
def report_clip(tiny: bool = False, device: str = "cpu") -> tuple[Any, str]:
    """The CLIP scorer of the edit reports (``report.measure``), once per process: (scorer, "")
    when CLIP ViT-L/14 is on this machine ($MAGEDIT_CLIP_MODEL: another id or a local folder),
    else (None, why). Never downloads: a report must not fetch 1.7 GB behind a visitor's back.
    With ``tiny`` there is none: a random-weight CLIP's score would mean nothing."""
    import os

    from magedit import hub
    from magedit.evaluate import CLIP_MODEL, ClipScorer

    if tiny:
        return (
            None,
            "the offline demo's models have random weights, so a CLIP score would mean nothing",
        )
    name = os.environ.get("MAGEDIT_CLIP_MODEL") or CLIP_MODEL
    folder = Path(name).expanduser()
    if not folder.is_dir():
        folder = None if hub.is_local(name) else hub.cached_snapshot(name)
    if folder is None:
        return None, (
            f"CLIP ({name}) is not on this machine: download it once into the Hugging Face cache "
            "(or set MAGEDIT_CLIP_MODEL to a local folder) to see the CLIP scores"
        )
    quiet_libraries()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ClipScorer.from_pretrained(str(folder), device), ""
    except (OSError, ValueError) as error:
        return None, f"CLIP ({name}) could not be loaded ({_reason(error)})"


@functools.lru_cache(maxsize=2)
def load_metrics(
    clip: str | None = None, dino: str | None = None, device: str = "cpu", tiny: bool = False
) -> Metrics:
    """CLIP and DINO for the benchmark's metrics (``evaluate.Metrics``), once per process for
    these arguments; a load failure names the way out."""
    from magedit.evaluate import CLIP_MODEL, DINO_MODEL, Metrics

    if tiny:
        return Metrics.tiny(device)
    names = (clip or CLIP_MODEL, dino or DINO_MODEL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Metrics.from_pretrained(*names, device=device)
    except (OSError, ValueError) as error:
        raise InputError(
            "clip_model",
            f"cannot load the metric models {names[0]} / {names[1]} ({_reason(error)}); without "
            "network they must already be in the Hugging Face cache: give local folders "
            "({clip_model} / {dino_model} /local/folder), or try the benchmark offline with "
            "random weights ({tiny})",
        ) from None
