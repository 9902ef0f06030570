"""The metrics of ``magedit.evaluate`` on synthetic images whose answers are known by hand."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from magedit import evaluate as ev
from magedit import images
from magedit.prompts import STOPWORDS


@pytest.fixture(scope="module")
def dino():
    return ev.DinoStructure.tiny()


@pytest.fixture(scope="module")
def clip():
    return ev.ClipScorer.tiny()


def noise(h=48, w=64, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)


def box_mask(h=48, w=64, y0=10, y1=20, x0=5, x1=30):
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_crop_to_the_bounding_box_of_a_hand_made_mask():
    mask = box_mask()
    mask[12, 40] = True  # a stray pixel widens the box to column 40
    assert images.mask_bbox(mask) == (5, 10, 41, 20)
    image = noise()
    window = ev.crop(image, images.mask_bbox(mask))
    assert window.shape == (10, 36, 3)
    assert np.array_equal(window, image[10:20, 5:41])
    with pytest.raises(ValueError, match="not inside"):
        ev.crop(image, (0, 0, 65, 10))


def test_psnr_outside_the_mask():
    image, mask = noise(), box_mask()
    edited = image.copy()
    edited[mask] = 255 - edited[mask]  # inside the mask: anything
    assert ev.psnr_outside(image, edited, mask) == math.inf
    # Outside: every value off by 10 -> MSE 100 -> 10 log10(255^2 / 100) dB.
    a = np.full((48, 64, 3), 100, np.uint8)
    b = a + 10
    b[mask] = 0
    assert ev.psnr_outside(a, b, mask) == pytest.approx(10 * math.log10(255**2 / 100), abs=1e-12)
    assert ev.psnr_outside(a, b, mask) == pytest.approx(28.1308036, abs=1e-6)
    # A change in the band around the mask counts only when the band is not excluded.
    c = a.copy()
    c[9, 5:30] = 0  # the row just above the mask
    assert ev.psnr_outside(a, c, mask, band_px=2) == math.inf
    assert ev.psnr_outside(a, c, mask) < 40
    with pytest.raises(ValueError, match="one size"):
        ev.psnr_outside(a, a[:10], mask)


def test_ssim_known_values():
    mask = box_mask()
    # Two flat images: only SSIM's luminance term is left, (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2
    # + C1) with C1 = (0.01 * 255)^2.
    a = np.full((20, 20, 3), 100, np.uint8)
    b = np.full((20, 20, 3), 110, np.uint8)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 110 + c1) / (100**2 + 110**2 + c1)
    assert np.allclose(ev.ssim_map(a, b), expected, rtol=0, atol=1e-12)
    image = noise()
    assert np.allclose(ev.ssim_map(image, image), 1.0, atol=1e-12)
    # Changes only inside the mask leave the outside untouched: exactly 1.
    edited = image.copy()
    edited[mask] = 0
    assert ev.ssim_outside(image, edited, mask) == pytest.approx(1.0, abs=1e-12)
    edited[40:, 50:] = 0
    assert ev.ssim_outside(image, edited, mask) < 0.99


def test_attention_in_mask():
    attention = np.zeros((4, 4), np.float32)
    attention[:2, :2] = 1.0  # 4 units in the top-left quadrant
    attention[3, 3] = 4.0  # 4 units outside it
    mask = np.zeros((8, 8), bool)
    mask[:4, :4] = True
    assert ev.attention_in_mask(attention, mask) == pytest.approx(0.5)
    assert ev.attention_in_mask(np.zeros((4, 4)), mask) == 0.0


def test_target_phrase_and_size_buckets():
    phrase = ev.target_phrase
    assert phrase("a photo of a red car on a road", ["red"], STOPWORDS) == "red car"
    assert phrase("a dog on the sofa", ["dog"], STOPWORDS) == "dog"
    assert phrase("a room with a Green sofa.", ["green"], STOPWORDS) == "green sofa"
    assert phrase("an astronaut in a light blue suit", ["light", "blue"], STOPWORDS) == (
        "light blue suit"
    )
    assert phrase("a red, old car", ["red"], STOPWORDS) == "red"
    assert phrase("a rocket under a starry evening sky", ["starry"], STOPWORDS) == (
        "starry evening sky"
    )
    assert phrase("a green sofa bed frame", ["green"], STOPWORDS) == "green sofa bed"  # 2 at most
    assert phrase("a dog sitting on a bed", ["dog"], STOPWORDS, noun=False) == "dog"
    with pytest.raises(ValueError, match="edit word 'blue' is not in the target"):
        phrase("a red car", ["blue"], STOPWORDS)
    assert [ev.size_bucket(c) for c in (0.0, 0.049, 0.05, 0.199, 0.2, 0.9)] == [
        "small",
        "small",
        "medium",
        "medium",
        "large",
        "large",
    ]


def test_dino_identical_crops_have_distance_zero(dino):
    image = noise()
    assert dino.distance(image, image) == 0.0
    other = noise(seed=1)
    assert dino.distance(image, other) > 1e-4
    # T = 1 CLS token + (32/8) x (40/8) patches: the 48x64 crop is resized to short side 32.
    assert dino.input_size(48, 64) == (32, 40)
    sim = dino.self_similarity(image)
    assert sim.shape == (21, 21)
    assert torch.allclose(sim.diagonal(), torch.ones(21), atol=1e-5)


def test_dino_keys_are_the_last_blocks_keys(dino):
    """The hook reads the key projection of the last block: recompute it from the hidden state
    that enters that block."""
    image = noise()
    size = dino.input_size(*image.shape[:2])
    keys = dino.keys(image, size)
    x = ev._to_tensor(image, size, ev.IMAGENET_MEAN, ev.IMAGENET_STD, "cpu", torch.float32)
    with torch.no_grad():
        out = dino.model(pixel_values=x, interpolate_pos_encoding=True, output_hidden_states=True)
        layers = getattr(dino.model, "layers", None) or dino.model.encoder.layer
        last = layers[-1]
        expected = dino._key_layer(last.layernorm_before(out.hidden_states[-2]))[0]
    assert dino._key_layer is last.attention.k_proj
    assert torch.allclose(keys, expected, atol=1e-6)
    # Splice's distance is the MSE of the two cosine self-similarity matrices.
    other = noise(seed=2)
    a = F.normalize(keys, dim=-1)
    b = F.normalize(dino.keys(other, size), dim=-1)
    assert dino.distance(image, other) == pytest.approx(float(((a @ a.T - b @ b.T) ** 2).mean()))


def test_clip_score_is_100_times_the_clipped_cosine(clip):
    image = noise()
    pixels = clip._pixels(image)
    assert pixels.shape == (1, 3, 32, 32)  # short side to 32, centre crop
    with torch.no_grad():
        for text in ("green sofa", "red car", "a dog"):
            ids = clip.tokenizer([text], padding="max_length", max_length=77, return_tensors="pt")
            t = ev._features(clip.model.get_text_features(**ids))
            i = ev._features(clip.model.get_image_features(pixel_values=pixels))
            cos = float(F.cosine_similarity(i, t))
            assert clip.score(image, text) == pytest.approx(100 * max(cos, 0.0), abs=1e-4)
            assert 0.0 <= clip.score(image, text) <= 100.0


def test_the_metrics_on_an_untouched_outside():
    dino = ev.DinoStructure.tiny()
    image, mask = noise(), box_mask()
    assert dino.distance(image, image) == 0.0
    assert ev.psnr_outside(image, image, mask) == math.inf
    assert ev.ssim_outside(image, image, mask) == 1.0
    edited = image.copy()
    edited[mask] = 0
    assert dino.distance(image, edited) > 0
    assert ev.psnr_outside(image, edited, mask) == math.inf
    assert ev.ssim_outside(image, edited, mask) == pytest.approx(1.0, abs=1e-12)


def _cached(repo: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, "config.json"), str)


@pytest.mark.weights
@pytest.mark.skipif(
    not (_cached(ev.CLIP_MODEL) and _cached(ev.DINO_MODEL)),
    reason=f"{ev.CLIP_MODEL} and {ev.DINO_MODEL} are not in the Hugging Face cache (offline)",
)
def test_real_clip_and_dino_load_and_agree_with_the_eye():
    metrics = ev.Metrics.from_pretrained()
    red = np.zeros((224, 224, 3), np.uint8)
    red[..., 0] = 220
    assert metrics.clip.score(red, "a red square") > metrics.clip.score(red, "a blue square")
    image = noise(224, 224)
    assert metrics.dino.distance(image, image) == 0.0
    assert metrics.dino.self_similarity(image).shape == (785, 785)  # CLS + 28 x 28 patches
