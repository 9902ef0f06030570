"""The benchmark runner behind ``magedit bench``: every method on every item of a dataset, the
metrics of ``magedit.evaluate``, a CSV, a Markdown table in the layout of the paper's Table 1 and
a contact sheet. Resumable; sharded over processes under ``accelerate launch``. (About 700
lines: the dataset format, resuming and merging are each a part of one run.)

Dataset format (MAG-Bench's annotations, appendix C.1 and Fig. 9): a folder with the images, the
masks and ``prompts.jsonl``, one JSON object per line::

    {"id": "sofa", "image": "images/sofa.jpg", "mask": "masks/sofa.png",
     "source": "a room with a red sofa", "target": "a room with a green sofa",
     "words": ["green"], "type": "color", "negative_word": null, "phrase": "green sofa"}

``image``/``mask`` are paths relative to the folder; ``type`` is color, texture or object (the
preset used); ``id`` (default: the image's file stem), ``words`` (default: the words the target
adds), ``negative_word`` and ``phrase`` (default: the edit words and the noun after them) are
optional.

Outputs in ``--out``: ``images/<method>/<id>.png`` (the composited edit), ``results.csv`` (one row
per item and method), ``table.md`` and ``contact_sheet.png`` (pages ``contact_sheet-2.png``... for
more than ``SHEET_ROWS`` items). Every file is written to a temp file and renamed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from magedit import config as engine_config
from magedit import images, piebench, report
from magedit.config import EditConfig, config_from
from magedit.dataset import Item, default_assets
from magedit.errors import InputError, MissingFile
from magedit.files import write_bytes, write_image

METHODS: dict[str, str] = {
    "magedit-tr": "MAG-Edit, token-ratio constraint (Eq. 5)",
    "magedit-sr": "MAG-Edit, spatial-ratio constraint (Eq. 6)",
    "p2p-blend": "prompt-to-prompt with latent blend (MAX_IT = 0)",
    "p2p": "prompt-to-prompt without latent blend (MAX_IT = 0, blend_steps = 0)",
}
EDIT_TYPES = ("color", "texture", "object")
PROMPTS_FILE = "prompts.jsonl"
SHEET_ROWS = 25  # items per contact-sheet page
THUMB = 160  # contact-sheet thumbnail height in pixels
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# Settings a resumed run must share with the rows it keeps.
RUN_KEYS = (
    "steps",
    "resolution",
    "inversion",
    "iterations",
    "model",
    "clip_model",
    "dino_model",
)
# The edit report's figures (report.EditReport) each row carries: outside the mask for the
# composited result and the raw decode, and the edit words' in-mask ratio before and after MAG.
REPORT_COLUMNS = (
    "psnr_outside",
    "ssim_outside",
    "changed_outside",
    "raw_psnr_outside",
    "raw_ssim_outside",
    "raw_changed_outside",
    "ratio_before",
    "ratio_after",
)
FIELDS = [
    "item",
    "method",
    "type",
    "size",
    "coverage",
    "clip",
    "dino",
    *REPORT_COLUMNS,
    "attn_in_mask",
    "constraint_ratio",
    *piebench.METRICS,  # empty for our own format
    *piebench.RAW_METRICS,
    "category",
    "phrase",
    "source",
    "target",
    "words",
    "negative_word",
    "output",
    *RUN_KEYS,
    "config",
    "device",
    "dtype",
    "inversion_cached",
    "inversion_s",
    "edit_s",
    "decode_s",
    "metrics_s",
    "rank",
    "finished",
]


# ----------------------------------------------------------------------------------------------
# Dataset


def _check_method_names(methods: Sequence[str]) -> list[str]:
    chosen = [m.strip() for m in methods if m.strip()]
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        raise ValueError(
            f"unknown method(s) {unknown or chosen}; choose from {', '.join(METHODS)} "
            "(comma-separated)"
        )
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"methods {chosen} name one method twice; list each once")
    return chosen


def parse_methods(text: str) -> list[str]:
    """``"magedit-tr,p2p"`` -> ``["magedit-tr", "p2p"]``; ValueError naming unknown methods."""
    return _check_method_names(text.split(","))


def method_config(
    method: str,
    edit_type: str,
    steps: int,
    resolution: int,
    inversion: str,
    iterations: int | None = None,
) -> EditConfig:
    """The settings of ``method`` for an edit of ``edit_type``: the type's preset (its tau1),
    rescaled to ``steps``, then the method's constraint (with MAX_IT = ``iterations``, default
    the paper's 15), or MAX_IT = 0 (and no latent blend for p2p)."""
    changes: dict[str, Any] = {"resolution": resolution, "inversion": inversion}
    if iterations is not None and method.startswith("magedit"):
        changes["max_iter"] = iterations
    if method == "magedit-tr":
        changes["constraint"] = "token_ratio"
    elif method == "magedit-sr":
        changes["constraint"] = "spatial_ratio"
    elif method in ("p2p-blend", "p2p"):
        changes.update(engine_config.METHODS[method])
    else:
        _check_method_names([method])
    return config_from(edit_type, steps, **changes)


