"""`magedit bench` on a sample dataset with --tiny (CPU, offline): dataset checks, rows, table,
contact sheet, resume after an interruption, shards and their merge."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import scene, scene_mask
from PIL import Image

from magedit import bench, cli, loading
from magedit.bench import METHODS
from magedit.pipeline import MagEditPipeline

# Small and quick: 64 px (2x2 loss maps), 2 steps, 1 MAG iteration, plain DDIM inversion.
FAST = ["--tiny", "--steps", "5", "--resolution", "128", "--iterations", "1"]
FAST += ["--inversion", "ddim", "--quiet"]
EXAMPLES = [
    ("sofa", (96, 128), "color", "a photo of a red sofa", "a photo of a green sofa", ["green"]),
    ("rug", (128, 96), "texture", "a photo of a plain rug", "a photo of a plaid rug", ["plaid"]),
    ("pet", (96, 96), "object", "a photo of a cat on a bed", "a photo of a dog on a bed", ["dog"]),
]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """An assets folder in the format of the repository's assets/examples.json."""
    folder = tmp_path_factory.mktemp("assets")
    examples = []
    for name, (h, w), kind, source, target, words in EXAMPLES:
        Image.fromarray(scene(h, w)).save(folder / f"{name}.png")
        Image.fromarray(scene_mask(h, w).astype(np.uint8) * 255).save(folder / f"{name}-mask.png")
        examples.append(
            {
                "name": name,
                "image": f"{name}.png",
                "mask": f"{name}-mask.png",
                "source": source,
                "target": target,
                "words": words,
                "preset": kind,
                "negative_word": "red" if name == "sofa" else None,
                "phrase": "plaid rug" if name == "rug" else None,
            }
        )
    (folder / "examples.json").write_text(json.dumps(examples))
    return folder


