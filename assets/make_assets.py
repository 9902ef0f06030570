"""How the examples in this folder were made (run once by hand; not needed to use them).

    pip install scikit-image && python assets/make_assets.py

Reads scikit-image's sample photographs (see README.md here for each one's source and licence),
shrinks them to at most 512 pixels on the long side, and draws each example's mask by hand-chosen
colour thresholds, ellipses and polygons cleaned with morphology. scikit-image is used here only:
the app and the library never import it.
"""

import json
from pathlib import Path

import numpy as np
import skimage.data as d
from PIL import Image, ImageDraw
from scipy import ndimage as ndi
from skimage.color import rgb2hsv
from skimage.morphology import binary_closing, binary_opening, disk

OUT = Path(__file__).resolve().parent
PREVIEW = OUT / "check"  # mask overlays to look at (not committed)
PREVIEW.mkdir(exist_ok=True)


def shrink(a, side=512):
    im = Image.fromarray(a)
    s = side / max(im.size)
    if s < 1:
        im = im.resize((round(im.width * s), round(im.height * s)), Image.LANCZOS)
    return np.asarray(im)


def ellipse(shape, cx, cy, rx, ry):
    y, x = np.mgrid[: shape[0], : shape[1]]
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1


def polygon(shape, pts):
    im = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(im).polygon(pts, fill=255)
    return np.asarray(im) > 0


def largest(mask, n=1):
    lab, k = ndi.label(mask)
    if k <= n:
        return mask
    sizes = ndi.sum(mask, lab, range(1, k + 1))
    keep = np.argsort(sizes)[::-1][:n] + 1
    return np.isin(lab, keep)


def clean(mask, r_close=3, r_open=2):
    mask = binary_closing(mask, disk(r_close))
    mask = binary_opening(mask, disk(r_open))
    return ndi.binary_fill_holes(mask)


examples = []

# 1. chelsea: the cat's eyes (colour).
img = d.chelsea()  # (300, 451)
eyes = ellipse(img.shape, 172, 114, 40, 36) | ellipse(img.shape, 318, 135, 28, 30)
mask = clean(eyes)
examples.append(
    dict(
        name="cat-eyes",
        file="cat",
        src=img,
        mask=mask,
        source="a close-up photo of a tabby cat with green eyes",
        target="a close-up photo of a tabby cat with blue eyes",
        words=["blue"],
        preset="color",
        negative_word="green",
        phrase=None,
    )
)

# 2. coffee: the saucer (colour).
img = d.coffee()  # (400, 600)
hsv = rgb2hsv(img)
red = ((hsv[..., 0] < 0.035) | (hsv[..., 0] > 0.95)) & (hsv[..., 1] > 0.45) & (hsv[..., 2] > 0.12)
plate = ellipse(img.shape, 278, 230, 203, 160)
cup = polygon(
    img.shape,
    [(168, 40), (412, 40), (412, 215), (370, 262), (300, 290), (240, 285), (195, 250), (168, 200)],
)
handle = ellipse(img.shape, 228, 268, 38, 42)
mask = largest(clean(red & plate & ~cup & ~handle, 4, 3), 1)
mask = ndi.binary_fill_holes(binary_closing(mask, disk(6)))
examples.append(
    dict(
        name="coffee-saucer",
        file="coffee",
        src=img,
        mask=mask,
        source="a cup of coffee on a red saucer on a wooden table",
        target="a cup of coffee on a blue saucer on a wooden table",
        words=["blue"],
        preset="color",
        negative_word=None,
        phrase=None,
    )
)

# 3. rocket: the evening sky (texture).
img = d.rocket()  # (427, 640)
f = img.astype(float)
sky = (f[..., 2] > f[..., 0] + 15) & (f[..., 2] > 60) & (np.arange(img.shape[0])[:, None] < 350)
sky = (f[..., 2] > f[..., 0] + 8) & (f[..., 2] > 40) & (np.arange(img.shape[0])[:, None] < 350)
mask = binary_opening(sky, disk(1))
lab, k = ndi.label(mask)
sizes = ndi.sum(mask, lab, range(1, k + 1))
mask = np.isin(lab, np.flatnonzero(sizes >= 1500) + 1)
examples.append(
    dict(
        name="rocket-sky",
        file="rocket",
        src=img,
        mask=mask,
        source="a rocket on a launch pad under a blue evening sky",
        target="a rocket on a launch pad under a starry evening sky",
        words=["starry"],
        preset="texture",
        negative_word=None,
        phrase=None,
    )
)

# 4. astronaut: the helmet (object).
img = d.astronaut()  # (512, 512)
helmet = ellipse(img.shape, 398, 432, 122, 92)
mask = clean(helmet)
examples.append(
    dict(
        name="astronaut-helmet",
        file="astronaut",
        src=img,
        mask=mask,
        source="an astronaut in an orange suit next to a helmet",
        target="an astronaut in an orange suit next to a watermelon",
        words=["watermelon"],
        preset="object",
        negative_word=None,
        phrase=None,
    )
)

# 5. astronaut: the suit (colour, two words).
suit_hsv = rgb2hsv(img)
orange = (
    (suit_hsv[..., 0] > 0.012)
    & (suit_hsv[..., 0] < 0.09)
    & (suit_hsv[..., 1] > 0.5)
    & (suit_hsv[..., 2] > 0.45)
)
flag = polygon(img.shape, [(0, 0), (95, 0), (95, 512), (0, 512)])
body = polygon(
    img.shape, [(15, 300), (120, 260), (180, 280), (330, 280), (365, 320), (370, 512), (15, 512)]
)
mask = largest(clean(orange & body & ~helmet, 3, 2), 1)
mask = ndi.binary_fill_holes(binary_closing(mask, disk(8)))
examples.append(
    dict(
        name="astronaut-suit",
        file="astronaut",
        src=img,
        mask=mask,
        source="an astronaut in an orange suit next to a helmet",
        target="an astronaut in a light blue suit next to a helmet",
        words=["light", "blue"],
        preset="color",
        negative_word="orange",
        phrase="light blue",
    )
)

entries = []
for ex in examples:
    img, mask = ex.pop("src"), ex.pop("mask")
    small = shrink(img)
    m = (
        np.asarray(
            Image.fromarray(mask.astype(np.uint8) * 255).resize(
                (small.shape[1], small.shape[0]), Image.NEAREST
            )
        )
        > 127
    )
    name, file = ex["name"], ex.pop("file")
    Image.fromarray(small).save(OUT / f"{file}.jpg", quality=88, optimize=True)
    Image.fromarray(m.astype(np.uint8) * 255).save(OUT / f"{name}-mask.png", optimize=True)
    over = small.astype(float)
    over[m] = over[m] * 0.5 + np.array([255, 0, 255]) * 0.5
    Image.fromarray(over.astype(np.uint8)).save(PREVIEW / f"{name}-check.png")
    print(name, small.shape, f"coverage {m.mean():.2f}")
    entries.append({"name": name, "image": f"{file}.jpg", "mask": f"{name}-mask.png", **ex})

(OUT / "examples.json").write_text(json.dumps(entries, indent=2, ensure_ascii=False) + "\n")