def load_dataset(folder: str | os.PathLike[str]) -> list[Item]:
    """Read and check ``folder/prompts.jsonl``: every line, every file, every id.

    Raises FileNotFoundError/ValueError naming the line and the fix.
    """
    folder = Path(folder).expanduser()
    path = folder / PROMPTS_FILE
    if not path.is_file():
        raise MissingFile(
            "dataset",
            f"no {PROMPTS_FILE} in '{folder}'; a dataset is a folder with images, masks and "
            f"{PROMPTS_FILE} (write an example with {{make_sample}} DIR)",
        )
    items: list[Item] = []
    seen: dict[str, int] = {}
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        where = f"{path} line {number}"
        try:
            entry = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{where} is not valid JSON ({error.msg} at column {error.colno}); write one "
                "JSON object per line"
            ) from None
        item = _item(entry, folder, where, number)
        if item.id in seen:
            raise ValueError(
                f"{where}: id '{item.id}' is also on line {seen[item.id]}; give each item its "
                "own 'id'"
            )
        seen[item.id] = number
        items.append(item)
    if not items:
        raise ValueError(f"{path} holds no item; write one JSON object per line")
    return items


def _item(entry: Any, folder: Path, where: str, number: int) -> Item:
    if not isinstance(entry, dict):
        raise ValueError(f'{where} is not a JSON object; write {{"image": ..., ...}}')
    for key in ("image", "mask", "source", "target", "type"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise ValueError(f"{where}: '{key}' is missing or not a text; add it")
    if entry["type"] not in EDIT_TYPES:
        raise ValueError(
            f"{where}: type '{entry['type']}' is unknown; use one of {', '.join(EDIT_TYPES)}"
        )
    words = entry.get("words") or []
    if isinstance(words, str) or not all(isinstance(w, str) for w in words):
        raise ValueError(f"{where}: 'words' must be a list of texts, e.g. [\"green\"]")
    for key in ("negative_word", "phrase"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            raise ValueError(f"{where}: '{key}' must be a text or null")
    files = {}
    for key in ("image", "mask"):
        file = (folder / entry[key]).resolve()
        if not file.is_file():
            raise FileNotFoundError(f"{where}: {key} '{entry[key]}' is not a file in '{folder}'")
        files[key] = file
    item_id = str(entry.get("id") or Path(entry["image"]).stem)
    if not _ID.match(item_id):
        raise ValueError(
            f"{where}: id '{item_id}' cannot name a file; give an 'id' of letters, digits, '.', "
            "'_' or '-'"
        )
    return Item(
        id=item_id,
        image=files["image"],
        mask=files["mask"],
        source=entry["source"],
        target=entry["target"],
        words=tuple(words),
        type=entry["type"],
        negative_word=entry.get("negative_word") or None,
        phrase=entry.get("phrase") or None,
        line=number,
    )


def make_sample(out: str | os.PathLike[str], assets: str | os.PathLike[str] | None = None) -> Path:
    """Write a sample dataset from ``assets/examples.json`` into ``out``; return prompts.jsonl.

    examples.json is a list of ``{"name", "image", "mask", "source", "target", "words",
    "preset", "negative_word", "phrase"}`` with paths relative to the assets folder.
    """
    assets = Path(assets) if assets is not None else default_assets()
    index = assets / "examples.json"
    if not index.is_file():
        raise FileNotFoundError(
            f"no examples.json in '{assets}'; run from a checkout of the repository, whose "
            "assets/ folder holds the examples"
        )
    examples = json.loads(index.read_text(encoding="utf-8"))
    if not isinstance(examples, list) or not examples:
        raise ValueError(f"{index} must be a JSON list of examples")
    out = Path(out).expanduser()
    if (out / PROMPTS_FILE).exists():
        raise FileExistsError(f"'{out}' already holds a {PROMPTS_FILE}; choose an empty folder")
    lines = []
    for example in examples:
        name = str(example.get("name", ""))
        if not _ID.match(name):
            raise ValueError(f"{index}: example name '{name}' cannot name a file")
        entry: dict[str, Any] = {"id": name}
        for key, sub in (("image", "images"), ("mask", "masks")):
            source = assets / example[key]
            if not source.is_file():
                raise FileNotFoundError(f"{index}: {key} '{example[key]}' of '{name}' is missing")
            target = out / sub / f"{name}{source.suffix.lower()}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            entry[key] = f"{sub}/{target.name}"
        entry.update(
            source=example["source"],
            target=example["target"],
            words=list(example.get("words") or []),
            type=example["preset"],
        )
        for key in ("negative_word", "phrase"):
            if example.get(key):
                entry[key] = example[key]
        lines.append(json.dumps(entry, ensure_ascii=False))
    path = out / PROMPTS_FILE
    write_bytes(path, ("\n".join(lines) + "\n").encode())
    load_dataset(out)  # the sample must be a valid dataset
    return path


# ----------------------------------------------------------------------------------------------
# Sharding and result files


def shard(items: Sequence[Any], rank: int, world: int) -> list[Any]:
    """Process ``rank`` of ``world`` takes ``items[rank::world]``: together the shards hold every
    item exactly once, and their sizes differ by at most one."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} of world size {world}: need 0 <= rank < world size")
    return list(items[rank::world])


def process_state(device: str | None = None) -> tuple[int, int, Any]:
    """(rank, world size, accelerate PartialState or None).

    Under ``accelerate launch`` (or torchrun: WORLD_SIZE > 1) the process group is joined through
    accelerate's PartialState: NCCL on GPUs, gloo on CPUs (``cpu=True``; without it accelerate
    leaves CPU processes unconnected). Should accelerate still see one process, RANK/WORLD_SIZE
    decide the shard and the results are merged by a later single-process run.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, None
    import torch
    from accelerate import PartialState

    cpu = not torch.cuda.is_available() or (device or "").startswith("cpu")
    state = PartialState(cpu=cpu)
    if state.num_processes == world:
        return state.process_index, state.num_processes, state
    return int(os.environ.get("RANK", "0")), world, None


def write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write rows as CSV (columns ``FIELDS``) atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_bytes(path, buffer.getvalue().encode())


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a results CSV (an empty list when it does not exist)."""
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _parts(out: Path) -> list[Path]:
    return sorted((out / "parts").glob("rank-*.csv"))


def finished_rows(out: Path) -> dict[tuple[str, str], dict[str, str]]:
    """Rows of finished (item, method) pairs: in results.csv or a process's part file, with their
    image written. Part files win over results.csv (they are newer)."""
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for path in [out / "results.csv", *_parts(out)]:
        for row in read_rows(path):
            if (out / row["output"]).is_file():
                rows[(row["item"], row["method"])] = row
    return rows


def merge_results(out: str | os.PathLike[str], order: Sequence[Item] | None = None) -> list[dict]:
    """Merge results.csv and every process's part file into results.csv (one row per item and
    method, in dataset order when ``order`` is given); remove the part files."""
    out = Path(out)
    rows = finished_rows(out)
    position = {item.id: i for i, item in enumerate(order or [])}
    method_position = {m: i for i, m in enumerate(METHODS)}
    merged = sorted(
        rows.values(),
        key=lambda r: (
            position.get(r["item"], len(position)),
            r["item"],
            method_position.get(r["method"], 99),
        ),
    )
    write_rows(out / "results.csv", merged)
    for part in _parts(out):
        part.unlink()
    return merged


# ----------------------------------------------------------------------------------------------
# Table and contact sheet


def _number(value: str | float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _psnr_cell(values: Sequence[float]) -> str:
    exact = sum(1 for v in values if v == math.inf)
    if values and exact == len(values):
        return "exact"
    mean = _mean(values)
    return f"{mean:.2f}" + (f" ({exact} exact)" if exact else "")


def markdown_table(rows: Sequence[dict[str, str]], title: str = "MAG-Edit benchmark") -> str:
    """Table 1's layout: mean local CLIP score (x100, higher is better) and DINO-ViT distance
    (lower is better) per method, then split by edit type and by mask size."""
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    methods += sorted({r["method"] for r in rows} - set(methods))

    def of(method: str, key: str | None = None, value: str | None = None):
        return [r for r in rows if r["method"] == method and (key is None or r[key] == value)]

    items = len({r["item"] for r in rows})
    lines = [f"# {title}", "", f"{items} items, {len(rows)} edits."]
    if rows:
        first = rows[0]
        settings = ", ".join(f"{k} {first[k]}" for k in RUN_KEYS)
        lines += ["", f"Settings: {settings}."]
    lines += [
        "",
        "| Method | CLIP score (↑) | DINO-ViT distance (↓) | PSNR outside (dB) | SSIM outside "
        "| Attention in mask | Edits |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        r = of(m)
        clip, dino = _mean([_number(x["clip"]) for x in r]), _mean([_number(x["dino"]) for x in r])
        ssim = _mean([_number(x["ssim_outside"]) for x in r])
        attn = _mean([_number(x["attn_in_mask"]) for x in r])
        psnr = _psnr_cell([_number(x["psnr_outside"]) for x in r])
        lines.append(
            f"| {m} | {clip:.2f} | {dino:.4f} | {psnr} | {ssim:.4f} | {attn:.3f} | {len(r)} |"
        )
    splits = (
        ("type", "By edit type", list(EDIT_TYPES)),
        (
            "size",
            "By mask size (small: < 5% of the image, medium: 5-20%, large: >= 20%)",
            ["small", "medium", "large"],
        ),
    )
    for key, heading, groups in splits:
        lines += [
            "",
            f"## {heading}: CLIP score (↑) / DINO-ViT distance (↓)",
            "",
            "| Method | " + " | ".join(groups) + " |",
            "|---|" + "---|" * len(groups),
        ]
        for m in methods:
            cells = []
            for group in groups:
                r = of(m, key, group)
                if not r:
                    cells.append("-")
                    continue
                clip = _mean([_number(x["clip"]) for x in r])
                dino = _mean([_number(x["dino"]) for x in r])
                cells.append(f"{clip:.2f} / {dino:.4f} (n={len(r)})")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _thumb(image: np.ndarray, width: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, THUMB), Image.Resampling.LANCZOS))


def contact_sheet(items: Sequence[Item], methods: Sequence[str], out: Path) -> list[Path]:
    """PNG pages, one row per item: source | mask outline | each method's edit (blank when
    missing), a header naming the columns; returns the pages written."""
    from PIL import Image, ImageDraw

    pages = []
    for start in range(0, len(items), SHEET_ROWS):
        rows, width = [], 0
        for item in items[start : start + SHEET_ROWS]:
            source = images.load_image(item.image)
            mask = images.load_mask(item.mask, size=source.shape[:2])
            w = max(1, round(THUMB * source.shape[1] / source.shape[0]))
            cells = [_thumb(source, w), _thumb(images.mask_overlay(source, mask), w)]
            for method in methods:
                path = out / "images" / method / f"{item.id}.png"
                edit = images.load_image(path) if path.is_file() else np.zeros_like(source)
                cells.append(_thumb(edit, w))
            rows.append((item.id, cells))
            width = max(width, w)
        columns = ["source", "mask", *methods]
        gap, header = 4, 18
        sheet = Image.new(
            "RGB",
            (len(columns) * (width + gap) + gap, header + len(rows) * (THUMB + header)),
            "white",
        )
        draw = ImageDraw.Draw(sheet)
        for c, name in enumerate(columns):
            draw.text((gap + c * (width + gap), 3), name, fill="black")
        for r, (item_id, cells) in enumerate(rows):
            top = header + r * (THUMB + header)
            draw.text((gap, top + 2), item_id, fill="black")
            for c, cell in enumerate(cells):
                sheet.paste(Image.fromarray(cell), (gap + c * (width + gap), top + header - 2))
        number = start // SHEET_ROWS + 1
        path = out / ("contact_sheet.png" if number == 1 else f"contact_sheet-{number}.png")
        buffer = io.BytesIO()
        sheet.save(buffer, format="PNG")
        write_bytes(path, buffer.getvalue())
        pages.append(path)
    return pages


# ----------------------------------------------------------------------------------------------
# The run


@dataclass
class BenchSummary:
    """What one process did: edits made and skipped (finished before), rows of its shard."""

    made: int
    skipped: int
    rank: int
    world: int
    outputs: list[Path]


def _prepare(pipe, item: Item, config: EditConfig):
    """The item's edit under ``config``, checked (``MagEditPipeline.prepare``)."""
    return pipe.prepare(
        item.image,
        item.source,
        item.target,
        item.mask,
        list(item.words) or None,
        negative_word=item.negative_word,
        config=config,
    )


