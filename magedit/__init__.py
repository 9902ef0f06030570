"""MAG-Edit Studio: localized text-guided image editing (mask-based attention-adjusted guidance).

Importing the package is cheap: the pipeline (and torch/diffusers with it) loads on first use.
"""

from typing import TYPE_CHECKING, Any

from magedit.config import PRESETS, EditConfig, preset

__all__ = [
    "PRESETS",
    "EditConfig",
    "preset",
    "MagEditPipeline",
    "Region",
    "PreparedEdit",
    "EditEvent",
    "EditResult",
]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from magedit.pipeline import EditEvent, EditResult, MagEditPipeline, PreparedEdit, Region


def __getattr__(name: str) -> Any:
    if name in {"MagEditPipeline", "Region", "PreparedEdit", "EditEvent", "EditResult"}:
        from magedit import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'magedit' has no attribute {name!r}")
