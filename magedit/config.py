"""Every knob of an edit, with the paper's defaults (MAG-Edit, appendix B) and named presets.

Step counts follow the paper's convention: the denoising loop runs t = T, T-1, ..., 1 and a range
"[T, tau]" means the first ``T - tau`` denoising steps. With T = 50 and tau1 = 10 the
cross-attention injection is on for the first 40 steps (80%), which is what the authors' code does
with ``cross_replace_steps = 0.8``.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from magedit.errors import InputError

Constraint = Literal["token_ratio", "spatial_ratio"]
InversionMethod = Literal["null_text", "direct", "ddim"]

CONSTRAINTS: tuple[str, ...] = ("token_ratio", "spatial_ratio")
INVERSION_METHODS: tuple[str, ...] = ("null_text", "direct", "ddim")
PAPER_STEPS = 50
# The paper's model (section 5.1). MAGEDIT_MODEL names another Hub id or a local folder.
SD14_MODEL = "CompVis/stable-diffusion-v1-4"
# Segment Anything's models (Meta's checkpoints), here so the interfaces list them without
# importing torch. vit_b (91M parameters) is the fastest per photo and close to vit_h on clicks.
SAM_MODEL_TYPES: tuple[str, ...] = ("vit_b", "vit_l", "vit_h")
DEFAULT_SAM_MODEL = "vit_b"


def _refuse(field: str, rule: str) -> None:
    raise InputError(field, f"{{{field}}} {rule}")


def tiny_model_id(seed: int = 0) -> str:
    """The model id of the random-weight pipeline (``MagEditPipeline.tiny``) of ``seed``."""
    return f"tiny-{seed}"


def default_model() -> str:
    """The model to load when none is named: $MAGEDIT_MODEL, else SD v1.4."""
    return os.environ.get("MAGEDIT_MODEL") or SD14_MODEL


@dataclass(frozen=True)
class EditConfig:
    """One edit's settings. Defaults are the paper's (appendix B) unless a comment says otherwise."""

    # Sampling: DDIM with T = 50 steps and classifier-free guidance 7.5 (appendix B).
    steps: int = 50
    guidance_scale: float = 7.5
    # Cross-attention injection of common tokens during [T, tau1] (Eq. 4): tau1 = 10 for colour and
    # texture, 40 for object/shape edits (appendix B).
    tau1: int = 10
    # Self-attention injection (layers with <= 32x32 queries) during [T, tau_self] (appendix B: 25).
    tau_self: int = 25
    # MAG gradient guidance during [T, tau2] (appendix B: tau2 = 25).
    tau2: int = 25
    # MAX_IT, the number of guidance updates per guided step (appendix B: 15).
    max_iter: int = 15
    # Which constraint MAG maximises: token ratio (Eq. 5) or spatial ratio (Eq. 6).
    constraint: Constraint = "token_ratio"
    # lambda_p of Eq. 7: weight of the positive constraint (appendix B: 2.5; the authors' code uses
    # it for every token-ratio edit). Exposed in the UI as "granularity".
    scale: float = 2.5
    # lambda_ng of Eq. 7 (appendix B: 5.5); used only when a negative word is given.
    negative_scale: float = 5.5
    # lambda of Eq. 6 (section 4.2: 3).
    spatial_lambda: float = 3.0
    # Latent blend during t in [blend_steps, 0], i.e. after each of the last 15 steps (appendix B).
    blend_steps: int = 15
    # Inversion of the real image: null-text (the paper), direct, or plain DDIM.
    inversion: InversionMethod = "null_text"
    # Null-text inversion (Mokady et al., as in the paper): inner Adam steps per timestep, learning
    # rate lr * (1 - i / 100) at step i, early stop when the loss is below eps + i * 2e-5.
    null_inner_steps: int = 10
    null_lr: float = 1e-2
    null_epsilon: float = 1e-5
    # Resolution (pixels per side) of the cross-attention maps the loss reads; None = latent / 4,
    # which is 16 for a 512 x 512 image as in the paper (section 5.1).
    attention_res: int | None = None
    # Long side of the processing size in pixels (the paper works at 512; sides are multiples of
    # 64 and the aspect ratio is kept). Smaller is faster and coarser.
    resolution: int = 512
    # Run Algorithm 1 literally (reconstruction forward every iteration, full UNet forward).
    # Slower; kept so tests and benchmarks can prove the fast path gives the same numbers.
    reference: bool = False
    # Speed options, off by default (not in the paper). early_stop: end a step's MAG iterations
    # once an iteration lowered the loss by less than this fraction of the previous iteration's
    # loss (0 = never: all MAX_IT iterations, as the paper). Changes the result when it triggers.
    early_stop: float = 0.0
    # Run the UNet in torch.channels_last memory format, set on the pipeline's UNet when an
    # inversion or edit starts. None (the default): on a GPU yes, on a CPU no. On an H100 in bf16
    # the contiguous format spends about a third of the UNet's GPU time converting activations to
    # NHWC for cuDNN (a null-text step 20.2 -> 16.3 ms, a MAG iteration 13.5 -> 9.4 ms with it;
    # benchmarks/unet_calls.py). Same numbers up to float rounding.
    channels_last: bool | None = None
    # torch.compile the UNet (default mode), once per pipeline and reused by later edits; the first
    # call pays the compilation. Where compilation is unavailable or fails, a RuntimeWarning says
    # so and the UNet runs uncompiled. Same numbers up to float rounding. Experimental: dynamo
    # recompiles the attention processors per call plan and map size (it hits its recompile
    # limit), so on a CPU even a tiny model's first compiled edit takes minutes; GPU gain unmeasured.
    compile: bool = False
    # On a GPU, capture a MAG iteration (forward to the loss, backward to z*_t), a null-text step
    # and the no-grad UNet calls of the inversions and the denoising steps into CUDA graphs and
    # replay them: the same kernels without Python's per-kernel launch cost (editing 27.3 s
    # eager vs 5.6 s on an H100). No effect on a CPU, with compile or with reference. Where
    # capture fails, or a graph's first replay at a new timestep differs from an eager call, a
    # warning says so and that step runs eagerly.
    cuda_graphs: bool = True

    def __post_init__(self) -> None:
        # Messages name fields as {field}: each interface writes its own word there (a flag, a
        # label; errors.InputError). The bounds are what makes a config valid; the interfaces
        # offer narrower ranges (magedit.controls).
        ints = ("steps", "tau1", "tau_self", "tau2", "max_iter", "blend_steps", "null_inner_steps")
        for name in ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                _refuse(name, f"must be an integer, got {value!r}")
        if not 1 <= self.steps <= 1000:
            _refuse("steps", f"must be between 1 and 1000, got {self.steps}")
        for name in ("tau1", "tau_self", "tau2", "blend_steps"):
            value = getattr(self, name)
            if not 0 <= value <= self.steps:
                _refuse(name, f"must be between 0 and steps ({self.steps}), got {value}")
        if not 0 <= self.max_iter <= 200:
            _refuse("max_iter", f"must be between 0 and 200, got {self.max_iter}")
        if not 0 <= self.null_inner_steps <= 100:
            _refuse("null_inner_steps", f"must be between 0 and 100, got {self.null_inner_steps}")
        reals = (
            "guidance_scale",
            "scale",
            "negative_scale",
            "spatial_lambda",
            "null_lr",
            "null_epsilon",
        )
        for name in reals:
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                _refuse(name, f"must be a finite number, got {value!r}")
            if value < 0:
                _refuse(name, f"must be >= 0, got {value}")
        early = self.early_stop
        if isinstance(early, bool) or not isinstance(early, int | float) or not 0 <= early < 1:
            _refuse("early_stop", f"must be a fraction in [0, 1), got {early!r}")
        for name in ("reference", "channels_last", "compile", "cuda_graphs"):
            value = getattr(self, name)
            if not isinstance(value, bool) and not (name == "channels_last" and value is None):
                _refuse(name, f"must be True or False, got {value!r}")
        if self.guidance_scale > 50:
            _refuse("guidance_scale", f"must be at most 50, got {self.guidance_scale}")
        if self.constraint not in CONSTRAINTS:
            _refuse("constraint", f"must be one of {CONSTRAINTS}, got {self.constraint!r}")
        if self.inversion not in INVERSION_METHODS:
            _refuse("inversion", f"must be one of {INVERSION_METHODS}, got {self.inversion!r}")
        if isinstance(self.resolution, bool) or not isinstance(self.resolution, int):
            _refuse("resolution", f"must be an integer, got {self.resolution!r}")
        if not 64 <= self.resolution <= 2048 or self.resolution % 64:
            _refuse(
                "resolution",
                f"must be a multiple of 64 between 64 and 2048, got {self.resolution}",
            )
        if self.attention_res is not None and self.attention_res < 1:
            _refuse("attention_res", f"must be positive, got {self.attention_res}")

    # The schedule, as predicates on the 0-based denoising step index i (i = 0 is t = T).
    def cross_inject_at(self, i: int) -> bool:
        return i < self.steps - self.tau1

    def self_inject_at(self, i: int) -> bool:
        return i < self.steps - self.tau_self

    def guide_at(self, i: int) -> bool:
        return self.max_iter > 0 and i < self.steps - self.tau2

    def blend_at(self, i: int) -> bool:
        return i >= self.steps - self.blend_steps

    def with_steps(self, steps: int) -> EditConfig:
        """The same schedule on ``steps`` denoising steps: every tau is scaled proportionally."""

        def rescale(tau: int) -> int:
            return round(tau * steps / self.steps)

        return replace(
            self,
            steps=steps,
            tau1=rescale(self.tau1),
            tau_self=rescale(self.tau_self),
            tau2=rescale(self.tau2),
            blend_steps=rescale(self.blend_steps),
        )

    def replace(self, **changes: Any) -> EditConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EditConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown EditConfig fields {unknown}; known fields are {sorted(known)}"
            )
        return cls(**data)


# Presets (section 5.1, appendix B): token ratio for colour and texture, spatial ratio (with the
# late cross-attention release tau1 = 40, so the shape may change) for object edits.
PRESETS: dict[str, EditConfig] = {
    "color": EditConfig(constraint="token_ratio", tau1=10),
    "texture": EditConfig(constraint="token_ratio", tau1=10),
    "object": EditConfig(constraint="spatial_ratio", tau1=40),
}


def preset(name: str, **overrides: Any) -> EditConfig:
    """The named preset (``color``, ``texture`` or ``object``) with ``overrides`` applied."""
    if name not in PRESETS:
        raise InputError("preset", f"unknown {{preset}} {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)


# The engine's methods, as `magedit bench` and the compare mode run them: MAG-Edit as configured,
# and the baselines on the same inversion, mask and schedule: prompt-to-prompt with the latent
# blend (MAX_IT = 0: no guidance) and without it (nothing outside the mask is restored either).
METHODS: dict[str, dict[str, Any]] = {
    "magedit": {},
    "p2p-blend": {"max_iter": 0},
    "p2p": {"max_iter": 0, "blend_steps": 0},  # blend_at(i) is never true with 0 steps
}
METHOD_LABELS = {"magedit": "MAG-Edit", "p2p-blend": "P2P + latent blend", "p2p": "P2P"}


def method_variant(config: EditConfig, method: str) -> EditConfig:
    """``config`` as ``method`` (a key of METHODS) runs it."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    return config.replace(**METHODS[method])


# --tiny means quick: random weights give noise whatever the settings, so the page and the
# command line run a few seconds' worth on a CPU instead of the paper's many minutes (a 512-px
# null-text edit of 50 steps and 15 iterations ran over 11 minutes on a 2-core CPU).
TINY_QUICK: dict[str, Any] = {"steps": 20, "max_iter": 3, "inversion": "direct", "resolution": 256}


def config_from(name: str | None = None, steps: int | None = None, **fields: Any) -> EditConfig:
    """Settings as the interfaces give them -> an EditConfig: the one way the page, the command
    line and the benchmark build one.

    The preset ``name`` (None: the paper's defaults), rescaled to ``steps`` denoising steps when
    given (its taus scaled, ``EditConfig.with_steps``), then every field of ``fields`` that is not
    None. Raises ValueError naming the field ("max_iter must be ...") or the preset.
    """
    config = EditConfig() if name is None else preset(name)
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int):
            _refuse("steps", f"must be an integer, got {steps!r}")
        if not 1 <= steps <= 1000:
            _refuse("steps", f"must be between 1 and 1000, got {steps}")
        config = config.with_steps(steps)
    return config.replace(**{key: value for key, value in fields.items() if value is not None})