def run_bench(
    dataset: str | os.PathLike[str],
    out: str | os.PathLike[str],
    methods: Sequence[str],
    *,
    pipe,
    metrics,
    steps: int,
    resolution: int,
    inversion: str = "null_text",
    iterations: int | None = None,
    model: str = "",
    limit: int | None = None,
    rank: int | None = None,
    world: int | None = None,
    state: Any = None,
    merge: bool = True,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
    format: str = "mag",
) -> BenchSummary:
    """Run ``methods`` on this process's shard of the dataset; resume from ``out``.

    ``pipe``: a MagEditPipeline; ``metrics``: an ``evaluate.Metrics``, or for ``format``
    "pie-bench" a ``piebench.PieMetrics`` (each edit gets PIE-Bench's metrics and ours).
    ``rank``/``world`` default to ``state``'s (accelerate) or 0/1. With ``merge`` the main process
    merges the part files into results.csv and writes table.md and the contact sheet once every
    process is done (with ``state``: after ``wait_for_everyone``). A PIE-Bench item whose mask or
    prompts the engine refuses (e.g. a whole-image style edit) is left out and listed, with the
    reason, in skipped.txt; in our own format it stops the run before any work.
    """
    from tqdm import tqdm

    from magedit.evaluate import attention_in_mask, crop, size_bucket, target_phrase
    from magedit.pipeline import EditResult
    from magedit.prompts import STOPWORDS

    log = log or (lambda text: print(text, file=sys.stderr))
    methods = _check_method_names(methods)
    out = Path(out).expanduser()
    pie = format == "pie-bench"
    items = piebench.items(piebench.load(dataset)) if pie else load_dataset(dataset)
    items = items[:limit] if limit else items
    if rank is None or world is None:
        rank, world = (state.process_index, state.num_processes) if state else (0, 1)
    mine = shard(items, rank, world)
    settings = (steps, resolution, inversion, iterations)  # method_config's, after the type
    run = {
        "steps": str(steps),
        "resolution": str(resolution),
        "inversion": inversion,
        "iterations": "preset" if iterations is None else str(iterations),
        "model": model or pipe.model_id,
        "clip_model": metrics.clip.name,
        "dino_model": metrics.dino.name,
    }
    # 1. Finished work: kept only when made with the same settings; an item whose prompts or
    #    type changed in the dataset since is edited again.
    current = {i.id: (i.source, i.target, i.type) for i in items}
    finished = {
        key: row
        for key, row in finished_rows(out).items()
        if current.get(key[0], (row["source"], row["target"], row["type"]))
        == (row["source"], row["target"], row["type"])
    }
    for row in finished.values():
        differ = [k for k in RUN_KEYS if row.get(k) != run[k]]
        if differ:
            raise InputError(
                "out",
                f"'{out}' holds results made with other settings ("
                + ", ".join(f"{k} {row.get(k)} not {run[k]}" for k in differ)
                + "); use another {out} folder or the same settings",
            )
    part = out / "parts" / f"rank-{rank}.csv"
    rows = [finished[k] for k in finished if k[0] in {i.id for i in mine}]
    todo = [(i, m) for i in mine for m in methods if (i.id, m) not in finished]

    # 2. Check every edit of the shard before any inversion, so a bad item stops the run
    #    before hours of work rather than in the middle. The prepared edits hold the images and
    #    a shard may be large: each is prepared again when its turn comes.
    phrases: dict[str, str] = {}
    refused: dict[str, str] = {}
    for item in mine:
        if all((item.id, m) in finished for m in methods):
            continue
        where = f"{item.id} ({piebench.MAPPING_FILE if pie else 'prompts.jsonl line'} " + (
            f"entry {item.line})" if pie else f"{item.line})"
        )
        try:
            for method in methods:
                prepared = _prepare(pipe, item, method_config(method, item.type, *settings))
            phrase = item.phrase or target_phrase(
                item.target, prepared.words[0], STOPWORDS, noun=item.type != "object"
            )
        except ValueError as error:
            if not pie:
                raise ValueError(f"item {where}: {error}") from None
            refused[item.id] = " ".join(str(error).split())
            log(f"skipping item {where}: {refused[item.id]}")
            continue
        phrases[item.id] = phrase
    if pie:
        _write_skipped(out, rank, refused)
    mine = [item for item in mine if item.id not in refused]
    todo = [(i, m) for i, m in todo if i.id not in refused]

    # 3. Edit and measure, one row at a time, each written at once (an interruption loses at
    #    most the edit in progress).
    made = 0
    bar = tqdm(
        total=len(mine) * len(methods),
        initial=len(mine) * len(methods) - len(todo),
        desc="bench" if world == 1 else f"bench {rank + 1}/{world}",
        unit="edit",
        disable=quiet,
        file=sys.stderr,
        dynamic_ncols=True,
        position=rank,
    )
    with bar:
        for item in mine:
            todo_here = [m for m in methods if (item.id, m) not in finished]
            if not todo_here:
                continue
            phrase = phrases[item.id]
            for method in todo_here:
                bar.set_postfix_str(f"{item.id} {method}")
                config = method_config(method, item.type, *settings)
                prepared = _prepare(pipe, item, config)
                image, mask = prepared.original, prepared.mask
                in_mask, ratio, result = [], math.nan, None
                for event in pipe.edit(prepared, pipe.invert(prepared)):
                    if isinstance(event, EditResult):
                        result = event
                    elif event.phase == "denoise":
                        in_mask.append(attention_in_mask(event.attention, mask))
                        ratio = event.in_mask_ratio
                output = Path("images") / method / f"{item.id}.png"
                write_image(out / output, result.composited)
                start = time.perf_counter()
                ours = metrics.metrics if pie else metrics
                # The edit's report (report.measure, as the page and the command line show it)
                # gives the local CLIP score and every outside-the-mask figure; DINO is bench's.
                evidence = report.measure(result, image, clip=ours.clip, phrase=phrase)
                box = images.mask_bbox(mask)
                scores = {
                    "clip": evidence.clip_local,
                    "dino": ours.dino.distance(crop(image, box), crop(result.composited, box)),
                    **{name: getattr(evidence, name) for name in REPORT_COLUMNS},
                }
                if pie:
                    scores.update(
                        metrics.measure(
                            image, result.composited, item.eval_mask, item.source, item.target
                        )
                    )
                    raw = images.resize_image(result.image, image.shape[:2])  # 512 x 512: as is
                    raw_scores = metrics.measure(
                        image, raw, item.eval_mask, item.source, item.target
                    )
                    scores.update({piebench.RAW + k: v for k, v in raw_scores.items()})
                coverage = float(mask.mean())
                row = {
                    "item": item.id,
                    "method": method,
                    "type": item.type,
                    "size": size_bucket(coverage),
                    "coverage": f"{coverage:.5f}",
                    **{k: repr(float(v)) for k, v in scores.items()},
                    "category": item.category,
                    "attn_in_mask": repr(float(np.mean(in_mask))),
                    "constraint_ratio": repr(float(ratio)),
                    "phrase": phrase,
                    "source": item.source,
                    "target": item.target,
                    "words": json.dumps(result.words[0]),
                    "negative_word": item.negative_word or "",
                    "output": output.as_posix(),
                    **run,
                    "config": json.dumps(config.to_dict(), sort_keys=True),
                    "device": str(pipe.device),
                    "dtype": str(pipe.dtype).removeprefix("torch."),
                    "inversion_cached": str(result.inversion_cached),
                    "inversion_s": f"{result.timings['inversion']:.3f}",
                    "edit_s": f"{result.timings['editing']:.3f}",
                    "decode_s": f"{result.timings['decode']:.3f}",
                    "metrics_s": f"{time.perf_counter() - start:.3f}",
                    "rank": str(rank),
                    "finished": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                }
                rows.append(row)
                write_rows(part, rows)
                made += 1
                bar.update(1)

    # 4. Merge (main process, once every process is done), table, contact sheet.
    outputs: list[Path] = []
    if state is not None and world > 1:
        state.wait_for_everyone()
    if merge and rank == 0 and (world == 1 or state is not None):
        outputs = finish(out, items, methods, format, getattr(metrics, "skipped", None))
    elif merge and rank == 0:
        log(
            f"the {world} processes are not connected, so nobody merges their results: when all "
            "are done, run the same command in one process (it skips the finished edits and "
            "merges)"
        )
    log(
        f"{'' if world == 1 else f'process {rank + 1}/{world}: '}{made} edits made, "
        f"{len(mine) * len(methods) - len(todo)} skipped (already finished)"
    )
    return BenchSummary(made, len(mine) * len(methods) - len(todo), rank, world, outputs)


