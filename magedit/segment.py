"""Segment Anything: clicks and a box -> masks, with each image's embedding computed once.

SAM's cost splits in two: the image encoder (a ViT over the image resized to 1024 pixels on its
long side; a fraction of a second on a GPU, seconds on a CPU) runs once per image, and each click
then costs only the prompt encoder and the mask decoder (milliseconds). ``Segmenter`` keeps the
embeddings of the last images in an LRU keyed by the image's hash, so any number of sessions can
click on different images through one model: unlike ``SamPredictor``, no image is ever "set" on
the shared object, so no session can see another's image.

Formats:

- image: ``np.ndarray`` HWC ``uint8`` RGB in [0, 255] (``images.load_image``).
- points: (x, y) in pixels of the image, x to the right and y down, with labels 1 (on the object)
  or 0 (not on it).
- box: (x0, y0, x1, y1) in pixels, the object's top-left and bottom-right corners.
- masks: HxW ``bool`` at the image's own size.

    seg = Segmenter.from_pretrained("vit_b")        # or Segmenter.tiny() offline
    key = seg.embed(image)                          # the expensive step, once per image
    best, *others = seg.predict(key, points=[(320, 240)], labels=[1])
    again = seg.predict(key, points=[(320, 240), (40, 30)], labels=[1, 0],
                        mask_input=best.logits)     # refine with a negative click
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from magedit import images
from magedit.config import DEFAULT_SAM_MODEL, SAM_MODEL_TYPES
from magedit.errors import InputError, MissingFile

# Meta publishes the checkpoints at dl.fbaipublicfiles.com/segment_anything/, not on the Hub.
# ybelkada/segment-anything (a community repository by the author of the transformers port of
# SAM) mirrors Meta's released .pth files under their release names in checkpoints/; they are
# downloaded once into the Hugging Face cache, like the Stable Diffusion weights.
SAM_REPO = "ybelkada/segment-anything"
SAM_FILES = {
    "vit_b": "checkpoints/sam_vit_b_01ec64.pth",
    "vit_l": "checkpoints/sam_vit_l_0b3195.pth",
    "vit_h": "checkpoints/sam_vit_h_4b8939.pth",
}
META_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
# $MAGEDIT_SAM_REPO replaces SAM_REPO; $MAGEDIT_SAM_CHECKPOINT is a local .pth path (when it starts
# with /, ./, ../ or ~) or the file to take from the repository instead of SAM_FILES[model_type].
REPO_ENV = "MAGEDIT_SAM_REPO"
CHECKPOINT_ENV = "MAGEDIT_SAM_CHECKPOINT"
# Clicks per mask. SAM was trained with up to a few tens of points per prompt; more add nothing
# but memory (12,000 points took 2.2 GB, 100,000 tried to allocate 80 GB).
MAX_POINTS = 64


@dataclass(frozen=True)
class MaskCandidate:
    """One mask SAM proposes for the prompts.

    mask:     (H, W) bool at the image's size.
    score:    SAM's prediction of the mask's IoU with the object (higher is better).
    coverage: share of the image inside the mask, in (0, MAX_MASK_COVERAGE].
    logits:   (1, 4e, 4e) float32 low-resolution logits (1x256x256 for SAM): pass them back as
              ``mask_input`` with more clicks to refine this mask.
    """

    mask: np.ndarray
    score: float
    coverage: float
    logits: np.ndarray


@dataclass(frozen=True)
class ImageEmbedding:
    """What ``SamPredictor.set_image`` keeps, for one image.

    features:      (1, C, e, e) float32 image embedding on the model's device (256x64x64 for SAM).
    original_size: (H, W) of the image.
    input_size:    (h, w) of the image resized to img_size on its long side, before padding.
    """

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]


class Segmenter:
    """Segment Anything over many images and sessions: ``embed`` once per image, ``predict`` per
    click. Thread-safe: the embedding cache is guarded by a lock, and a prediction reads only its
    own image's embedding."""

    def __init__(
        self,
        sam: Sam,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        model_id: str = "custom",
        cache_size: int = 8,
    ):
        if cache_size < 1:
            raise ValueError(f"cache_size is {cache_size}; keep at least 1 image embedding")
        self.device = torch.device(device)
        self.dtype = dtype
        self.model_id = model_id
        self.cache_size = cache_size
        # The image encoder (the expensive part) runs in ``dtype``; the prompt encoder and the
        # mask decoder stay float32: they cost little, and the prompt encoder multiplies float32
        # coordinates by its own buffer, which fails in half precision.
        self.sam = sam.to(self.device).eval().requires_grad_(False)
        self.sam.image_encoder.to(dtype)
        self.sam.prompt_encoder.float()
        self.sam.mask_decoder.float()
        self.transform = ResizeLongestSide(self.sam.image_encoder.img_size)
        self._cache: OrderedDict[str, ImageEmbedding] = OrderedDict()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        model_type: str = DEFAULT_SAM_MODEL,
        checkpoint: str | os.PathLike | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        cache_size: int = 8,
    ) -> Segmenter:
        """Load SAM ``model_type`` ("vit_b", "vit_l" or "vit_h") from a local checkpoint or the Hub.

        Args:
            checkpoint: a local ``.pth`` file (Meta's release, e.g. sam_vit_b_01ec64.pth). None:
                ``$MAGEDIT_SAM_CHECKPOINT`` if it names a local file, else the file downloaded once
                from the Hub into the Hugging Face cache (see ``SAM_REPO``). ``model_type="tiny"``
                loads the weights of ``magedit.tiny.tiny_sam`` from ``checkpoint``.
            device: default cuda if available, else cpu.
            dtype: the image encoder's dtype; default as the engine's (bf16 on recent GPUs, fp16
                on older ones, fp32 on the CPU).

        Raises:
            FileNotFoundError: ``checkpoint`` does not exist.
            ValueError: unknown model type, the download failed, or the file is not a checkpoint
                of that model type.
        """
        if model_type not in (*SAM_MODEL_TYPES, "tiny"):
            raise ValueError(
                f"model_type '{model_type}' is not a SAM model; use {', '.join(SAM_MODEL_TYPES)}"
            )
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype is None:
            dtype = torch.float32
            if device.type == "cuda":
                from magedit.pipeline import default_dtype

                dtype = default_dtype(device)
        path = checkpoint_path(model_type, checkpoint)
        state = _read_state_dict(path, model_type)
        sam = _build(model_type)
        _check_state_dict(sam, state, path, model_type)
        sam.load_state_dict(state)
        return cls(sam, device=device, dtype=dtype, model_id=model_type, cache_size=cache_size)

    @classmethod
    def tiny(cls, seed: int = 0, device: str | torch.device = "cpu", **kwargs: Any) -> Segmenter:
        """A random-weight SAM at img_size 64 (``magedit.tiny``): offline, masks are noise."""
        from magedit.tiny import tiny_sam

        return cls(tiny_sam(seed), device=device, model_id=f"tiny-sam-{seed}", **kwargs)

    # ------------------------------------------------------------------ embeddings
    @property
    def img_size(self) -> int:
        """The long side, in pixels, images are resized to for the image encoder."""
        return self.sam.image_encoder.img_size

    def embed(self, image: np.ndarray) -> str:
        """Compute the image's embedding unless it is cached; return its key (the image's hash).

        ``image`` is HWC uint8 RGB. The key can be passed to ``predict`` instead of the image while
        the embedding stays in the cache (the last ``cache_size`` images used).
        """
        _check_image(image)
        key = images.image_hash(image)
        self._embedding(key, image)
        return key

    def embedding(self, image_or_key: np.ndarray | str) -> ImageEmbedding:
        """The cached embedding of an image (computed now if it is an image not in the cache).

        Raises:
            RuntimeError: a key whose embedding is not (or no longer) in the cache.
        """
        if isinstance(image_or_key, str):
            return self._embedding(image_or_key, None)
        _check_image(image_or_key)
        return self._embedding(images.image_hash(image_or_key), image_or_key)

    def clear(self) -> None:
        """Forget every cached embedding."""
        with self._lock:
            self._cache.clear()

    def _embedding(self, key: str, image: np.ndarray | None) -> ImageEmbedding:
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
                return found
        if image is None:
            raise RuntimeError(
                f"no embedding is cached for the image key '{key[:12]}...' (the cache keeps the "
                f"last {self.cache_size} images); pass the image itself or call embed(image) again"
            )
        # Encoded outside the lock, so clicks on other, cached images are not held up. Two
        # sessions embedding the same new image at once both compute it (same result).
        embedding = self._encode(image)
        with self._lock:
            self._cache[key] = embedding
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return embedding

    @torch.no_grad()
    def _encode(self, image: np.ndarray) -> ImageEmbedding:
        # SamPredictor.set_image's steps: resize the long side to img_size (PIL, antialiased),
        # normalise with SAM's pixel mean and std, pad to a square, encode.
        resized = self.transform.apply_image(image)  # (h, w, 3) uint8
        pixels = torch.as_tensor(resized, device=self.device).permute(2, 0, 1)[None].float()
        padded = self.sam.preprocess(pixels)  # (1, 3, img_size, img_size)
        features = self.sam.image_encoder(padded.to(self.dtype)).float()  # (1, C, e, e)
        return ImageEmbedding(features, tuple(image.shape[:2]), tuple(resized.shape[:2]))

    # ------------------------------------------------------------------ prompts -> masks
    @torch.no_grad()
    def predict(
        self,
        image: np.ndarray | str,
        points: Sequence[Sequence[float]] | np.ndarray | None = None,
        labels: Sequence[int] | np.ndarray | None = None,
        box: Sequence[float] | np.ndarray | None = None,
        mask_input: np.ndarray | torch.Tensor | None = None,
        multimask: bool = True,
        image_size: tuple[int, int] | None = None,
    ) -> list[MaskCandidate]:
        """Masks for the prompts on an image, best first.

        Args:
            image: the HWC uint8 image (embedded now unless cached) or the key ``embed`` gave.
            points: N (x, y) points in pixels of the image.
            labels: N labels, 1 on the object and 0 off it; default all 1.
            box: (x0, y0, x1, y1) in pixels, or None.
            mask_input: the ``logits`` of a previous candidate of this image, (1, 4e, 4e) or
                (4e, 4e), to refine it with the new prompts.
            multimask: three candidates (SAM's answer to an ambiguous click: part, object, group)
                instead of one.
            image_size: with a key, the (H, W) the caller's points refer to; checked against the
                embedded image's size (an image cropped or resized since ``embed`` is refused).

        Returns:
            The candidates sorted by SAM's score, best first. Candidates that are empty or cover
            more than ``images.MAX_MASK_COVERAGE`` of the image are left out: no edit can use them.

        Raises:
            ValueError: bad prompts (a point outside the image, no point on the object and no box,
                a mask_input of the wrong shape), a size mismatch, or no usable candidate.
            RuntimeError: a key whose embedding is no longer cached.
        """
        # 1. The image's embedding (cached, or computed now).
        embedding = self.embedding(image)
        height, width = embedding.original_size
        if image_size is not None and tuple(image_size) != (height, width):
            raise ValueError(
                f"the image is now {image_size[1]}x{image_size[0]} pixels but it was "
                f"{width}x{height} when embedded; after cropping or resizing, call embed(image) "
                "again and click on the new image"
            )

        # 2. Check the prompts and map them to SAM's input frame (long side resized to img_size).
        coords, point_labels, box_xyxy = check_prompts(points, labels, box, (height, width))
        points_arg = None
        if coords is not None:
            coords = self.transform.apply_coords(coords, (height, width))  # (N, 2)
            points_arg = (
                torch.as_tensor(coords, dtype=torch.float32, device=self.device)[None],  # (1, N, 2)
                torch.as_tensor(point_labels, dtype=torch.int, device=self.device)[None],  # (1, N)
            )
        boxes_arg = None
        if box_xyxy is not None:
            box_xyxy = self.transform.apply_boxes(box_xyxy[None], (height, width))  # (1, 4)
            boxes_arg = torch.as_tensor(box_xyxy, dtype=torch.float32, device=self.device)
        masks_arg = self._mask_input(mask_input)

        # 3. Prompt encoder and mask decoder on the cached embedding (SamPredictor.predict_torch).
        sparse, dense = self.sam.prompt_encoder(points=points_arg, boxes=boxes_arg, masks=masks_arg)
        low_res, scores = self.sam.mask_decoder(
            image_embeddings=embedding.features,
            image_pe=self.sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )  # (1, K, 4e, 4e), (1, K) with K = 3 or 1

        # 4. Upscale to the image's size, threshold, keep the usable ones, best first.
        logits = self.sam.postprocess_masks(low_res, embedding.input_size, (height, width))
        masks = (logits[0] > self.sam.mask_threshold).cpu().numpy()  # (K, H, W)
        scores = scores[0].float().cpu().numpy()
        low_res = low_res[0].float().cpu().numpy()
        candidates, coverages = [], []
        for k in np.argsort(-scores, kind="stable"):
            coverage = float(masks[k].mean())
            coverages.append(coverage)
            if 0 < coverage <= images.MAX_MASK_COVERAGE:
                candidates.append(
                    MaskCandidate(masks[k], float(scores[k]), coverage, low_res[k : k + 1].copy())
                )
        if not candidates:
            raise ValueError(_no_usable_mask(coverages[0]))
        return candidates

    def _mask_input(self, mask_input: np.ndarray | torch.Tensor | None) -> torch.Tensor | None:
        if mask_input is None:
            return None
        side = self.sam.prompt_encoder.mask_input_size  # (4e, 4e)
        tensor = torch.as_tensor(np.asarray(mask_input, dtype=np.float32))
        if tensor.ndim == 2:
            tensor = tensor[None]
        if tuple(tensor.shape) != (1, *side):
            raise ValueError(
                f"mask_input has shape {tuple(np.shape(mask_input))}; pass the logits of a previous "
                f"candidate of this image, shape (1, {side[0]}, {side[1]})"
            )
        return tensor[None].to(self.device)  # (1, 1, 4e, 4e)


