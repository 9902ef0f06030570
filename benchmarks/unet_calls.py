"""Micro-benchmark of the UNet work an edit repeats, under the execution options a GPU offers.

Times four calls of SD v1.4's UNet architecture (random weights) at 512 x 512, each eagerly and
as a replayed CUDA graph (what the pipeline does), and prints one JSON line per (option set,
call) with milliseconds per call:

- ``fwd1``: a no-grad batch-1 forward (DDIM inversion, null-text's no-grad calls);
- ``fwd4``: a no-grad batch-4 forward (a denoising step carrying both branches);
- ``null_text``: forward + backward to the text embedding (a null-text inner step);
- ``mag``: forward to the last 16x16 cross-attention layer with its maps, backward to the
  latent (a MAG iteration without injection).

Options: memory format (contiguous, channels_last) and the attention backend of
``scaled_dot_product_attention``. (``torch.backends.cudnn.benchmark`` was tried on an H100 too: no
gain, and it times new shapes during a CUDA graph capture, which fails the capture.) ``--profile`` also prints the top CUDA
kernels of ``null_text`` and ``mag`` under the first option set. On a GPU machine::

    python benchmarks/unet_calls.py --profile
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repo root

from benchmarks.speed import build_components  # noqa: E402
from magedit.attention import CallPlan, EarlyExit  # noqa: E402
from magedit.graphs import CapturedStep  # noqa: E402
from magedit.pipeline import MagEditPipeline  # noqa: E402


def _calls(pipe: MagEditPipeline, side: int) -> dict:
    device, dtype = pipe.device, pipe.dtype
    g = torch.Generator(device=device).manual_seed(0)
    z1 = torch.randn(1, 4, side, side, device=device, generator=g)
    z4 = torch.randn(4, 4, side, side, device=device, generator=g)
    dim = pipe.unet.config.cross_attention_dim
    emb1 = torch.randn(1, 77, dim, device=device, generator=g, dtype=dtype)
    emb4 = torch.randn(4, 77, dim, device=device, generator=g, dtype=dtype)
    param = emb1.float().clone().requires_grad_(True)
    t = torch.full((1,), 981, dtype=torch.long, device=device)
    controller = pipe.controller
    level = 2
    layers = controller.cross_layers_at(level)
    plan = CallPlan(collect_row=0, collect_level=level, stop_after=layers[-1])

    def fwd1():
        with torch.no_grad():
            return pipe._eps(z1, t, emb1)

    def fwd4():
        with torch.no_grad():
            return pipe._eps(z4, t, emb4)

    def null_text():
        loss = pipe._eps(z1, t, param).square().mean()
        return torch.autograd.grad(loss, param)[0]

    def mag():
        z = z1.detach().requires_grad_(True)
        with controller.plan(plan), contextlib.suppress(EarlyExit):
            pipe._eps(z, t, emb1)
        maps = [controller.collected[name] for name in layers]
        loss = torch.stack([m[:, :, 5].float().mean() for m in maps]).sum()
        return torch.autograd.grad(loss, z)[0]

    return {"fwd1": fwd1, "fwd4": fwd4, "null_text": null_text, "mag": mag}


def _time(fn, repeats: int) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1000


def _backend(name: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if name == "default":
        return contextlib.nullcontext()
    return sdpa_kernel(getattr(SDPBackend, name.upper()))


def profile(fn, label: str, top: int = 15) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    fn()
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    total = sum(e.self_device_time_total for e in events)
    events.sort(key=lambda e: e.self_device_time_total, reverse=True)
    rows = [
        {
            "kernel": e.key[:90],
            "ms_per_call": round(e.self_device_time_total / 3 / 1000, 3),
            "share": round(e.self_device_time_total / total, 3),
            "count_per_call": e.count // 3,
        }
        for e in events[:top]
    ]
    print(json.dumps({"profile": label, "gpu_ms_per_call": round(total / 3 / 1000, 2)}))
    for row in rows:
        print(json.dumps(row))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument(
        "--backends", default="default,flash_attention,efficient_attention,cudnn_attention"
    )
    parser.add_argument(
        "--formats",
        default="contiguous,channels_last",
        help="memory formats to time; --profile uses the first",
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device("cuda")
    pipe = MagEditPipeline(
        **build_components("sd14", device), device=device, dtype=getattr(torch, args.dtype)
    )
    formats = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    chosen = args.formats.split(",")
    pipe.unet.to(memory_format=formats[chosen[0]])
    calls = _calls(pipe, args.resolution // 8)
    if args.profile:
        for name in ("null_text", "mag"):
            profile(calls[name], f"{name} ({chosen[0]})")
    for memory_format, backend in itertools.product(chosen, args.backends.split(",")):
        pipe.unet.to(memory_format=formats[memory_format])
        for name, fn in calls.items():
            record = {"call": name, "memory_format": memory_format, "attention": backend}
            try:
                with _backend(backend):
                    fn()
                    record["eager_ms"] = round(_time(fn, 3), 2)
                    step = CapturedStep(fn, enabled=True)
                    step()  # warm-up + capture
                    step()
                    record["graph_ms"] = round(_time(step, args.repeats), 2)
                    if step.graph is None:
                        record["graph"] = "capture failed"
            except RuntimeError as error:
                record["error"] = str(error).splitlines()[0][:200]
            print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