@pytest.fixture(scope="module")
def dataset(assets, tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "sample"
    bench.make_sample(folder, assets)
    return folder


@pytest.fixture(scope="module")
def models():
    return loading.load_pipeline(None, None, "auto", True), loading.load_metrics(
        None, None, "cpu", True
    )


def rows_of(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ----------------------------------------------------------------------------------------------
# Pure parts


def test_shards_split_items_without_overlap_or_loss():
    for count in (0, 1, 5, 10, 11):
        items = list(range(count))
        for world in (1, 2, 3, 4, 8):
            shards = [bench.shard(items, rank, world) for rank in range(world)]
            flat = [i for s in shards for i in s]
            assert sorted(flat) == items  # nothing lost, nothing twice
            sizes = [len(s) for s in shards]
            assert max(sizes) - min(sizes) <= 1
    assert bench.shard(list("abcdefg"), 1, 3) == ["b", "e"]
    with pytest.raises(ValueError, match="0 <= rank < world size"):
        bench.shard([1, 2], 2, 2)


def test_method_settings():
    tr = bench.method_config("magedit-tr", "object", 50, 512, "null_text")
    sr = bench.method_config("magedit-sr", "color", 50, 512, "null_text")
    blend = bench.method_config("p2p-blend", "color", 50, 512, "null_text")
    p2p = bench.method_config("p2p", "color", 50, 512, "null_text")
    assert (tr.constraint, tr.tau1, tr.max_iter) == ("token_ratio", 40, 15)
    assert (sr.constraint, sr.tau1, sr.max_iter) == ("spatial_ratio", 10, 15)
    assert (blend.max_iter, blend.blend_steps) == (0, 15)
    assert (p2p.max_iter, p2p.blend_steps) == (0, 0)
    assert sum(blend.blend_at(i) for i in range(50)) == 15
    assert not any(p2p.blend_at(i) or p2p.guide_at(i) for i in range(50))
    short = bench.method_config("magedit-tr", "color", 10, 256, "ddim", iterations=2)
    assert (short.steps, short.tau1, short.blend_steps, short.max_iter) == (10, 2, 3, 2)
    assert (short.resolution, short.inversion) == (256, "ddim")
    assert bench.method_config("p2p", "color", 10, 256, "ddim", iterations=2).max_iter == 0
    assert bench.parse_methods("p2p, magedit-tr") == ["p2p", "magedit-tr"]
    with pytest.raises(ValueError, match="unknown method.*'sdedit'.*magedit-tr, magedit-sr"):
        bench.parse_methods("p2p,sdedit")


def test_sample_dataset_is_written_from_the_assets(dataset):
    lines = (dataset / "prompts.jsonl").read_text().splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert first == {
        "id": "sofa",
        "image": "images/sofa.png",
        "mask": "masks/sofa.png",
        "source": "a photo of a red sofa",
        "target": "a photo of a green sofa",
        "words": ["green"],
        "type": "color",
        "negative_word": "red",
    }
    items = bench.load_dataset(dataset)
    assert [i.id for i in items] == ["sofa", "rug", "pet"]
    assert [i.type for i in items] == ["color", "texture", "object"]
    assert items[1].phrase == "plaid rug"
    assert items[0].image.read_bytes() == (dataset / "images" / "sofa.png").read_bytes()


def write_dataset(folder: Path, lines: list[str], dataset: Path) -> Path:
    folder.mkdir()
    for sub in ("images", "masks"):
        (folder / sub).symlink_to(dataset / sub)
    (folder / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_bad_datasets_give_readable_errors(dataset, tmp_path, capsys):
    good = (dataset / "prompts.jsonl").read_text().splitlines()[0]
    entry = json.loads(good)
    cases = {
        "json": ([good, '{"image": "images/rug.png",'], "line 2 is not valid JSON"),
        "file": (
            [json.dumps({**entry, "image": "images/gone.png"})],
            "line 1: image 'images/gone.png' is not a file",
        ),
        "type": ([json.dumps({**entry, "type": "style"})], "type 'style' is unknown; use one of"),
        "twice": ([good, good], "id 'sofa' is also on line 1"),
        "key": ([json.dumps({k: v for k, v in entry.items() if k != "target"})], "'target' is"),
        "word": (
            [json.dumps({**entry, "words": ["blue"]})],
            "item sofa (prompts.jsonl line 1): edit word 'blue' is not in the target",
        ),
    }
    for name, (lines, message) in cases.items():
        folder = write_dataset(tmp_path / name, lines, dataset)
        code, out, err = run(capsys, "bench", str(folder), "--out", str(tmp_path / "o"), *FAST)
        assert code == 2, name
        # One error line, last (after the --tiny warning when the models were loaded).
        last = err.splitlines()[-1]
        assert last.startswith("magedit: error: ") and message in last, (name, err)
        assert all(line.startswith("magedit: warning: ") for line in err.splitlines()[:-1])
    code, _, err = run(capsys, "bench", str(tmp_path / "nowhere"), *FAST)
    assert code == 2 and "no prompts.jsonl in" in err and "--make-sample" in err
    code, _, err = run(capsys, "bench", str(dataset), "--methods", "p2p,sdedit", *FAST)
    assert code == 2 and "unknown method(s) ['sdedit']" in err
    code, _, err = run(capsys, "bench", *FAST)
    assert code == 2 and "give a DATASET folder" in err
    code, _, err = run(capsys, "bench", str(dataset), "--steps", "0", *FAST[3:])
    assert code == 2 and "--steps is 0, out of range; give a whole number from 5 to 100" in err
    assert not (tmp_path / "o").exists()  # nothing was run


# ----------------------------------------------------------------------------------------------
# The runner


def test_bench_writes_rows_table_sheet_and_resumes(dataset, tmp_path, capsys, monkeypatch):
    out = tmp_path / "results"
    argv = ["bench", str(dataset), "--out", str(out), *FAST]
    edits: list[str] = []
    real_edit = MagEditPipeline.edit

    def counting_edit(self, prepared, *args, **kwargs):
        edits.append(prepared.target_prompt)
        if len(edits) == 6 and interrupt:
            raise KeyboardInterrupt
        return real_edit(self, prepared, *args, **kwargs)

    monkeypatch.setattr(MagEditPipeline, "edit", counting_edit)

    # 1. Interrupted at the 6th edit: the five finished ones are kept.
    interrupt = True
    code, _, err = run(capsys, *argv)
    assert code == 130 and "interrupted" in err
    assert len(rows_of(out / "parts" / "rank-0.csv")) == 5
    assert not (out / "results.csv").exists()

    # 2. Resumed: only the seven missing edits run.
    interrupt, edits[:] = False, []
    code, stdout, err = run(capsys, *argv)
    assert code == 0, err
    assert len(edits) == 7
    assert "7 edits made, 5 skipped (already finished)" in err
    rows = rows_of(out / "results.csv")
    assert len(rows) == 3 * 4
    assert [(r["item"], r["method"]) for r in rows] == [
        (item, method) for item in ("sofa", "rug", "pet") for method in METHODS
    ]
    assert not list((out / "parts").glob("*.csv"))
    for row in rows:
        assert (out / row["output"]).is_file()
        assert row["psnr_outside"] == "inf"  # pixels outside the mask are the original's
        assert float(row["ssim_outside"]) == 1.0
        assert 0.0 <= float(row["clip"]) <= 100.0
        assert math.isfinite(float(row["dino"])) and float(row["dino"]) >= 0
        assert 0.0 <= float(row["attn_in_mask"]) <= 1.0
        assert row["steps"] == "5" and row["resolution"] == "128" and "seed" not in row
        assert json.loads(row["config"])["steps"] == 5
        assert float(row["edit_s"]) > 0 and float(row["metrics_s"]) > 0
    by = {(r["item"], r["method"]): r for r in rows}
    assert by["sofa", "magedit-tr"]["phrase"] == "green sofa"
    assert by["rug", "p2p"]["phrase"] == "plaid rug"
    assert by["pet", "p2p"]["phrase"] == "dog"
    assert by["sofa", "p2p"]["size"] == "medium"  # the scene's mask covers 1/6 of the image
    assert json.loads(by["pet", "magedit-sr"]["config"])["constraint"] == "spatial_ratio"
    assert json.loads(by["pet", "p2p"]["config"])["blend_steps"] == 0
    assert json.loads(by["pet", "p2p-blend"]["config"])["max_iter"] == 0
    table = (out / "table.md").read_text()
    assert "| Method | CLIP score (↑) | DINO-ViT distance (↓) |" in table
    for method in METHODS:
        assert f"\n| {method} | " in table
    assert "By edit type" in table and "By mask size" in table and "(n=1)" in table
    sheet = Image.open(out / "contact_sheet.png")
    # Three rows of 160 px thumbnails with an 18 px label band each, under an 18 px header;
    # 6 columns (source, mask, 4 methods) as wide as the widest item (128/96 * 160 = 213 px).
    assert sheet.size == (6 * (213 + 4) + 4, 18 + 3 * (160 + 18))
    stamps = {k: r["finished"] for k, r in by.items()}
    mtimes = {r["output"]: (out / r["output"]).stat().st_mtime_ns for r in rows}

    # 3. Run again: nothing to do, nothing rewritten.
    edits[:] = []
    code, _, err = run(capsys, *argv)
    assert code == 0 and edits == []
    assert "0 edits made, 12 skipped" in err
    again = {(r["item"], r["method"]): r["finished"] for r in rows_of(out / "results.csv")}
    assert again == stamps
    assert {p: (out / p).stat().st_mtime_ns for p in mtimes} == mtimes

    # 4. A lost output is made again, alone.
    (out / "images" / "p2p" / "rug.png").unlink()
    code, _, err = run(capsys, *argv)
    assert code == 0 and len(edits) == 1 and "1 edits made, 11 skipped" in err
    after = {(r["item"], r["method"]): r["finished"] for r in rows_of(out / "results.csv")}
    assert after["rug", "p2p"] != stamps["rug", "p2p"]
    assert {k: v for k, v in after.items() if k != ("rug", "p2p")} == {
        k: v for k, v in stamps.items() if k != ("rug", "p2p")
    }

    # 5. An item whose target changed in the dataset is edited again.
    lines = (dataset / "prompts.jsonl").read_text()
    changed = tmp_path / "changed"
    write_dataset(changed, [lines.replace("plaid", "tartan")], dataset)
    edits[:] = []
    code, _, err = run(capsys, "bench", str(changed), "--out", str(out), *FAST)
    assert code == 0 and "4 edits made, 8 skipped" in err
    assert set(edits) == {"a photo of a tartan rug"}

    # 6. Other settings in the same folder are refused rather than mixed in.
    code, _, err = run(capsys, *argv[:-1], "--iterations", "2", "--quiet")
    assert code == 2 and "holds results made with other settings (iterations 1 not 2)" in err
    code, _, err = run(capsys, *argv, "--seed", "1")
    assert code == 2 and "unrecognized arguments: --seed 1" in err  # no seed: nothing is random


def test_shards_run_apart_and_merge(dataset, tmp_path, models):
    pipe, metrics = models
    out = tmp_path / "sharded"
    settings = dict(steps=2, resolution=64, inversion="ddim", quiet=True, log=lambda _: None)
    summaries = [
        bench.run_bench(
            dataset, out, ["p2p"], pipe=pipe, metrics=metrics, rank=rank, world=2, **settings
        )
        for rank in (0, 1)
    ]
    assert [s.made for s in summaries] == [2, 1]  # items[0::2] = sofa, pet; items[1::2] = rug
    parts = [rows_of(out / "parts" / f"rank-{rank}.csv") for rank in (0, 1)]
    assert [[r["item"] for r in p] for p in parts] == [["sofa", "pet"], ["rug"]]
    assert [r["rank"] for r in parts[1]] == ["1"]
    assert not (out / "results.csv").exists()  # no process group: nobody merged yet
    outputs = bench.finish(out, bench.load_dataset(dataset), ["p2p"])
    assert outputs[:2] == [out / "results.csv", out / "table.md"]
    merged = rows_of(out / "results.csv")
    assert [r["item"] for r in merged] == ["sofa", "rug", "pet"]  # dataset order
    assert not list((out / "parts").glob("*.csv"))
    # Resuming with another world size reads the merged results: nothing is redone.
    again = bench.run_bench(dataset, out, ["p2p"], pipe=pipe, metrics=metrics, **settings)
    assert (again.made, again.skipped) == (0, 3)
    assert [r["finished"] for r in rows_of(out / "results.csv")] == [r["finished"] for r in merged]


class FakeState:
    """What run_bench uses of accelerate's PartialState: the rank, the world and the barrier."""

    def __init__(self, rank: int, world: int):
        self.process_index, self.num_processes, self.waited = rank, world, 0

    def wait_for_everyone(self):
        self.waited += 1


def test_under_accelerate_the_main_process_merges_after_the_barrier(
    dataset, tmp_path, models, monkeypatch
):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert bench.process_state() == (0, 1, None)  # a plain run: one process, no process group
    pipe, metrics = models
    out = tmp_path / "accelerate"
    settings = dict(steps=1, resolution=64, inversion="ddim", quiet=True, log=lambda _: None)
    states = {rank: FakeState(rank, 2) for rank in (1, 0)}  # the other process finishes first
    summaries = {
        rank: bench.run_bench(
            dataset, out, ["p2p"], pipe=pipe, metrics=metrics, state=state, **settings
        )
        for rank, state in states.items()
    }
    assert [states[r].waited for r in (0, 1)] == [1, 1]
    assert summaries[1].outputs == [] and summaries[1].made == 1
    assert summaries[0].outputs[:2] == [out / "results.csv", out / "table.md"]
    merged = rows_of(out / "results.csv")
    assert [(r["item"], r["rank"]) for r in merged] == [("sofa", "0"), ("rug", "1"), ("pet", "0")]
    assert (out / "contact_sheet.png").is_file()
