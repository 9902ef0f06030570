"""Speed and memory benchmark: invert + edit with the fast and the paper-literal reference path.

Builds Stable Diffusion v1.4's UNet, VAE and text encoder *architectures* with random weights from
the configs in ``magedit/data/sd-v1-4`` (no download), or a mid-size model for CPUs, and prints one
JSON line per run, then one line of fast/reference ratios. Timings are figures to read, never
assertions. It uses the pipeline's public API only: ``prepare``/``invert``/``edit``, the
``mag_objective`` hook (one MAG iteration's loss) and the ``meta`` device (shapes only).

On a GPU machine (about 3 minutes on an H100)::

    python benchmarks/speed.py --size sd14 --device cuda
    python benchmarks/speed.py --size sd14 --device cuda --inversion null_text,direct --flops

On a CPU (the mid-size model at 256 x 256, fewer steps)::

    python benchmarks/speed.py --size mid --steps 20 --iterations 5 --tau2 10 --inversion direct

UNet FLOPs of the editing phase and of a MAG iteration of SD v1.4 at 512 x 512, both paths,
counted on the meta device (no weights, no GPU; about 15 minutes on 2 CPU cores)::

    python benchmarks/speed.py --size sd14 --meta-flops
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from importlib import resources
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, sdpa_backward_flop_count, sdpa_flop_count

SOURCE = "a photo of a red sofa and a wooden table in a living room"
TARGET = "a photo of a green sofa and a wooden table in a living room"

MID_UNET = {
    "block_out_channels": [64, 128, 256, 256],
    "attention_head_dim": 4,
    "cross_attention_dim": 128,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
}
MID_VAE = {
    "block_out_channels": [32, 64, 64, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 32,
}
MID_TEXT = {
    "vocab_size": 49408,
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_attention_heads": 4,
    "num_hidden_layers": 4,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
}


def sd14_config(name: str) -> dict[str, Any]:
    """SD v1.4's config of ``unet``, ``vae`` or ``text_encoder`` (kept in the package)."""
    text = resources.files("magedit").joinpath("data", "sd-v1-4", f"{name}.json").read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def build_components(size: str, device: torch.device, seed: int = 0) -> dict[str, Any]:
    """Random-weight components: ``sd14`` (SD v1.4's architecture), ``mid`` or ``tiny``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from magedit.tiny import tiny_components
    from magedit.tokenizer import clip_tokenizer

    torch.manual_seed(seed)
    if size == "tiny":
        return tiny_components(seed)
    if size == "sd14":
        unet_cfg, vae_cfg, text_cfg = (sd14_config(n) for n in ("unet", "vae", "text_encoder"))
    elif size == "mid":
        unet_cfg, vae_cfg, text_cfg = MID_UNET, MID_VAE, MID_TEXT
    else:
        raise ValueError(f"unknown model size {size!r}; use sd14, mid or tiny")
    with torch.device(device):  # initialise on the target device: seconds, not minutes
        unet = UNet2DConditionModel.from_config(unet_cfg)
        vae = AutoencoderKL.from_config(vae_cfg)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": clip_tokenizer()}


def scene(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic photo (gradient + a dark box) and the box's mask."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 / width, y * 255 / height, 128 + 0 * x], -1).round().astype(np.uint8)
    mask = np.zeros((height, width), bool)
    mask[height // 3 : 2 * height // 3, width // 4 : 3 * width // 4] = True
    image[mask] = (150, 30, 30)
    return image, mask


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class FlopCount(TorchDispatchMode):
    """Counts FLOPs of every op run inside, with ``torch.utils.flop_counter``'s formulas.

    ``FlopCounterMode`` itself tracks modules with backward hooks that refuse
    ``torch.autograd.grad`` on a leaf (what MAG's guidance calls), so the count is done here
    without module tracking.
    """

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket) or _CPU_ATTENTION.get(func)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


# The CPU's fused attention, which torch's flop registry lacks (its CUDA kernels and the meta
# device's math decomposition are counted): the same formulas as the CUDA flash kernels.
_CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default: (
        lambda query, key, value, *args, **kwargs: sdpa_flop_count(
            query.shape, key.shape, value.shape
        )
    ),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward.default: (
        lambda grad_out, query, key, value, *args, **kwargs: sdpa_backward_flop_count(
            grad_out.shape, query.shape, key.shape, value.shape
        )
    ),
}


def _iteration_flops(objective, z: torch.Tensor) -> int:
    """FLOPs of one MAG iteration: the objective's forward and the gradient with respect to z."""
    counter = FlopCount()
    with counter, torch.enable_grad():
        z_var = z.clone().requires_grad_(True)
        loss, _ = objective(z_var)
        torch.autograd.grad(loss, z_var)
    return counter.flops


def mag_iteration_flops(pipe, prepared, inversion) -> int:
    """FLOPs (forward + backward) of one MAG iteration at the first guided step."""
    objective = pipe.mag_objective(prepared, inversion, 0)
    return _iteration_flops(objective, inversion.z_T.to(pipe.device))


class _Meta:
    """A pipeline whose UNet is ``unet_config`` (None: SD v1.4's) on the ``meta`` device (shapes
    only: no weights, no arithmetic; the pipeline then reads no value), a prepared one-region
    edit of a ``resolution``-pixel square scene, and a stand-in inversion of its shape (the
    inversion is not what is counted)."""

    def __init__(self, unet_config: dict[str, Any] | None, resolution: int):
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        from magedit.pipeline import MagEditPipeline
        from magedit.tiny import tiny_components

        self.device = meta = torch.device("meta")
        with meta:
            unet = UNet2DConditionModel.from_config(unet_config or sd14_config("unet"))
            # A text encoder of the UNet's width (the prompts' embeddings are encoded, not
            # counted); CLIP ViT-L/14's layout otherwise.
            width = unet.config.cross_attention_dim
            text = {**MID_TEXT, "hidden_size": width, "intermediate_size": 4 * width}
            text_encoder = CLIPTextModel(CLIPTextConfig(**text))
        parts = tiny_components(0)  # the VAE is not run (the count stops before the decode)
        self.pipe = MagEditPipeline(
            unet, parts["vae"], text_encoder, parts["tokenizer"], device=meta, model_id="meta"
        )
        self.resolution = resolution
        self.side = resolution // 8
        self.image, self.mask = scene(resolution, resolution)

    def prepare(self, config):
        """The scene's edit under ``config`` and an inversion of its shape (zeros on meta)."""
        from magedit.inversion import Inversion

        prepared = self.pipe.prepare(self.image, SOURCE, TARGET, self.mask, config=config)
        emb = self.pipe.unet.config.cross_attention_dim
        inversion = Inversion(
            original=prepared.original,
            image=prepared.image,
            source_prompt=prepared.source_prompt,
            method=config.inversion,
            steps=config.steps,
            guidance_scale=config.guidance_scale,
            trajectory=torch.zeros(config.steps + 1, 1, 4, self.side, self.side, device="meta"),
            uncond=torch.zeros(config.steps, 77, emb, device="meta"),
            key=self.pipe.inversion_key(prepared),
        )
        return prepared, inversion


def meta_mag_iteration_flops(
    unet_config: dict[str, Any] | None = None,
    resolution: int = 512,
    constraint: str = "token_ratio",
) -> dict[str, int]:
    """FLOPs (forward + backward) of one MAG iteration of the fast and the reference path, counted
    on the ``meta`` device: shapes only, no weights and no arithmetic (seconds on any CPU).

    ``unet_config`` None is SD v1.4's UNet; the image is ``resolution`` pixels square. The
    iteration is the pipeline's own objective (``MagEditPipeline.mag_objective``) at the first
    guided step, on one region whose edit word is one token. Only the UNet is counted. The fast
    path's reconstruction maps are recorded before counting (once per step, shared by every
    iteration); the reference path recomputes them inside the iteration, as Algorithm 1 does.
    """
    from magedit.config import EditConfig

    meta = _Meta(unet_config, resolution)
    z = torch.zeros(1, 4, meta.side, meta.side, device=meta.device)
    flops = {}
    for path in ("fast", "reference"):
        config = EditConfig(resolution=resolution, constraint=constraint, reference=path != "fast")
        prepared, inversion = meta.prepare(config)
        flops[path] = _iteration_flops(meta.pipe.mag_objective(prepared, inversion, 0), z)
    return flops


def meta_editing_flops(
    config: Any = None,
    unet_config: dict[str, Any] | None = None,
    resolution: int = 512,
) -> int:
    """UNet FLOPs of a whole editing phase (every denoising step's calls, every MAG iteration's
    forward and backward), counted on the ``meta`` device while the pipeline's own editing loop
    (``MagEditPipeline.edit``) runs; the decode and the prompts' encoding are not counted.

    ``config`` (default: the paper's, direct inversion) sets the path (``reference``), the
    inversion method and the schedule; ``unet_config`` None is SD v1.4's UNet.
    """
    from magedit.config import EditConfig

    config = (config or EditConfig()).replace(resolution=resolution)
    meta = _Meta(unet_config, resolution)
    prepared, inversion = meta.prepare(config)
    events = meta.pipe.edit(prepared, inversion)  # the prompts are encoded here, not counted
    counter = FlopCount()
    with counter:
        for event in events:
            if event.phase == "denoise" and event.step == config.steps:
                break  # the decode comes next
    return counter.flops


def run_one(pipe, image, mask, config, *, flops: bool, reedit: bool) -> dict[str, Any]:
    """Invert + edit (+ a re-edit reusing the cached inversion); seconds, FLOPs and memory."""
    from magedit.pipeline import EditResult

    device = pipe.device
    pipe.cache.clear()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    record: dict[str, Any] = {}
    _sync(device)
    start = time.perf_counter()
    prepared = pipe.prepare(image, SOURCE, TARGET, mask, config=config)
    inversion = pipe.invert(prepared)
    _sync(device)
    result = None
    for item in pipe.edit(prepared, inversion):
        if isinstance(item, EditResult):
            result = item
    _sync(device)
    done = time.perf_counter()
    record["seconds"] = {  # the edit's own timings; the total is this call's wall time
        "inversion": round(result.timings["inversion"], 3),
        "editing": round(result.timings["editing"], 3),
        "decode": round(result.timings["decode"], 3),
        "total": round(done - start, 3),
    }
    if reedit:
        _sync(device)
        again = time.perf_counter()
        again_prepared = pipe.prepare(
            image, SOURCE, TARGET.replace("green", "blue"), mask, config=config
        )
        for _ in pipe.edit(again_prepared, pipe.invert(again_prepared)):
            pass
        _sync(device)
        record["seconds"]["reedit_cached_inversion"] = round(time.perf_counter() - again, 3)
    if device.type == "cuda":
        record["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    if flops:
        pipe.cache.clear()
        with FlopCount() as inv_count:
            inversion = pipe.invert(prepared)
        with FlopCount() as edit_count:
            for _ in pipe.edit(prepared, inversion):
                pass
        record["flops"] = {
            "inversion": inv_count.flops,
            "editing": edit_count.flops,
            "mag_iteration": mag_iteration_flops(pipe, prepared, inversion),
        }
    return record


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/speed.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--size", choices=["sd14", "mid", "tiny"], default="mid")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype", choices=["auto", "float32", "float16", "bfloat16"], default="auto"
    )
    parser.add_argument("--resolution", type=int, default=None, help="default: 512 sd14, 256 else")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--tau2", type=int, default=25)
    parser.add_argument("--inversion", default="null_text,direct", help="comma-separated methods")
    parser.add_argument("--paths", default="fast,reference", help="comma-separated: fast,reference")
    parser.add_argument("--flops", action="store_true", help="also count FLOPs (an extra run)")
    parser.add_argument("--no-reedit", action="store_true", help="skip the cached re-edit timing")
    parser.add_argument(
        "--meta-flops",
        action="store_true",
        help="only count UNet FLOPs of the editing phase and of a MAG iteration on the meta device "
        "(no weights, no arithmetic, no GPU; SD v1.4 at paper defaults: about 15 min on 2 cores)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument(
        "--first-use",
        action="store_true",
        help="no warm-up: time the first edit of a fresh process, a second one of another photo "
        "of the same shape, then the first and second of a new shape (640 x 480), per inversion "
        "(issue 15's cold-start rows); fast path only",
    )
    parser.add_argument("--compile", action="store_true", help="EditConfig(compile=True)")
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="EditConfig(channels_last=...); default: on a GPU yes, on a CPU no",
    )
    parser.add_argument(
        "--early-stop", type=float, default=0.0, help="EditConfig(early_stop=...); 0 = off"
    )
    parser.add_argument(
        "--no-cuda-graphs",
        action="store_true",
        help="EditConfig(cuda_graphs=False): run MAG iterations and null-text steps eagerly",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from magedit.config import EditConfig
    from magedit.loading import torch_dtype
    from magedit.pipeline import MagEditPipeline

    args = parse_args(argv)
    if args.meta_flops:
        return meta_main(args)
    device = torch.device(args.device)
    dtype = torch_dtype(args.dtype, device)
    resolution = args.resolution or (512 if args.size == "sd14" else 256)
    built = time.perf_counter()
    pipe = MagEditPipeline(
        **build_components(args.size, device, args.seed),
        device=device,
        dtype=dtype,
        model_id=f"random-{args.size}",
    )
    build_seconds = time.perf_counter() - built
    image, mask = scene(resolution, resolution)
    options = dict(
        compile=args.compile,
        channels_last=args.channels_last,
        early_stop=args.early_stop,
        cuda_graphs=not args.no_cuda_graphs,
    )
    if args.first_use:
        return first_use(args, pipe, resolution, options, build_seconds)
    # Warm-up of every (inversion, path) to be timed (kernel selection and loading, allocator,
    # lazy imports; with --compile, the compilation), so the first timed run is not penalised.
    for method in args.inversion.split(","):
        for path in args.paths.split(","):
            warm = EditConfig(inversion=method, resolution=resolution, **options)
            warm = warm.with_steps(2).replace(max_iter=1, reference=path == "reference")
            run_one(pipe, image, mask, warm, flops=False, reedit=False)
    common = {
        "size": args.size,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "dtype": str(dtype).replace("torch.", ""),
        "resolution": resolution,
        "steps": args.steps,
        "iterations": args.iterations,
        "tau2": args.tau2,
        "options": {
            **options,
            "channels_last": device.type == "cuda"
            if args.channels_last is None
            else args.channels_last,
        },
        "build_seconds": round(build_seconds, 2),
    }
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for method in args.inversion.split(","):
        for path in args.paths.split(","):
            base = EditConfig(inversion=method, resolution=resolution)
            config = base.with_steps(args.steps).replace(
                max_iter=args.iterations,
                tau2=args.tau2,
                reference=path == "reference",
                **options,
            )
            record = {**common, "inversion": method, "path": path}
            try:
                record.update(
                    run_one(
                        pipe,
                        image,
                        mask,
                        config,
                        flops=args.flops,
                        reedit=not args.no_reedit and path == "fast",
                    )
                )
            except (RuntimeError, FloatingPointError) as error:
                record["error"] = f"{type(error).__name__}: {error}"
            results[(method, path)] = record
            print(json.dumps(record), flush=True)
    ratios = {}
    for method in args.inversion.split(","):
        fast, ref = results.get((method, "fast")), results.get((method, "reference"))
        if not fast or not ref or "error" in fast or "error" in ref:
            continue
        entry = {
            "editing_seconds": round(fast["seconds"]["editing"] / ref["seconds"]["editing"], 3)
        }
        if args.flops:
            for key in ("editing", "mag_iteration"):
                entry[f"{key}_flops"] = round(fast["flops"][key] / ref["flops"][key], 3)
        ratios[method] = entry
    print(json.dumps({**common, "fast_over_reference": ratios}), flush=True)
    return 0


def first_use(args, pipe, resolution: int, options: dict[str, Any], build_seconds: float) -> int:
    """``--first-use``: what the first visitor pays. Per inversion method, in one fresh process:
    the first edit (captures, kernel selection, lazy imports all fall in it), a second edit of
    another photo of the same shape (nothing cached), then two edits of photos of a new shape
    (640 x 480: processing size 512 x 384). Prints one JSON line per method with the seconds and
    the two differences of issue 15's table."""
    from magedit.config import EditConfig

    same_a, mask = scene(resolution, resolution)
    same_b = 255 - same_a  # another photo: its inversion is not cached
    wide_a, wide_mask = scene(480, 640)
    wide_b = 255 - wide_a
    for method in args.inversion.split(","):
        config = EditConfig(inversion=method, resolution=resolution, **options)
        config = config.with_steps(args.steps).replace(max_iter=args.iterations, tau2=args.tau2)
        runs = {}
        for name, image, region in (("first", same_a, mask), ("second", same_b, mask),
                                    ("new_shape_first", wide_a, wide_mask),
                                    ("new_shape_second", wide_b, wide_mask)):  # fmt: skip
            record = run_one(pipe, image, region, config, flops=False, reedit=False)
            runs[name] = record["seconds"]["total"]
        print(
            json.dumps(
                {
                    "size": args.size,
                    "device": str(pipe.device),
                    "device_name": torch.cuda.get_device_name(pipe.device)
                    if pipe.device.type == "cuda"
                    else platform.processor() or platform.machine(),
                    "dtype": str(pipe.dtype).replace("torch.", ""),
                    "inversion": method,
                    "first_use_seconds": runs,
                    "first_minus_second": round(runs["first"] - runs["second"], 3),
                    "new_shape_minus_same_shape": round(
                        runs["new_shape_first"] - runs["second"], 3
                    ),
                    "build_seconds": round(build_seconds, 2),
                }
            ),
            flush=True,
        )
    return 0


def meta_main(args: argparse.Namespace) -> int:
    """``--meta-flops``: one JSON line per inversion method with the editing phase's UNet FLOPs
    of both paths and their ratio, then one line for a MAG iteration."""
    from magedit.config import EditConfig

    unet_config = {"sd14": None, "mid": MID_UNET}.get(args.size)
    if args.size == "tiny":
        from magedit.tiny import tiny_components

        unet_config = dict(tiny_components(0)["unet"].config)
    resolution = args.resolution or (512 if args.size == "sd14" else 256)
    common = {
        "size": args.size,
        "device": "meta",
        "resolution": resolution,
        "steps": args.steps,
        "iterations": args.iterations,
        "tau2": args.tau2,
    }
    for method in args.inversion.split(","):
        base = EditConfig(inversion=method, resolution=resolution).with_steps(args.steps)
        base = base.replace(max_iter=args.iterations, tau2=args.tau2)
        flops = {
            path: meta_editing_flops(
                base.replace(reference=path == "reference"), unet_config, resolution
            )  # fmt: skip
            for path in ("fast", "reference")
        }
        ratio = round(flops["fast"] / flops["reference"], 3)
        record = {
            **common,
            "inversion": method,
            "editing_flops": flops,
            "fast_over_reference": ratio,
        }
        print(json.dumps(record), flush=True)
    flops = meta_mag_iteration_flops(unet_config, resolution)
    ratio = round(flops["fast"] / flops["reference"], 3)
    print(json.dumps({**common, "mag_iteration_flops": flops, "fast_over_reference": ratio}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
