import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# One thread for the whole run: the tiny models gain nothing from a second one, and on shared
# cores two OpenMP threads spin-wait on each other (a tiny null-text edit took 40 s of wall time
# with two threads, 1.2 s with one).
torch.set_num_threads(1)

SOURCE = "a photo of a red sofa in a living room"
TARGET = "a photo of a green sofa in a living room"


@pytest.fixture(scope="session")
def tiny_pipe():
    from magedit import MagEditPipeline

    return MagEditPipeline.tiny(seed=0)


def scene(height: int = 96, width: int = 128) -> np.ndarray:
    """A structured test photo: a colour gradient with a dark rectangle (the 'sofa')."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 / width, y * 255 / height, 128 + 0 * x], -1)
    image[height // 3 : 2 * height // 3, width // 4 : 3 * width // 4] = (150, 30, 30)
    return image.round().astype(np.uint8)


def scene_mask(height: int = 96, width: int = 128) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[height // 3 : 2 * height // 3, width // 4 : 3 * width // 4] = True
    return mask


@pytest.fixture
def image():
    return scene()


@pytest.fixture
def mask():
    return scene_mask()
