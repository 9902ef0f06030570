"""A recipe: everything that made an edit, as JSON, so that it can be replayed.

It holds the model's id, the photo's hash (of its pixels, not its file), the prompts, each
region's words, weight and mask (run-length encoded at the photo's size), the negative word, every
setting (``EditConfig``) and the package's version. No step of an edit is random (DDIM with eta 0,
null-text inversion and MAG are deterministic), so replaying a recipe with the same model, device
and dtype gives the same PNG, byte for byte.

A recipe is read strictly (:meth:`Recipe.from_json`): unknown or missing keys, wrong types, a mask
whose runs do not add up to its size, or a file over MAX_BYTES are refused with an
``InputError`` naming the recipe, before anything else happens.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from magedit import __version__, images
from magedit.config import EditConfig
from magedit.errors import InputError, escape_braces
from magedit.hub import public_name

if TYPE_CHECKING:
    from magedit.pipeline import MagEditPipeline, PreparedEdit, Region

KIND = "magedit-recipe"
VERSION = 1
# A recipe is a few kilobytes; the runs of a photo-sized mask at most about a megabyte. A larger
# file is not one of ours.
MAX_BYTES = 8 * 2**20
MAX_RUNS = 2**20  # runs in one mask: a megapixel checkerboard would need more, a region never
MAX_REGIONS = 8
MAX_TEXT = 4000  # characters of a prompt or a word (prompts.check_prompt refuses more anyway)


def _refused(text: str) -> InputError:
    """The recipe's error: ``text`` quotes the file's own content, so its braces are text."""
    return InputError("recipe", escape_braces(text))


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """A bool (H, W) mask as runs of equal pixels in row-major order, the first run counting
    False pixels (0 when the first pixel is inside): {"size": [H, W], "counts": [...]}."""
    flat = np.asarray(mask, bool).ravel()
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(edges).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def rle_decode(rle: Any, where: str = "the mask") -> np.ndarray:
    """The mask of ``rle_encode``'s form; InputError naming ``where`` for anything else."""

    def refuse(problem: str) -> InputError:
        return _refused(f"the recipe's {where} {problem}")

    if not isinstance(rle, dict) or set(rle) != {"size", "counts"}:
        raise refuse('must be {"size": [height, width], "counts": [runs]}')
    size, counts = rle["size"], rle["counts"]
    if not (
        isinstance(size, list)
        and len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise refuse(f"size is {str(size)[:40]}; give [height, width] in pixels")
    height, width = size
    if height * width > images.MAX_PIXELS:
        raise refuse(f"is {width}x{height}: over {images.MAX_PIXELS // 10**6} megapixels")
    if not isinstance(counts, list) or not counts or len(counts) > MAX_RUNS:
        raise refuse(f"counts must be a list of 1 to {MAX_RUNS} runs")
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        raise refuse("counts must be whole numbers of pixels, 0 or more")
    if sum(counts) != height * width:
        raise refuse(f"runs add up to {sum(counts)} pixels, not {width}x{height}")
    values = np.arange(len(counts)) % 2 == 1  # the first run is outside
    return np.repeat(values, counts).reshape(height, width)


@dataclasses.dataclass(frozen=True)
class RecipeRegion:
    words: list[str]
    weight: float
    mask: np.ndarray  # (H, W) bool at the photo's size


@dataclasses.dataclass(frozen=True)
class Recipe:
    """An edit, ready to be replayed (see the module's docstring)."""

    model: str
    photo_hash: str
    photo_size: tuple[int, int]  # (height, width)
    source_prompt: str
    target_prompt: str
    regions: tuple[RecipeRegion, ...]
    negative_word: str | None
    negative_prompt: str | None
    config: EditConfig
    version: str = __version__

    @classmethod
    def of(cls, prepared: PreparedEdit, model: str) -> Recipe:
        """The recipe of a prepared edit on the pipeline of ``model`` (named as
        ``hub.public_name`` names it: a local folder by its name)."""
        return cls(
            model=public_name(model),
            photo_hash=prepared.image_key,
            photo_size=tuple(prepared.original.shape[:2]),
            source_prompt=prepared.source_prompt,
            target_prompt=prepared.target_prompt,
            regions=tuple(RecipeRegion(list(r.words), r.weight, r.mask) for r in prepared.regions),
            negative_word=prepared.negative_word,
            negative_prompt=prepared.negative_prompt if prepared.negative_word else None,
            config=prepared.config,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "recipe_version": VERSION,
            "magedit": self.version,
            "model": self.model,
            "photo": {"sha256": self.photo_hash, "size": list(self.photo_size)},
            "source_prompt": self.source_prompt,
            "target_prompt": self.target_prompt,
            "regions": [
                {"words": r.words, "weight": r.weight, "mask": rle_encode(r.mask)}
                for r in self.regions
            ],
            "negative_word": self.negative_word,
            "negative_prompt": self.negative_prompt,
            "settings": self.config.to_dict(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, photo_hash: str | None = None) -> Recipe:
        """Read a recipe strictly; InputError (field "recipe") says what is wrong. With
        ``photo_hash``, a recipe of another photo is refused before its masks are decoded."""
        if len(text) > MAX_BYTES:
            raise _refused(f"the recipe is {len(text)} bytes; a recipe is at most {MAX_BYTES}")
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as error:
            raise _refused(f"the recipe is not JSON ({str(error)[:80]})") from None
        except RecursionError:  # thousands of nested brackets
            raise _refused("the recipe is nested too deeply to be a recipe") from None
        if photo_hash is not None and isinstance(data, dict):
            photo = data.get("photo")
            if isinstance(photo, dict) and photo.get("sha256") != photo_hash:
                raise _refused(
                    "the photo is not the recipe's (its pixels differ): give the recipe's photo "
                    "to replay it",
                )
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> Recipe:
        def refuse(problem: str) -> InputError:
            return _refused(f"the recipe's {problem}")

        keys = {
            "kind", "recipe_version", "magedit", "model", "photo", "source_prompt",
            "target_prompt", "regions", "negative_word", "negative_prompt", "settings",
        }  # fmt: skip
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise _refused(f'this is not a MAG-Edit recipe (no "kind": "{KIND}")')
        if set(data) != keys:
            extra, missing = sorted(set(data) - keys), sorted(keys - set(data))
            raise refuse(f"keys are wrong: unknown {extra}, missing {missing}")
        if data["recipe_version"] != VERSION:
            raise refuse(f"version is {data['recipe_version']!r}; this MAG-Edit reads {VERSION}")

        def text(name: str, value: Any, optional: bool = False) -> str | None:
            if value is None and optional:
                return None
            if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
                raise refuse(f"{name} must be text of 1 to {MAX_TEXT} characters")
            return value

        photo = data["photo"]
        if not isinstance(photo, dict) or set(photo) != {"sha256", "size"}:
            raise refuse('photo must be {"sha256": ..., "size": [height, width]}')
        sha = photo["sha256"]
        if not (isinstance(sha, str) and len(sha) == 64 and set(sha) <= set("0123456789abcdef")):
            raise refuse("photo hash must be 64 hexadecimal digits")
        size = photo["size"]
        if not (isinstance(size, list) and len(size) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size
        )):  # fmt: skip
            raise refuse("photo size must be [height, width] in pixels")
        regions = data["regions"]
        if not isinstance(regions, list) or not 1 <= len(regions) <= MAX_REGIONS:
            raise refuse(f"regions must be a list of 1 to {MAX_REGIONS} regions")
        parsed = []
        for number, region in enumerate(regions, 1):
            if not isinstance(region, dict) or set(region) != {"words", "weight", "mask"}:
                raise refuse(f'region {number} must be {{"words", "weight", "mask"}}')
            words = region["words"]
            if not isinstance(words, list) or not words or len(words) > 16:
                raise refuse(f"region {number}'s words must be a list of 1 to 16 words")
            words = [text(f"region {number}'s words", w) for w in words]
            weight = region["weight"]
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise refuse(f"region {number}'s weight must be a number")
            if not (math.isfinite(weight) and weight > 0):
                raise refuse(f"region {number}'s weight must be above 0")
            mask = rle_decode(region["mask"], f"region {number}'s mask")
            if list(mask.shape) != size:
                raise refuse(f"region {number}'s mask is not the photo's size {size}")
            parsed.append(RecipeRegion(words, float(weight), mask))
        settings = data["settings"]
        if not isinstance(settings, dict):
            raise refuse("settings must be an object of EditConfig's fields")
        try:
            config = EditConfig.from_dict(settings)
        except (ValueError, TypeError) as error:
            raise refuse(f"settings are refused: {error}") from None
        return cls(
            model=text("model", data["model"]),
            photo_hash=sha,
            photo_size=(size[0], size[1]),
            source_prompt=text("source prompt", data["source_prompt"]),
            target_prompt=text("target prompt", data["target_prompt"]),
            regions=tuple(parsed),
            negative_word=text("negative word", data["negative_word"], optional=True),
            negative_prompt=text("negative prompt", data["negative_prompt"], optional=True),
            config=config,
            version=text("version", data["magedit"]),
        )

    def check(self, photo: np.ndarray, model: str) -> None:
        """InputError naming what differs when ``photo`` (HWC uint8) or the ``model`` is not the
        recipe's: a replay would not give its result."""
        differs = []
        if images.image_hash(photo) != self.photo_hash:
            height, width = photo.shape[:2]
            said = f"{width}x{height}" if (height, width) != self.photo_size else "its size"
            differs.append(
                f"the photo is not the recipe's (its pixels differ; the recipe's is "
                f"{self.photo_size[1]}x{self.photo_size[0]}, this one {said})"
            )
        if (named := public_name(model)) != self.model:
            differs.append(f"the model is '{named}', the recipe's is '{self.model}'")
        if differs:
            raise _refused(
                "; ".join(differs) + ": give the recipe's photo and load its model to replay it",
            )

    def region_inputs(self) -> list[Region]:
        from magedit.pipeline import Region

        return [Region(mask=r.mask, words=r.words, weight=r.weight) for r in self.regions]

    def prepare(self, pipe: MagEditPipeline, photo: np.ndarray) -> PreparedEdit:
        """The recipe's edit of ``photo`` on ``pipe``, checked (``check``) and prepared."""
        self.check(photo, pipe.model_id)
        return pipe.prepare(
            photo,
            self.source_prompt,
            self.target_prompt,
            regions=self.region_inputs(),
            negative_word=self.negative_word,
            negative_prompt=self.negative_prompt,
            config=self.config,
        )