def finish(
    out: Path,
    items: Sequence[Item],
    methods: Sequence[str],
    format: str = "mag",
    not_measured: dict[str, str] | None = None,
) -> list[Path]:
    """Merge the part files into results.csv, write table.md (PIE-Bench's layout for its format,
    with the metrics ``not_measured`` and why) and the contact sheet(s)."""
    out = Path(out)
    rows = merge_results(out, items)
    if format == "pie-bench":
        skipped = _read_skipped(out)
        made = {row["item"] for row in rows}
        kept = [item for item in items if item.id not in skipped or item.id in made]
        notes = dict(not_measured or {})
        if skipped:
            notes["items"] = (
                f"{len(skipped)} refused by the engine (listed with why in skipped.txt)"
            )
        table = piebench.markdown_table(rows, notes)
    else:
        kept, table = list(items), markdown_table(rows)
    write_bytes(out / "table.md", table.encode())
    sheets = contact_sheet(kept, list(methods), out)
    return [out / "results.csv", out / "table.md", *sheets]


def _write_skipped(out: Path, rank: int, refused: dict[str, str]) -> None:
    """This process's refused items, ``id<TAB>reason`` per line (parts/skipped-<rank>.txt)."""
    lines = "".join(f"{key}\t{reason}\n" for key, reason in refused.items())
    write_bytes(out / "parts" / f"skipped-{rank}.txt", lines.encode())


def _read_skipped(out: Path) -> dict[str, str]:
    """This run's refused items, from every process's part file, written as skipped.txt (the
    part files removed). An earlier run's list is not kept: every run checks every item that
    has work left, so an item accepted since is no longer listed."""
    skipped: dict[str, str] = {}
    for path in sorted((out / "parts").glob("skipped-*.txt")):
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                key, _, reason = line.partition("\t")
                skipped[key] = reason
    write_bytes(out / "skipped.txt", "".join(f"{k}\t{v}\n" for k, v in skipped.items()).encode())
    for path in (out / "parts").glob("skipped-*.txt"):
        path.unlink()
    return skipped