# ----------------------------------------------------------------------------------------------
# Checks


def check_prompts(
    points: Sequence[Sequence[float]] | np.ndarray | None,
    labels: Sequence[int] | np.ndarray | None,
    box: Sequence[float] | np.ndarray | None,
    size: tuple[int, int],
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Check clicks and a box against an image of ``size`` = (H, W).

    Returns:
        (coords (N, 2) float64, labels (N,) int64, box (4,) float64), each None when not given.

    Raises:
        ValueError: more than MAX_POINTS points, a point outside the image, labels other than 0/1
            or of another count, a box
            that is not inside the image with x0 < x1 and y0 < y1, or neither a point on the
            object nor a box.
    """
    height, width = size
    coords = point_labels = box_xyxy = None
    for what, given in (("points", points), ("labels", labels)):
        if given is not None and len(given) > MAX_POINTS:
            raise ValueError(
                f"{len(given)} {what} were given; Segment Anything takes at most {MAX_POINTS} "
                "clicks per mask (a few on the object and a few off it are usually enough)"
            )
    if points is not None and len(points) > 0:
        try:
            coords = np.asarray(points, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"points are {str(points)[:80]}; pass a list of (x, y) pairs of numbers in pixels"
            ) from None
        if coords.ndim != 2 or coords.shape[1] != 2:
            raise ValueError(f"points have shape {coords.shape}; pass a list of (x, y) pairs")
        if labels is None:
            point_labels = np.ones(len(coords), np.int64)
        else:
            point_labels = np.asarray(labels).astype(np.int64).reshape(-1)
            if len(point_labels) != len(coords) or not np.isin(point_labels, (0, 1)).all():
                raise ValueError(
                    f"labels are {np.asarray(labels).reshape(-1).tolist()} for {len(coords)} "
                    "points; "
                    "pass one label per point, 1 on the object and 0 off it"
                )
        for x, y in coords:
            if not (0 <= x < width and 0 <= y < height):
                raise ValueError(
                    f"the point ({x:g}, {y:g}) is outside the {width}x{height} image; click inside "
                    f"it (0 <= x < {width}, 0 <= y < {height}, in pixels from the top-left corner)"
                )
    elif labels is not None and len(labels) > 0:
        raise ValueError(f"{len(labels)} labels but no points; pass a point per label")
    if box is not None:
        box_xyxy = np.asarray(box, dtype=np.float64).reshape(-1)
        if box_xyxy.shape != (4,) or not np.isfinite(box_xyxy).all():
            raise ValueError(f"the box is {box}; pass (x0, y0, x1, y1) in pixels")
        x0, y0, x1, y1 = box_xyxy
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise ValueError(
                f"the box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is not inside the {width}x{height} "
                "image with x0 < x1 and y0 < y1; give its top-left and bottom-right corners"
            )
    if box_xyxy is None and (point_labels is None or not point_labels.any()):
        raise ValueError(
            "no point on the object and no box; click on the object to segment (negative points "
            "only say what is not part of it)"
        )
    return coords, point_labels, box_xyxy


def _no_usable_mask(best_coverage: float) -> str:
    if best_coverage == 0:
        return (
            "Segment Anything found no object at these prompts (the mask is empty); click on the "
            "object itself, or draw a box around it"
        )
    return (
        f"Segment Anything's mask covers {best_coverage:.1%} of the image, more than an edit can "
        "change; add a negative point on the background, or draw a box around the object"
    )


def _check_image(image: Any) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
        kind = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image)
        raise ValueError(
            f"the image is {kind}; pass an HxWx3 uint8 RGB array (use images.load_image)"
        )
    if image.shape[2] != 3:
        raise ValueError(f"the image has shape {image.shape}; pass an HxWx3 RGB array")


# ----------------------------------------------------------------------------------------------
# Checkpoints


def checkpoint_path(model_type: str, checkpoint: str | os.PathLike | None = None) -> Path:
    """The local path of the checkpoint for ``model_type``, downloading it if needed.

    ``checkpoint`` if given, else ``$MAGEDIT_SAM_CHECKPOINT`` when it is a local path, else the
    file ``$MAGEDIT_SAM_CHECKPOINT`` or ``SAM_FILES[model_type]`` from the Hub repository
    ``$MAGEDIT_SAM_REPO`` or ``SAM_REPO``, through the Hugging Face cache (downloaded once).
    """
    env = os.environ.get(CHECKPOINT_ENV) or None
    if checkpoint is None and env is not None and env.startswith(("/", "./", "../", "~")):
        checkpoint = env
    if model_type not in SAM_FILES:  # "tiny": only ever a local file
        if checkpoint is None or not Path(checkpoint).expanduser().is_file():
            raise FileNotFoundError(
                f"no checkpoint file '{checkpoint}' for the {model_type} SAM; pass the path of a "
                "saved tiny_sam() state dict, or use Segmenter.tiny()"
            )
        return Path(checkpoint).expanduser()
    release = Path(SAM_FILES[model_type]).name
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise MissingFile(
                "sam_checkpoint",
                f"no SAM checkpoint at '{checkpoint}'; give the path of the {model_type} "
                f"checkpoint ({{sam_checkpoint}} /path/to/{release}, from {META_URL}{release}), "
                "or use the tiny random model ({tiny})",
            )
        return path
    from huggingface_hub import hf_hub_download

    from magedit import hub

    repo = os.environ.get(REPO_ENV) or SAM_REPO
    filename = env or SAM_FILES[model_type]
    way_out = (
        f"give a local checkpoint ({{sam_checkpoint}} /path/to/{release}, from "
        f"{META_URL}{release}), or use the tiny random model ({{tiny}})"
    )
    try:
        hub.check_available(repo, filename)  # fails at once offline, before a retry storm
    except hub.WeightsUnavailable as error:
        raise hub.WeightsUnavailable(
            f"the SAM {model_type} checkpoint: {error}; {way_out}"
        ) from None
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(hf_hub_download(repo, filename))
    except GatedRepoError:
        raise InputError(
            "sam_checkpoint",
            f"the Hub repository '{repo}' is gated: accept its terms at "
            f"https://huggingface.co/{repo} while logged in, then set HF_TOKEN to one of your "
            f"access tokens; or {way_out}",
        ) from None
    except RepositoryNotFoundError:
        raise InputError(
            "sam_checkpoint",
            f"there is no Hub repository '{repo}' (or it is private: set HF_TOKEN to a token "
            f"that can read it); check $MAGEDIT_SAM_REPO, or {way_out}",
        ) from None
    except EntryNotFoundError as error:
        if isinstance(error, LocalEntryNotFoundError):  # the connection failed on the way
            raise InputError(
                "sam_checkpoint",
                f"cannot download the SAM {model_type} checkpoint '{filename}' from '{repo}' "
                f"(the connection failed); {way_out}",
            ) from None
        raise InputError(
            "sam_checkpoint",
            f"the Hub repository '{repo}' has no file '{filename}'; check "
            f"$MAGEDIT_SAM_CHECKPOINT, or {way_out}",
        ) from None
    except (OSError, ValueError) as error:
        # huggingface_hub's errors (no such repo or file, a broken connection) are OSErrors; a
        # malformed repo id is a ValueError.
        reason = " ".join(str(error).split())
        reason = reason if len(reason) <= 200 else reason[:197] + "..."
        raise InputError(
            "sam_checkpoint",
            f"cannot download the SAM {model_type} checkpoint '{filename}' from the Hub repository "
            f"'{repo}' ({reason}); {way_out}",
        ) from None


def _build(model_type: str) -> Sam:
    if model_type == "tiny":
        from magedit.tiny import tiny_sam

        return tiny_sam()
    from segment_anything import sam_model_registry

    return sam_model_registry[model_type]()


def _read_state_dict(path: Path, model_type: str) -> dict[str, torch.Tensor]:
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
        reason = " ".join(str(error).split())[:160]
        raise InputError(
            "sam_checkpoint",
            f"'{path.name}' is not a SAM checkpoint that can be read ({reason}); give Meta's "
            f"{model_type} .pth file ({{sam_checkpoint}} /path/to/the/checkpoint.pth)",
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(
            "sam_checkpoint",
            f"'{path.name}' holds no SAM state dict (tensors by name); give Meta's {model_type} "
            ".pth file ({sam_checkpoint} /path/to/the/checkpoint.pth)",
        )
    return state


def _check_state_dict(sam: Sam, state: dict[str, torch.Tensor], path: Path, model_type: str):
    """Refuse a checkpoint of another model type with a message that says which one to use."""
    expected = sam.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    reshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if not (missing or unexpected or reshaped):
        return
    if reshaped:
        name = reshaped[0]
        example = f"{name} is {tuple(state[name].shape)} instead of {tuple(expected[name].shape)}"
    else:
        example = f"e.g. {(missing or unexpected)[0]}"
    raise InputError(
        "sam_model",
        f"the checkpoint '{path.name}' does not fit the {model_type} SAM ({len(missing)} weights "
        f"missing, {len(unexpected)} unexpected, {len(reshaped)} of another shape; {example}); "
        "give the model type the file was made for ({sam_model}; sam_vit_b_... is vit_b, "
        "sam_vit_l_... vit_l, "
        "sam_vit_h_... vit_h)",
    )
