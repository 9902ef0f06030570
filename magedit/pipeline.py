"""MagEditPipeline: real-image inversion, attention injection and MAG guidance, step by step.

This is the only module that knows the order of the steps; the maths lives in ``losses``,
``guidance``, ``inversion`` and ``attention``. It is longer than our other modules on purpose:
checking (``prepare``), inverting and the editing loop's fast and paper-literal paths are one
sequence, and splitting it would spread the order of the steps over several files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from magedit import images, prompts
from magedit.attention import CallPlan, EarlyExit, install
from magedit.config import EditConfig, default_model, method_variant, tiny_model_id
from magedit.errors import InputError, blame
from magedit.graphs import CapturedGradient, CapturedStep
from magedit.guidance import (
    Gradient,
    dilate,
    guide,
    latent_blend,
    objective_gradient,
    step_size,
)
from magedit.inversion import (
    DDIMSchedule,
    Inversion,
    InversionCache,
    ddim_invert,
    null_text_optimize,
)
from magedit.losses import constraint_loss, in_mask_ratio, multi_region_loss, with_negative
from magedit.preview import latents_to_rgb, normalize_map
from magedit.tokenizer import thread_safe

# Regions of one edit (Eq. 9). Each adds its terms to every MAG iteration's loss; the paper shows
# two or three, and a bound keeps one request's work bounded on a public page.
MAX_REGIONS = 8


@dataclass
class Region:
    """One edit region (Eq. 9): a mask, the words whose attention should fill it, and a weight.

    mask:   boolean HxW at the original image's size (or anything ``images.load_mask`` reads).
    words:  edit words of the target prompt; None picks the target's new words automatically.
    weight: lambda_i of Eq. 9 (the weights of all regions are normalised to sum to 1).
    """

    mask: Any
    words: Sequence[str] | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        # Checked once, here: the mask is read into a non-empty bool array (any size; ``prepare``
        # fits it to the photo), the words become a list (None: picked from the prompts).
        self.mask = images.load_mask(self.mask)
        if isinstance(self.words, str):  # one word given bare, not its characters
            self.words = [self.words]
        given = [w for w in self.words or () if not (isinstance(w, str) and not w.strip())]
        self.words = given or None
        weight = self.weight
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ValueError(f"a region's weight must be a number, got {weight!r}")
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"a region's weight is {weight}; give a number above 0")
        self.weight = float(weight)


@dataclass
class EditEvent:
    """Progress of an edit. ``phase`` is "guidance" (one MAG iteration) or "denoise" (one step).

    preview:   (h, w, 3) uint8 latent-space preview of the edit branch (denoise events).
    attention: (H, W) float32 in [0, 1], the edit words' cross-attention at the loss resolution.
    """

    phase: str
    step: int  # 1-based denoising step
    total: int
    iteration: int | None = None
    max_iter: int | None = None
    loss: float | None = None
    in_mask_ratio: float | None = None
    preview: np.ndarray | None = None
    attention: np.ndarray | None = None
    elapsed: float = 0.0


@dataclass
class EditResult:
    """The finished edit. ``image`` is the decoded edit at processing size; ``composited`` is the
    edit pasted onto the original image at its own resolution (outside the dilated mask the
    pixels are the original's)."""

    image: np.ndarray
    composited: np.ndarray
    mask: np.ndarray
    config: EditConfig
    source_prompt: str
    target_prompt: str
    words: list[list[str]]
    negative_word: str | None
    timings: dict[str, float]
    losses: list[dict[str, float]]  # per MAG iteration: step, iteration, loss, ratio, objective
    latents: torch.Tensor  # (1, 4, h, w) final edit latent z*_0
    source_latents: torch.Tensor  # (1, 4, h, w) final reconstruction latent z_0
    inversion_cached: bool = False
    steps: list[dict[str, float]] = field(default_factory=list)  # per step: step, loss, ratio


@dataclass(frozen=True)
class PreparedRegion:
    """An edit region checked and ready: its words, their token positions, and its masks (on
    the CPU; the edit moves them to its device)."""

    words: list[str]
    positions: list[list[int]]  # target-prompt token positions of each word
    weight: float
    mask: np.ndarray  # (H, W) bool at the photo's size
    latent_mask: torch.Tensor  # (1, 1, h, w) 0/1 at latent size: where MAG may update z*_t
    attention_mask: torch.Tensor  # (N,) 0/1 at the loss's attention resolution, N = ah * aw


@dataclass(frozen=True)
class PreparedEdit:
    """One edit, checked once by :meth:`MagEditPipeline.prepare` and ready to run:
    ``invert(prepared)`` then ``edit(prepared, inversion)`` check nothing again.

    Holds no model state and no GPU memory (prepare runs on the CPU, safe beside a running
    edit), so it can be made while another edit runs and kept as long as needed.
    """

    original: np.ndarray  # (H, W, 3) uint8, the photo at its own size
    image: np.ndarray  # (h, w, 3) uint8 at processing size (long side config.resolution)
    image_key: str  # images.image_hash(original): the inversion cache's key for the photo
    source_prompt: str  # stripped, checked
    target_prompt: str
    regions: tuple[PreparedRegion, ...]
    negative_word: str | None
    negative_prompt: str | None  # the prompt the negative word's attention is read under
    negative_positions: list[int] | None
    mapper: torch.Tensor  # (77,) prompt-to-prompt "refine" alignment, target -> source position
    alphas: torch.Tensor  # (77,) 0 at the target's new tokens, else 1
    level: int  # the UNet level whose cross-attention the loss reads
    config: EditConfig
    model_id: str  # the pipeline that prepared it (its tokenizer and levels)

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool: the union of the regions' masks, what the edit may change."""
        return np.any([r.mask for r in self.regions], axis=0)

    @property
    def words(self) -> list[list[str]]:
        return [list(r.words) for r in self.regions]

    def as_method(self, method: str) -> PreparedEdit:
        """This edit as ``method`` runs it (``config.METHODS``: "magedit" as it is, or the
        prompt-to-prompt baselines), on the same photo, mask, words and inversion."""
        return dataclasses.replace(self, config=method_variant(self.config, method))


@dataclass
class _Plan:
    """Everything fixed for one edit, prepared before any UNet work."""

    config: EditConfig
    schedule: DDIMSchedule
    regions: list[PreparedRegion]  # masks on the pipeline's device
    update_mask: torch.Tensor
    blend_mask: torch.Tensor
    source_emb: torch.Tensor
    target_emb: torch.Tensor
    negative_emb: torch.Tensor | None
    negative_positions: list[int] | None
    negative_mask: torch.Tensor | None
    level: int
    loss_layers: list[str]
    stop_after: str | None
    t_now: torch.Tensor  # (1,) long: the current timestep, read by the captured MAG iterations
    losses: list[dict[str, float]] = field(default_factory=list)
    steps: list[dict[str, float]] = field(default_factory=list)  # each denoising step's report
    # The MAG iteration of each (cross-injection, self-injection) setting, built at first use.
    gradients: dict[tuple[bool, bool], Gradient] = field(default_factory=dict)
    # The no-grad UNet calls of the denoising steps, one per call plan and batch, built at first use.
    calls: dict[tuple, tuple[torch.Tensor, torch.Tensor, CapturedStep]] = field(
        default_factory=dict
    )


@dataclass(frozen=True)
class UNetCall:
    """One UNet call of an edit's plan. ``kind``: "forward" (no gradient; ``batch`` rows),
    "mag" (a MAG iteration's pass: forward to the loss's layers and backward to z*_t) or
    "null_text" (a null-text inner step: forward and backward to the embedding)."""

    kind: str
    batch: int = 1


def joint_step(config: EditConfig, i: int) -> bool:
    """Whether denoising step i runs both branches in one UNet call (a step without MAG, on the
    fast path)."""
    return not config.reference and not config.guide_at(i)


def step_calls(config: EditConfig, i: int, method: str, negative: bool) -> list[UNetCall]:
    """The UNet calls of denoising step i (0-based), in the order ``edit`` makes them, with
    ``method``'s inversion and with or without a negative word. The ZeroGPU reservation and the
    page's time estimate are made from this plan."""
    injecting = config.cross_inject_at(i) or config.self_inject_at(i)
    # The reconstruction branch: the recorded conditional row (direct inversion: only while
    # something is injected), or the guided pair.
    source = (1 if injecting else 0) if method == "direct" else 2
    if joint_step(config, i):
        return [UNetCall("forward", source + 2)]
    calls = [UNetCall("forward", source)] if source else []
    if config.guide_at(i):
        iteration = [UNetCall("mag")] * (2 if negative else 1)  # the negative word's own pass
        if config.reference:  # Algorithm 1 line 2: the reconstruction again, every iteration
            iteration = [UNetCall("forward", 1), *iteration]
        calls += iteration * config.max_iter
    return [*calls, UNetCall("forward", 2)]  # the editing branch's guided pair


def inversion_calls(config: EditConfig) -> list[list[UNetCall]]:
    """The UNet calls of each inversion step: DDIM's forward, then for null-text at most
    ``null_inner_steps`` inner steps between two forwards (it stops early below its threshold)."""
    ddim = [[UNetCall("forward")] for _ in range(config.steps)]
    if config.inversion != "null_text":
        return ddim
    inner = [UNetCall("null_text")] * config.null_inner_steps
    return ddim + [[UNetCall("forward"), *inner, UNetCall("forward")]] * config.steps


def _place(module, device: torch.device, dtype: torch.dtype):
    """Move a model to device/dtype, frozen and in eval mode."""
    if module.dtype != dtype:
        module = module.to(dtype=dtype)
    return module.to(device).eval().requires_grad_(False)


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on CUDA GPUs that support it (Ampere and newer: fp32's range, so random or extreme
    activations do not overflow), fp16 on older GPUs, fp32 elsewhere."""
    device = torch.device(device)
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class MagEditPipeline:
    """MAG-Edit on a Stable Diffusion v1.x model: ``prepare`` checks an edit, ``invert`` brings
    its photo to z_T (cached), ``edit`` runs it step by step.

    ``prepare`` may run in any thread at any time. ``invert`` and ``edit`` are not re-entrant:
    one runs at a time per pipeline (the attention processors share state); run one pipeline per
    GPU worker. On the ``meta`` device (shapes only, no arithmetic) an edit makes every UNet call
    it would make and reads no value (no losses, previews or NaN checks): the speed benchmark
    counts FLOPs this way.
    """

    def __init__(
        self,
        unet,
        vae,
        text_encoder,
        tokenizer,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        model_id: str = "custom",
        cache_size: int = 8,
    ):
        self.device = torch.device(device)
        self.dtype = dtype
        self.model_id = model_id
        # Shared by the page's prompt checks (any thread) and the edit's prompt encoding.
        self.tokenizer = thread_safe(tokenizer)
        # Frozen: guidance and null-text inversion need input gradients only.
        self.unet = _place(unet, self.device, dtype)
        self.vae = _place(vae, self.device, dtype)
        self.text_encoder = _place(text_encoder, self.device, dtype)
        self.controller = install(self.unet)
        self.cache = InversionCache(cache_size)
        # Execution options of EditConfig, applied by _configure when an inversion or edit starts.
        self._memory_format = torch.contiguous_format
        self._compiled = None  # torch.compile(self.unet), made on first use and kept
        self._use_compiled = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        model: str | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> MagEditPipeline:
        """Load SD v1.x from a local diffusers folder or the Hub (``model`` None is
        ``$MAGEDIT_MODEL`` or SD v1.4). From the Hub only the files the engine reads are fetched
        (``hub.sd_files``: UNet, VAE, text encoder, tokenizer; the fp16 variant for half
        precision), and only when the Hugging Face cache lacks them.

        Raises ``hub.WeightsUnavailable`` (a ValueError naming the way forward) when the files
        are not cached and the Hub is off or out of reach, or the repository is gated or missing.
        """
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        from magedit import hub

        model = model or default_model()
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = dtype or default_dtype(device)
        half = dtype in (torch.float16, torch.bfloat16)
        folder = Path(model).expanduser()
        if not (hub.is_local(model) or folder.is_dir()):
            folder = hub.sd_folder(model, half)

        variants = hub.variants(folder, half)  # the files sd_files chose, fp16 or not

        def weights(component: str) -> dict[str, Any]:
            return {"subfolder": component, "torch_dtype": dtype, "variant": variants[component]}

        unet = UNet2DConditionModel.from_pretrained(folder, **weights("unet"))
        vae = AutoencoderKL.from_pretrained(folder, **weights("vae"))
        text_encoder = CLIPTextModel.from_pretrained(folder, **weights("text_encoder"))
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
        return cls(
            unet, vae, text_encoder, tokenizer, device=device, dtype=dtype, model_id=model, **kwargs
        )

    @classmethod
    def tiny(cls, device: str | torch.device = "cpu", seed: int = 0, **kwargs: Any):
        """Random-weight components (``magedit.tiny``): offline, seconds on a CPU, output noise."""
        from magedit.tiny import tiny_components

        return cls(**tiny_components(seed), device=device, model_id=tiny_model_id(seed), **kwargs)

    # ------------------------------------------------------------------ model calls
    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """(1, 77, D) CLIP embedding of ``prompt`` (padded to 77 tokens)."""
        ids = self.tokenizer(
            [prompt],
            padding="max_length",
            max_length=prompts.MAX_TOKENS,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        if ids.shape != (1, prompts.MAX_TOKENS):  # a tokenizer changed by another caller
            raise RuntimeError(
                f"the tokenizer gave {tuple(ids.shape)} ids for one prompt, not "
                f"(1, {prompts.MAX_TOKENS}); is it shared with code that changes its padding?"
            )
        return self.text_encoder(ids.to(self.device))[0].float()

    @torch.no_grad()
    def encode_image(self, image: np.ndarray) -> torch.Tensor:
        """HWC uint8 at processing size -> (1, 4, h, w) float32 latent (the posterior mean)."""
        x = images.image_to_tensor(image, device=self.device, dtype=self.dtype)
        latent = self.vae.encode(x).latent_dist.mean
        return (latent * self.vae.config.scaling_factor).float()

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, 4, h, w) latents -> (B, 3, 8h, 8w) float32 images in [0, 1]."""
        x = self.vae.decode((latents / self.vae.config.scaling_factor).to(self.dtype)).sample
        return (x.float() / 2 + 0.5).clamp(0, 1)

    def _configure(self, config: EditConfig) -> None:
        """Apply the config's execution options to the UNet: memory format and compilation."""
        channels_last = config.channels_last
        if channels_last is None:  # automatic: on a GPU only
            channels_last = self.device.type == "cuda"
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if memory_format != self._memory_format:
            self.unet.to(memory_format=memory_format)
            self._memory_format = memory_format
        self._use_compiled = config.compile
        if config.compile and self._compiled is None:
            try:
                self._compiled = torch.compile(self.unet)
            except RuntimeError as error:  # e.g. a Python version dynamo does not support yet
                self._compile_failed(error)

    def _compile_failed(self, error: Exception) -> None:
        warnings.warn(
            f"torch.compile is unavailable here ({type(error).__name__}: {error}); the UNet runs "
            "uncompiled",
            RuntimeWarning,
            stacklevel=3,
        )
        self._compiled = self.unet

    def _eps(self, latents: torch.Tensor, t: int, emb: torch.Tensor) -> torch.Tensor:
        latents, emb = latents.to(self.dtype), emb.to(self.dtype)
        unet = self._compiled if self._use_compiled else self.unet
        if unet is self.unet:
            return self.unet(latents, t, encoder_hidden_states=emb).sample.float()
        try:
            out = unet(latents, t, encoder_hidden_states=emb)
        except EarlyExit:
            raise
        except Exception as error:  # compilation happens on the first calls: no compiler, ...
            self._compile_failed(error)
            out = self.unet(latents, t, encoder_hidden_states=emb)
        return out.sample.float()

    def _maps(self, z: torch.Tensor, t: int, emb: torch.Tensor, plan: CallPlan, names):
        """Run the conditional branch on z (batch 1) and return the collected maps of ``names``."""
        with self.controller.plan(plan), contextlib.suppress(EarlyExit):
            self._eps(z, t, emb)
        return [self.controller.collected[name] for name in names]

    # ------------------------------------------------------------------ inversion
    def invert(self, prepared: PreparedEdit, *, progress=None) -> Inversion:
        """Invert a prepared edit's photo under its source prompt, with its settings (checked
        already by ``prepare``); cached by (photo, prompt, method, steps, guidance, resolution,
        model). ``progress(done, total)`` is called after each inversion step."""
        if not isinstance(prepared, PreparedEdit):
            raise ValueError(
                f"invert() takes a PreparedEdit, got {type(prepared).__name__}; make one with "
                "pipe.prepare(...), or invert a photo alone with pipe.invert_image(...)"
            )
        return self._invert(
            prepared.original,
            prepared.image,
            prepared.image_key,
            prepared.source_prompt,
            prepared.config,
            progress,
        )

    def invert_image(
        self,
        image: Any,
        source_prompt: str,
        *,
        config: EditConfig | None = None,
        progress=None,
    ) -> Inversion:
        """Invert a photo (anything ``images.load_image`` reads) under ``source_prompt``, with
        ``config``'s inversion settings (default: the paper's null-text inversion), both checked
        here; the same cache as ``invert``."""
        config = config or EditConfig()
        with blame("source_prompt"):
            source_prompt = prompts.check_prompt(
                self.tokenizer, source_prompt, what="source prompt"
            )
        with blame("image"):
            original = images.load_image(image)
        size = images.processing_size(*original.shape[:2], long_side=config.resolution)
        processed = images.resize_image(original, size)
        return self._invert(
            original, processed, images.image_hash(original), source_prompt, config, progress
        )

    def _invert(
        self,
        original: np.ndarray,
        processed: np.ndarray,
        key_hash: str,
        source_prompt: str,
        config: EditConfig,
        progress,
    ) -> Inversion:
        method = config.inversion
        key = self._inversion_key(key_hash, source_prompt, config)
        cached = self.cache.get(key)
        if cached is not None:
            return dataclasses.replace(cached, cached=True)

        start = time.perf_counter()
        self._configure(config)
        schedule = DDIMSchedule(config.steps)
        cond = self.encode_prompt(source_prompt)
        empty = self.encode_prompt("")
        z0 = self.encode_image(processed)
        total = config.steps * (2 if method == "null_text" else 1)

        def phase_progress(offset):
            if progress is None:
                return None
            return lambda done, _total: progress(offset + done, total)

        trajectory = ddim_invert(
            self._eps, z0, cond, schedule, phase_progress(0), cuda_graphs=self._graphs(config)
        )
        if method == "null_text":
            uncond = null_text_optimize(
                self._eps,
                trajectory,
                empty,
                cond,
                schedule,
                config.guidance_scale,
                config.null_inner_steps,
                config.null_lr,
                config.null_epsilon,
                phase_progress(config.steps),
                cuda_graphs=self._graphs(config),
            )
        else:
            uncond = empty.expand(config.steps, *empty.shape[1:]).clone()
        inversion = Inversion(
            original=original,
            image=processed,
            source_prompt=source_prompt,
            method=method,
            steps=config.steps,
            guidance_scale=config.guidance_scale,
            trajectory=trajectory,
            uncond=uncond,
            key=key,
            seconds=time.perf_counter() - start,
        )
        # Only a finished, finite inversion is shared: a failed or diverged run never is.
        finite = self.device.type == "meta" or (
            torch.isfinite(trajectory).all() and torch.isfinite(uncond).all()
        )
        if not finite:
            raise FloatingPointError(
                f"the {method.replace('_', '-')} inversion became NaN or infinite; try the direct "
                "inversion or fewer steps"
            )
        self.cache.put(inversion)
        return inversion

    def inversion_key(self, prepared: PreparedEdit) -> tuple:
        """The key of a prepared edit's inversion (the cache's key; ``edit`` checks the inversion
        it is given against it)."""
        return self._inversion_key(prepared.image_key, prepared.source_prompt, prepared.config)

    def _inversion_key(self, image_key: str, source_prompt: str, config: EditConfig) -> tuple:
        """What an inversion depends on: photo, source prompt, inversion settings, model."""
        method = config.inversion
        return (
            image_key,
            source_prompt,
            method,
            config.steps,
            config.guidance_scale,
            config.resolution,
            (config.null_inner_steps, config.null_lr, config.null_epsilon)
            if method == "null_text"
            else None,
            self.model_id,
            str(self.dtype),
        )

    # ------------------------------------------------------------------ checking
    def prepare(
        self,
        image: Any,
        source_prompt: str,
        target_prompt: str,
        mask: Any = None,
        words: Sequence[str] | str | None = None,
        *,
        regions: Sequence[Region] | None = None,
        negative_word: str | None = None,
        negative_prompt: str | None = None,
        config: EditConfig | None = None,
    ) -> PreparedEdit:
        """Check an edit once, before any model work, and return it ready to run.

        ``image``: the photo (anything ``images.load_image`` reads). Give either ``mask`` (and
        optionally ``words``) or ``regions`` (Eq. 9, each with its mask, words and weight). A
        region's words None are the words the target adds, less those given to other regions.
        ``negative_word`` (Eq. 7) must be in ``negative_prompt`` (default: the source prompt).

        Raises ``errors.InputError`` (a ValueError) naming the input at fault, the value and the
        fix. Runs on the CPU only (the tokenizer and the masks): safe to call from any thread
        while an edit runs.
        """
        # 1. Settings, regions, photo.
        config = config or EditConfig()
        if regions is None:
            if mask is None:
                raise InputError(
                    "mask", "no mask given; mark the region to edit (mask=... or regions=[...])", 1
                )
            with blame("mask", 1):
                regions = [Region(mask=mask, words=words)]
        elif mask is not None or words is not None:
            raise ValueError("give either mask= (and words=) or regions=, not both")
        if not regions:
            raise InputError("mask", "no edit region given; give a mask of the region to edit", 1)
        if len(regions) > MAX_REGIONS:
            raise InputError(
                "mask", f"{len(regions)} regions were given; edit at most {MAX_REGIONS} in one run"
            )
        for region in regions:
            if not isinstance(region, Region):
                raise ValueError(f"a region must be a Region, got {type(region).__name__}")
        with blame("image"):
            original = images.load_image(image)
        h, w = images.processing_size(*original.shape[:2], long_side=config.resolution)
        lh, lw = h // 8, w // 8
        with blame("settings"):
            level = self._loss_level(config, (lh, lw))
        ah, aw = lh >> level, lw >> level

        # 2. The text: prompts, each region's words, the negative word (Eq. 7).
        guided = config.max_iter > 0 and config.cross_inject_at(0)
        text = prompts.check_edit_text(
            self.tokenizer,
            source_prompt,
            target_prompt,
            [region.words for region in regions],
            negative_word,
            negative_prompt,
            guided=guided,
        )

        # 3. Each region's mask at the photo's size, the latent's and the loss's.
        prepared = []
        for number, region in enumerate(regions, 1):
            with blame("mask", number):
                # Read and checked when the Region was made; fitted to the photo here.
                region_mask = images.resize_mask(region.mask, original.shape[:2])
                if not region_mask.any():
                    (mh, mw), (ph, pw) = region.mask.shape, original.shape[:2]
                    raise ValueError(
                        f"the mask marks {int(region.mask.sum())} pixels of its {mw}x{mh} and "
                        f"none is left at the photo's {pw}x{ph}; mark a larger region"
                    )
                images.check_mask_coverage(region_mask)
                attention_mask = images.mask_to_latent(region_mask, (ah, aw))
                if attention_mask.sum() == 0:
                    raise ValueError(
                        f"the mask is too small: it vanishes at the {aw}x{ah} attention "
                        "resolution; mark a larger region (at least about 1/16 of the image side "
                        "across)"
                    )
            prepared.append(
                PreparedRegion(
                    words=text.words[number - 1],
                    positions=text.positions[number - 1],
                    weight=region.weight,
                    mask=region_mask,
                    latent_mask=images.mask_to_latent(region_mask, (lh, lw)),
                    attention_mask=attention_mask.flatten(),
                )
            )
        return PreparedEdit(
            original=original,
            image=images.resize_image(original, (h, w)),
            image_key=images.image_hash(original),
            source_prompt=text.source,
            target_prompt=text.target,
            regions=tuple(prepared),
            negative_word=text.negative_word,
            negative_prompt=text.negative_prompt,
            negative_positions=text.negative_positions,
            mapper=text.mapper,
            alphas=text.alphas,
            level=level,
            config=config,
            model_id=self.model_id,
        )

    def _plan(self, prepared: PreparedEdit, inversion: Inversion) -> _Plan:
        """What one run of ``prepared`` needs on the device: embeddings, masks, the alignment."""
        config = prepared.config
        if prepared.model_id != self.model_id:
            raise ValueError(
                f"the edit was prepared by the pipeline of {prepared.model_id!r}, not this one "
                f"({self.model_id!r}); prepare it with this pipeline"
            )
        if inversion.key != self.inversion_key(prepared):
            raise ValueError(
                "the inversion is of another photo, source prompt or inversion setting (method, "
                "steps, guidance, resolution, model) than the edit; invert the prepared edit: "
                "invert(prepared)"
            )
        device = self.device
        regions = [
            dataclasses.replace(
                r,
                latent_mask=r.latent_mask.to(device),
                attention_mask=r.attention_mask.to(device),
            )
            for r in prepared.regions
        ]
        # Eq. 9: the update is restricted to the union of the masks.
        update_mask = torch.stack([r.latent_mask for r in regions]).amax(0)
        negative_emb = negative_mask = None
        if prepared.negative_word:
            negative_emb = self.encode_prompt(prepared.negative_prompt)
            negative_mask = torch.stack([r.attention_mask for r in regions]).amax(0)
        self.controller.mapper = prepared.mapper.to(device)
        self.controller.alphas = prepared.alphas.to(device)
        level = prepared.level
        return _Plan(
            config=config,
            schedule=DDIMSchedule(config.steps),
            regions=regions,
            update_mask=update_mask,
            blend_mask=dilate(update_mask, 3),
            source_emb=self.encode_prompt(prepared.source_prompt),
            target_emb=self.encode_prompt(prepared.target_prompt),
            negative_emb=negative_emb,
            negative_positions=prepared.negative_positions,
            negative_mask=negative_mask,
            level=level,
            loss_layers=self.controller.cross_layers_at(level),
            stop_after=None if config.reference else self.controller.last_layer_at(level),
            t_now=torch.zeros(1, dtype=torch.long, device=device),
        )

    def _loss_level(self, config: EditConfig, latent_size: tuple[int, int]) -> int:
        """The level whose cross-attention the loss reads: latent/4 (16x16 at 512), or the level
        whose maps are ``config.attention_res`` pixels on the long side."""
        if config.attention_res is None:
            return 2
        long_side = max(latent_size)
        for level in sorted(self.controller.levels(cross=True)):
            if long_side >> level == config.attention_res:
                return level
        sizes = sorted({long_side >> lv for lv in self.controller.levels(cross=True)})
        raise ValueError(
            f"attention_res {config.attention_res} is not a cross-attention resolution of this "
            f"model at this image size; choose one of {sizes}"
        )

    def _objective(self, plan: _Plan, i: int, t: int, z_source: torch.Tensor):
        """The loss of Eq. 7/9 as a function of z*_t (with the injections of step i)."""
        # The objective reads a copy of the plan without its graph caches: a CUDA graph of it
        # stored in ``plan.gradients`` must not reference the plan back (a reference cycle is
        # freed only by the cyclic collector, which must not free a graph during a capture).
        plan = dataclasses.replace(plan, gradients={}, calls={}, losses=[], steps=[])
        config = plan.config
        reference = config.reference

        def objective(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if reference:
                # Algorithm 1 line 2: the reconstruction branch's maps, recomputed every iteration.
                record = CallPlan(
                    record_row=0,
                    record_cross=config.cross_inject_at(i),
                    record_self=config.self_inject_at(i),
                )
                with torch.no_grad(), self.controller.plan(record):
                    self._eps(z_source, t, plan.source_emb)
            edit_plan = CallPlan(
                inject_row=0,
                inject_cross=config.cross_inject_at(i),
                inject_self=config.self_inject_at(i),
                collect_row=0,
                collect_level=plan.level,
                stop_after=plan.stop_after,
            )
            maps = self._maps(z, t, plan.target_emb, edit_plan, plan.loss_layers)
            losses, ratios = [], []
            for region in plan.regions:
                losses.append(
                    constraint_loss(
                        config.constraint,
                        maps,
                        region.positions,
                        region.attention_mask,
                        config.spatial_lambda,
                    )
                )
                ratios.append(
                    in_mask_ratio(config.constraint, maps, region.positions, region.attention_mask)
                )
            positive = multi_region_loss(losses, [r.weight for r in plan.regions])
            negative = None
            if plan.negative_emb is not None:
                # The negative word's attention in a pass of z*_t under the negative prompt, with
                # the step's self-attention injection but its own cross-attention.
                neg_plan = CallPlan(
                    inject_row=0,
                    inject_self=config.self_inject_at(i),
                    collect_row=0,
                    collect_level=plan.level,
                    stop_after=plan.stop_after,
                )
                neg_maps = self._maps(z, t, plan.negative_emb, neg_plan, plan.loss_layers)
                negative = constraint_loss(
                    config.constraint,
                    neg_maps,
                    [plan.negative_positions],
                    plan.negative_mask,
                    config.spatial_lambda,
                )
            total = with_negative(positive, negative, config.scale, config.negative_scale)
            # What the edit reports: the edit words' loss (lambda_p L, >= 0; the denoising steps
            # report the same) and their in-mask ratio. The negative word's term is in the
            # objective only.
            report = torch.stack([config.scale * positive, torch.stack(ratios).mean()])
            return total, report

        return objective

    def _gradient(self, plan: _Plan, i: int, t: int, z_source: torch.Tensor) -> Gradient:
        """The MAG iteration of step i: (loss, ratio, gradient) as a function of z*_t.

        The fast path's iteration depends on the step only through the timestep (``plan.t_now``)
        and the maps recorded in place for it, so one function per injection setting serves every
        step, and on a GPU it is a CUDA graph captured at its first use.
        """
        config = plan.config
        if config.reference:
            gradient = objective_gradient(self._objective(plan, i, t, z_source))
        else:
            plan.t_now.fill_(t)
            key = (config.cross_inject_at(i), config.self_inject_at(i))
            if key not in plan.gradients:
                objective = self._objective(plan, i, plan.t_now, z_source)
                plan.gradients[key] = CapturedGradient(objective, z_source, self._graphs(config))
            else:
                plan.gradients[key].step.verify_next()  # a new timestep and new recorded maps
            gradient = plan.gradients[key]
        if self.device.type == "meta":  # shapes only: guide() reads no loss value
            zero = torch.zeros(2)
            return lambda z: (zero[0], zero, gradient(z)[2])
        return gradient

    def mag_objective(self, prepared: PreparedEdit, inversion: Inversion, step: int = 0):
        """The MAG loss (Eq. 7/9) of denoising step ``step`` (0-based) as a function of z*_t:
        ``objective(z) -> (value, report)`` with ``report`` = (the edit words' loss, their
        in-mask ratio), as the edit's guidance events report them, with that step's injections;
        on the fast path
        the reconstruction branch's maps of the step are recorded first, as an edit does once
        per step. A hook for benchmarks (FLOPs of one MAG iteration) and tests; edits never call
        it. The returned function reads the attention processors' state: call it before the
        next invert or edit."""
        plan = self._plan(prepared, inversion)
        config = plan.config
        self._configure(config)
        t = int(plan.schedule.timesteps[step])
        z_source = inversion.trajectory[config.steps - step].to(self.device)
        if not config.reference:
            uncond = inversion.uncond[step : step + 1].to(self.device)
            self._reconstruct(inversion, plan, step, t, z_source, uncond)
        return self._objective(plan, step, t, z_source)

    def _graphs(self, config: EditConfig) -> bool:
        """Whether CUDA graphs are used: asked for, on a GPU, on the fast path, uncompiled."""
        return (
            config.cuda_graphs
            and self.device.type == "cuda"
            and not config.compile
            and not config.reference
        )

    def _check_finite(self, z: torch.Tensor, step: int, what: str) -> None:
        if self.device.type == "meta":  # shapes only
            return
        if not torch.isfinite(z).all():
            raise FloatingPointError(
                f"the {what} latents became NaN or infinite at step {step}; lower the granularity "
                "or the iterations"
            )

    def edit(
        self, prepared: PreparedEdit, inversion: Inversion | None = None
    ) -> Iterator[EditEvent | EditResult]:
        """Run a prepared edit. A generator: :class:`EditEvent`s, then one :class:`EditResult`.

        ``inversion`` is ``invert(prepared)``'s result (None: inverted here, or taken from the
        cache, without progress reports). Nothing is checked again: ``prepare`` did it.
        """
        if not isinstance(prepared, PreparedEdit):
            raise ValueError(
                f"edit() runs a PreparedEdit, got {type(prepared).__name__}; make one with "
                "pipe.prepare(image, source_prompt, target_prompt, mask=...)"
            )
        if inversion is None:
            inversion = self.invert(prepared)
        return self._run(prepared, inversion, self._plan(prepared, inversion))

    def _run(self, prepared: PreparedEdit, inversion: Inversion, plan: _Plan):
        config = plan.config
        schedule = plan.schedule
        self._configure(config)
        start = time.perf_counter()
        total = config.steps
        trajectory = inversion.trajectory.to(self.device)
        z_source = trajectory[-1].clone()
        z_edit = z_source.clone()
        uncond_all = inversion.uncond.to(self.device)

        for i, t in enumerate(schedule.timesteps):
            uncond = uncond_all[i : i + 1]
            if joint_step(config, i):
                # 1-3 in one UNet call: outside MAG neither branch waits for the other.
                z_source_next, eps_edit, maps = self._joint_step(
                    inversion, plan, i, t, z_source, z_edit, uncond
                )
                z_source, z_edit = self._denoise_step(plan, i, t, eps_edit, z_edit, z_source_next)
                yield self._denoise_event(plan, maps, z_edit, i, start)
                continue
            # 1. Reconstruction branch: its maps at this step are recorded once and serve every
            #    guidance iteration and the editing branch's denoising step (the reference path
            #    runs it after guidance, as Algorithm 1 line 8 does).
            if not config.reference:
                z_source_next = self._reconstruct(inversion, plan, i, t, z_source, uncond)
            # 2. MAG (Algorithm 1): masked gradient updates of z*_t.
            if config.guide_at(i):
                delta = step_size(config.constraint, schedule.alpha(t))
                steps = guide(
                    z_edit,
                    self._gradient(plan, i, t, z_source),
                    plan.update_mask,
                    delta,
                    config.max_iter,
                    config.early_stop,
                )
                for step in steps:
                    z_edit = step.z
                    plan.losses.append(
                        {
                            "step": i + 1,
                            "iteration": step.iteration,
                            "loss": step.loss,
                            "ratio": step.ratio,
                            "objective": step.objective,
                        }
                    )
                    yield EditEvent(
                        phase="guidance",
                        step=i + 1,
                        total=total,
                        iteration=step.iteration,
                        max_iter=config.max_iter,
                        loss=step.loss,
                        in_mask_ratio=step.ratio,
                        elapsed=time.perf_counter() - start,
                    )
                self._check_finite(z_edit, i + 1, "edited")
            if config.reference:
                z_source_next = self._reconstruct(inversion, plan, i, t, z_source, uncond)
            # 3. Editing branch with the injected maps (Eq. 4); its edit-word maps are kept.
            inject = CallPlan(
                inject_row=1,
                inject_cross=config.cross_inject_at(i),
                inject_self=config.self_inject_at(i),
                collect_row=1,
                collect_level=plan.level,
            )
            eps, maps = self._unet_call(
                plan, inject, t, torch.cat([z_edit, z_edit]), torch.cat([uncond, plan.target_emb])
            )
            eps_edit = eps[0:1] + config.guidance_scale * (eps[1:2] - eps[0:1])
            # 4. DDIM step of the editing branch; latent blend in the last steps.
            z_source, z_edit = self._denoise_step(plan, i, t, eps_edit, z_edit, z_source_next)
            yield self._denoise_event(plan, maps, z_edit, i, start)

        edit_seconds = time.perf_counter() - start
        decode_start = time.perf_counter()
        decoded = self.decode_latents(z_edit)
        image = images.tensor_to_image(decoded[0])
        union = prepared.mask
        composited = images.composite(inversion.original, image, union)
        yield EditResult(
            image=image,
            composited=composited,
            mask=union,
            config=config,
            source_prompt=prepared.source_prompt,
            target_prompt=prepared.target_prompt,
            words=prepared.words,
            negative_word=prepared.negative_word,
            timings={  # what this edit spent: an inversion from the cache took it no time
                "inversion": 0.0 if inversion.cached else inversion.seconds,
                "editing": edit_seconds,
                "decode": time.perf_counter() - decode_start,
            },
            losses=plan.losses,
            steps=plan.steps,
            latents=z_edit,
            source_latents=z_source,
            inversion_cached=inversion.cached,
        )

    def _denoise_step(self, plan: _Plan, i: int, t: int, eps_edit, z_edit, z_source_next):
        """DDIM step of the editing branch and the latent blend; returns (z_source, z_edit)."""
        z_edit = plan.schedule.prev(eps_edit, t, z_edit)
        if plan.config.blend_at(i):
            z_edit = latent_blend(z_edit, z_source_next, plan.blend_mask)
        self._check_finite(z_edit, i + 1, "edited")
        self._check_finite(z_source_next, i + 1, "reconstruction")
        return z_source_next, z_edit

    @torch.no_grad()
    def _joint_step(self, inversion, plan: _Plan, i: int, t: int, z_source, z_edit, uncond):
        """Both branches of step i in one UNet call (a step without MAG).

        Rows [source-uncond, source-cond, edit-uncond, edit-cond]; with direct inversion the
        reconstruction is the inversion trajectory, so rows [source-cond, edit-uncond, edit-cond],
        the first only while something is injected. The source-cond row's maps are recorded and
        injected into the edit-cond row of the same call (rows are processed recorded row first).
        Returns (the reconstruction's next latent, the edit's guided noise (1, 4, h, w)).
        """
        config = plan.config
        record_cross, record_self = config.cross_inject_at(i), config.self_inject_at(i)
        direct = inversion.method == "direct"
        if direct:
            source = [(z_source, plan.source_emb)] if record_cross or record_self else []
        else:
            source = [(z_source, uncond), (z_source, plan.source_emb)]
        rows = [*source, (z_edit, uncond), (z_edit, plan.target_emb)]
        edit = len(rows) - 1
        call = CallPlan(
            record_row=len(source) - 1 if source else None,
            record_cross=record_cross,
            record_self=record_self,
            inject_row=edit,
            inject_cross=record_cross,
            inject_self=record_self,
            collect_row=edit,
            collect_level=plan.level,
        )
        latents = torch.cat([z for z, _ in rows])
        emb = torch.cat([e for _, e in rows])
        eps, maps = self._unet_call(plan, call, t, latents, emb)
        g = config.guidance_scale
        eps_edit = eps[edit - 1 : edit] + g * (eps[edit : edit + 1] - eps[edit - 1 : edit])
        if direct:
            return inversion.trajectory[config.steps - i - 1].to(self.device), eps_edit, maps
        eps_source = eps[0:1] + g * (eps[1:2] - eps[0:1])
        return plan.schedule.prev(eps_source, t, z_source), eps_edit, maps

    @torch.no_grad()
    def _unet_call(
        self, plan: _Plan, call: CallPlan, t: int, latents: torch.Tensor, emb: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One UNet call of a denoising step at timestep t under ``call``.

        Returns the noise (B, 4, h, w) float32 and the maps of ``plan.loss_layers`` that ``call``
        collects ([] when it collects none). Inputs are copied into fixed tensors, so on a GPU
        each (call plan, batch) is a CUDA graph captured at first use; both outputs are
        overwritten by the next call of the same kind.
        """
        key = (tuple(dataclasses.astuple(call)), tuple(latents.shape), tuple(emb.shape))
        if key not in plan.calls:
            latents_in, emb_in = torch.empty_like(latents), torch.empty_like(emb)
            # Locals, not the plan: the graph stored in plan.calls must not reference the plan.
            controller, eps_fn, t_now, layers = (
                self.controller,
                self._eps,
                plan.t_now,
                plan.loss_layers,
            )

            def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
                with controller.plan(call):
                    eps = eps_fn(latents_in, t_now, emb_in)
                if call.collect_row is None:
                    return eps, []
                return eps, [controller.collected[name] for name in layers]

            plan.calls[key] = (latents_in, emb_in, CapturedStep(run, self._graphs(plan.config)))
        else:
            plan.calls[key][2].verify_next()  # a later step: check the first replay
        latents_in, emb_in, step = plan.calls[key]
        plan.t_now.fill_(t)
        latents_in.copy_(latents)
        emb_in.copy_(emb)
        return step()

    def _reconstruct(self, inversion, plan: _Plan, i: int, t: int, z_source, uncond):
        """Record the reconstruction branch's maps at step i and return its next latent."""
        config = plan.config
        record_cross, record_self = config.cross_inject_at(i), config.self_inject_at(i)
        if inversion.method == "direct":
            # Direct inversion: the reconstruction branch is the inversion trajectory itself, so
            # only its conditional maps are needed (and only while something is injected).
            if record_cross or record_self:
                record = CallPlan(record_row=0, record_cross=record_cross, record_self=record_self)
                self._unet_call(plan, record, t, z_source, plan.source_emb)
            return inversion.trajectory[config.steps - i - 1].to(self.device)
        record = CallPlan(record_row=1, record_cross=record_cross, record_self=record_self)
        eps, _ = self._unet_call(
            plan, record, t, torch.cat([z_source, z_source]), torch.cat([uncond, plan.source_emb])
        )
        eps = eps[0:1] + config.guidance_scale * (eps[1:2] - eps[0:1])
        return plan.schedule.prev(eps, t, z_source)

    @torch.no_grad()
    def _denoise_event(self, plan: _Plan, maps, z_edit, i: int, start: float) -> EditEvent:
        config = plan.config
        if self.device.type == "meta":  # shapes only: no values to report
            return EditEvent(phase="denoise", step=i + 1, total=config.steps)
        ratios, losses = [], []
        for region in plan.regions:
            ratios.append(
                in_mask_ratio(config.constraint, maps, region.positions, region.attention_mask)
            )
            losses.append(
                constraint_loss(
                    config.constraint,
                    maps,
                    region.positions,
                    region.attention_mask,
                    config.spatial_lambda,
                )
            )
        loss = multi_region_loss(losses, [r.weight for r in plan.regions]) * config.scale
        ratio = float(torch.stack(ratios).mean())
        plan.steps.append({"step": i + 1, "loss": float(loss), "ratio": ratio})
        positions = [p for r in plan.regions for pos in r.positions for p in pos]
        lh, lw = z_edit.shape[-2:]
        ah, aw = lh >> plan.level, lw >> plan.level
        heat = torch.stack([m[:, :, positions].mean(-1).mean(0) for m in maps]).mean(0)
        return EditEvent(
            phase="denoise",
            step=i + 1,
            total=config.steps,
            loss=float(loss),
            in_mask_ratio=ratio,
            preview=latents_to_rgb(z_edit),
            attention=normalize_map(heat.reshape(ah, aw).float().cpu().numpy()),
            elapsed=time.perf_counter() - start,
        )
