"""Faithfulness end to end: our own null-text inversion, then our edit, on the authors' oracle
(``tests/oracle``: a tiny random-weight model with SD v1.4's layout, a photo, a mask, and what the
authors' released token-ratio code produced from them), against the authors' numbers.

    python benchmarks/faithfulness.py [--threads N] [--case2]

Prints one JSON line per case:
- ``xT_max`` / ``xT_mean``: |our z_T - the authors' x_t| (|x_t| is about 3);
- ``uncond_mean``: mean |our null-text embeddings - theirs|;
- ``edit_pct`` / ``recon_pct``: the decoded edit (reconstruction) inside the mask, mean distance
  from the reference as a percentage of the edit's own effect (reference edit minus reference
  reconstruction inside the mask).

Case 1 is the authors' own run (MAX_IT 1, lambda_p 2.5): the reference is their decoded images.
Case 2 (``--case2``: MAX_IT 5, lambda_p 10, stronger guidance) has no authors' run; its reference
is our editing loop (pinned to theirs by ``tests/test_oracle.py``) started from *their* z_T and
null-text embeddings, so the figure measures what our inversion changes in a stronger edit.

On a 2-core CPU the null-text inversion takes 3 to 6 minutes (50 steps x up to 10 Adam steps of
a 64 x 64 latent). The figures depend on float rounding (the top rows of this random model are
chaotic), so on the thread count: name it with ``--threads`` to compare runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ORACLE = Path(__file__).resolve().parents[1] / "tests" / "oracle"
# Case 2: more MAG iterations and a larger scale than the authors' stored run.
CASE2 = {"max_iter": 5, "scale": 10.0}


def oracle_settings(oracle: Path = ORACLE) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The authors' settings (json) and arrays (x_t, uncond, image_gt, images)."""
    settings = json.loads((oracle / "authors-token-ratio.json").read_text())
    return settings, dict(np.load(oracle / "authors-token-ratio.npz"))


def oracle_model(folder: Path, oracle: Path = ORACLE) -> Path:
    """The oracle's model as a diffusers folder under ``folder``: the stored copy with its text
    encoder unzipped (stored gzipped: all but 11 rows of its token embedding are zero, see the
    oracle's README)."""
    target = Path(folder) / "sdm-1.4"
    shutil.copytree(oracle / "model" / "sdm-1.4", target)
    packed = target / "text_encoder" / "model.safetensors.gz"
    with gzip.open(packed) as source, open(packed.with_suffix(""), "wb") as out:
        shutil.copyfileobj(source, out)
    packed.unlink()
    return target


def authors_config(settings: dict[str, Any], **changes: Any):
    """The EditConfig of the authors' run (their fractions as our taus), with ``changes``."""
    from magedit import EditConfig

    steps = settings["steps"]
    return EditConfig(
        max_iter=settings["max_iter"],
        scale=settings["scale"],
        steps=steps,
        guidance_scale=settings["guidance"],
        tau1=round(steps * (1 - settings["cross_replace"])),
        tau_self=round(steps * (1 - settings["self_replace"])),
        tau2=steps - settings["mag_steps"],
        blend_steps=settings["blend_last"],
        inversion="null_text",
    ).replace(**changes)


def decoded_pair(pipe, prepared, inversion) -> np.ndarray:
    """(2, 3, H, W) in [0, 1]: the decoded reconstruction and edit branches of one edit."""
    *_, result = pipe.edit(prepared, inversion)
    both = torch.cat([result.source_latents, result.latents])
    return pipe.decode_latents(both).numpy()


def measure(pipe, oracle: Path = ORACLE, case2: bool = False) -> dict[str, dict[str, float]]:
    """Invert the oracle's photo with our null-text inversion and edit it (case 1, and case 2
    with ``case2``); the figures of each case (see the module's docstring)."""
    from magedit import images

    settings, data = oracle_settings(oracle)
    mask = images.load_mask(oracle / "mask.png")
    theirs_z = torch.from_numpy(data["x_t"])
    cases = {"case1": {}, **({"case2": CASE2} if case2 else {})}
    figures = {}
    for name, changes in cases.items():
        prepared = pipe.prepare(
            oracle / "image.png",
            settings["source"],
            settings["target"],
            mask,
            [settings["word"]],
            config=authors_config(settings, **changes),
        )
        start = time.perf_counter()
        inversion = pipe.invert(prepared)  # case 2 reuses case 1's from the cache
        inversion_seconds = time.perf_counter() - start
        ours = decoded_pair(pipe, prepared, inversion)
        if name == "case1":
            reference = data["images"]
        else:
            theirs = dataclasses.replace(
                inversion,
                trajectory=torch.cat([inversion.trajectory[:-1], theirs_z[None]]),
                uncond=torch.from_numpy(data["uncond"]),
                cached=False,
            )
            reference = decoded_pair(pipe, prepared, theirs)
        effect = np.abs(reference[1] - reference[0])[:, mask].mean()
        z_diff = (inversion.z_T - theirs_z).abs()
        figures[name] = {
            "xT_max": float(z_diff.max()),
            "xT_mean": float(z_diff.mean()),
            "uncond_mean": float(
                (inversion.uncond - torch.from_numpy(data["uncond"])).abs().mean()
            ),
            "effect": float(effect),
            "edit_pct": float(100 * np.abs(ours[1] - reference[1])[:, mask].mean() / effect),
            "recon_pct": float(100 * np.abs(ours[0] - reference[0])[:, mask].mean() / effect),
            "inversion_s": round(inversion_seconds, 1),
        }
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--case2", action="store_true", help="also the stronger case 2")
    parser.add_argument("--oracle", type=Path, default=ORACLE, help="the oracle folder")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from magedit import MagEditPipeline

    with tempfile.TemporaryDirectory() as folder:
        model = oracle_model(Path(folder), args.oracle)
        pipe = MagEditPipeline.from_pretrained(str(model), device="cpu", dtype=torch.float32)
        figures = measure(pipe, args.oracle, case2=args.case2)
    for name, row in figures.items():
        print(json.dumps({"case": name, "threads": torch.get_num_threads(), **row}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
