"""magedit.images: every fixture is generated here with PIL / numpy; no files on disk are read."""

import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from magedit.images import (
    composite,
    composite_band,
    dilate,
    feather,
    image_hash,
    image_to_tensor,
    load_image,
    load_mask,
    mask_to_latent,
    processing_size,
    resize_image,
    resize_mask,
    tensor_to_image,
)


def encode(im: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def png_header_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit grayscale PNG of zeros: tiny on disk, width * height pixels decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    compressor = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


# ----------------------------------------------------------------------------------------------
# load_image: sources


def test_every_source_kind_gives_the_same_rgb_array(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    im = Image.fromarray(pixels)
    data = encode(im)
    path = tmp_path / "photo.png"
    path.write_bytes(data)

    for source in (im, data, io.BytesIO(data), path, str(path), pixels):
        out = load_image(source)
        assert out.dtype == np.uint8 and out.shape == (64, 80, 3)
        assert out.flags.c_contiguous
        np.testing.assert_array_equal(out, pixels)
    assert load_image(pixels) is not pixels


def test_missing_file_and_wrong_type_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="no image file named 'nope.png'"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ValueError, match="cannot read an image from a list"):
        load_image([1, 2, 3])


# ----------------------------------------------------------------------------------------------
# load_image: colour modes


def test_palette_with_transparency_becomes_white_where_transparent():
    im = Image.new("P", (64, 64), 0)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.paste(1, (0, 0, 32, 64))  # left half: index 1, the transparent one
    out = load_image(encode(im, transparency=1))
    assert out[10, 10].tolist() == [255, 255, 255]
    assert out[10, 50].tolist() == [255, 0, 0]


def test_grayscale_l_and_one_bit():
    out = load_image(Image.new("L", (64, 64), 100))
    assert out.shape == (64, 64, 3)
    assert (out == 100).all()

    bits = Image.new("1", (64, 64), 0)
    bits.paste(1, (0, 0, 32, 64))
    out = load_image(encode(bits))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 63].tolist() == [0, 0, 0]


def test_la_composites_onto_white():
    gray_alpha = np.zeros((64, 64, 2), dtype=np.uint8)
    gray_alpha[:, :32] = (50, 255)  # opaque dark gray
    gray_alpha[:, 32:48] = (0, 0)  # transparent black
    gray_alpha[:, 48:] = (0, 128)  # half-transparent black
    out = load_image(encode(Image.fromarray(gray_alpha, "LA")))
    assert out[0, 0].tolist() == [50, 50, 50]
    assert out[0, 40].tolist() == [255, 255, 255]
    assert abs(int(out[0, 60, 0]) - 127) <= 1  # 255 * (1 - 128 / 255)


def test_rgba_composites_onto_white():
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[:, :20] = (255, 0, 0, 255)
    rgba[:, 20:40] = (255, 0, 0, 0)
    rgba[:, 40:] = (0, 0, 0, 128)
    for source in (encode(Image.fromarray(rgba, "RGBA")), rgba):
        out = load_image(source)
        assert out[5, 5].tolist() == [255, 0, 0]
        assert out[5, 30].tolist() == [255, 255, 255]
        assert np.abs(out[5, 50].astype(int) - 127).max() <= 1


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_sixteen_bit_is_scaled_by_its_bit_depth_not_clipped(mode):
    values = np.zeros((64, 64), dtype=np.uint16)
    values[:, :20] = 65535
    values[:, 20:40] = 32768
    values[:, 40:] = 257 * 10
    dtype = {"I;16": "<u2", "I;16B": ">u2", "I": "<i4"}[mode]
    im = Image.fromarray(values.astype(dtype))
    assert im.mode == mode
    out = load_image(im)
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 30].tolist() == [128, 128, 128]
    assert out[0, 50].tolist() == [10, 10, 10]


def test_sixteen_bit_png_file():
    values = np.full((64, 64), 65535, dtype=np.uint16)
    values[:, 32:] = 32768
    out = load_image(encode(Image.fromarray(values)))
    assert out[0, 0, 0] == 255 and out[0, 40, 0] == 128


def test_float_f_mode_in_unit_range():
    values = np.zeros((64, 64), dtype=np.float32)
    values[:, 32:] = 0.5
    values[:, 48:] = 1.0
    out = load_image(Image.fromarray(values, "F"))
    assert out[0, 0, 0] == 0 and out[0, 40, 0] == 128 and out[0, 60, 0] == 255


def test_cmyk():
    cmyk = np.zeros((64, 64, 4), dtype=np.uint8)
    cmyk[:, 20:40] = (255, 0, 0, 0)  # cyan ink
    cmyk[:, 40:] = (0, 0, 0, 255)  # black ink
    out = load_image(Image.fromarray(cmyk, "CMYK"))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 30].tolist() == [0, 255, 255]
    assert out[0, 50].tolist() == [0, 0, 0]
    out = load_image(encode(Image.fromarray(cmyk, "CMYK"), "TIFF"))
    assert out[0, 30].tolist() == [0, 255, 255]


def test_ycbcr_and_lab_gray():
    out = load_image(Image.new("YCbCr", (64, 64), (200, 128, 128)))
    assert np.abs(out.astype(int) - 200).max() <= 1
    out = load_image(Image.new("LAB", (64, 64), (255, 128, 128)))  # L* = 100: white
    assert out.min() >= 250


def test_exif_orientation_6_rotates_clockwise():
    # Stored 96 wide x 64 high with a red top-left corner; Orientation 6 means "rotate 90
    # degrees clockwise to display", which moves the top-left corner to the top-right.
    pixels = np.zeros((64, 96, 3), dtype=np.uint8)
    pixels[...] = (0, 0, 255)
    pixels[:16, :16] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    for fmt, kwargs in (("PNG", {}), ("JPEG", {"quality": 95})):
        out = load_image(encode(Image.fromarray(pixels), fmt, exif=exif, **kwargs))
        assert out.shape == (96, 64, 3)
        top_right, top_left = out[4, -4].astype(int), out[4, 4].astype(int)
        assert top_right[0] > 200 and top_right[2] < 60, fmt
        assert top_left[0] < 60 and top_left[2] > 200, fmt


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (64, 64), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(io.BytesIO(buffer.getvalue())).n_frames == 2
    out = load_image(buffer.getvalue())
    assert (out == [255, 0, 0]).all()


# ----------------------------------------------------------------------------------------------
# load_image: refusals


def test_truncated_files_are_refused():
    noise = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    for fmt in ("JPEG", "PNG"):
        data = encode(Image.fromarray(noise), fmt)
        with pytest.raises(ValueError, match="incomplete|not an image"):
            load_image(data[: len(data) // 2])


def test_random_bytes_and_text_named_png_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not an image"):
        load_image(np.random.default_rng(2).bytes(5000))
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture\n" * 50)
    with pytest.raises(ValueError, match="not an image"):
        load_image(text)


def test_decompression_bomb_is_refused_from_the_header_alone(monkeypatch):
    decoded = []
    real_load = ImageFile.ImageFile.load

    def load(self):
        decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    bomb = png_header_bomb(15000, 15000)  # 225 megapixels in 27 kB
    with pytest.raises(ValueError, match="too large|megapixels"):
        load_image(bomb)
    # 25 megapixels: under PIL's own bomb limit, over ours; refused before decoding.
    with pytest.raises(ValueError, match=r"5000x5000 pixels \(25.0 megapixels\)"):
        load_image(png_header_bomb(5000, 5000))
    assert decoded == []  # no pixel was decoded


@pytest.mark.parametrize(
    ("width", "height", "message"),
    [
        (1, 1, "the image is 1x1 pixels; use an image at least 64 pixels on each side"),
        (8000, 4, "the image is 8000x4 pixels; use an image at least 64 pixels"),
        (400, 80, "400x80 pixels, its long side 5.0 times its short side; crop it"),
        (80, 400, "80x400 pixels, its long side 5.0 times"),
    ],
)
def test_size_limits(width, height, message):
    with pytest.raises(ValueError, match=message):
        load_image(Image.new("RGB", (width, height)))
    with pytest.raises(ValueError, match=message):
        load_image(np.zeros((height, width, 3), dtype=np.uint8))


def test_size_limits_are_parameters():
    assert load_image(Image.new("RGB", (32, 32)), min_side=16).shape == (32, 32, 3)
    assert load_image(Image.new("RGB", (400, 80)), max_aspect=5).shape == (80, 400, 3)
    with pytest.raises(ValueError, match="at most 0.01 megapixels"):
        load_image(Image.new("RGB", (128, 128)), max_pixels=10_000)


def test_numpy_dtype_and_shape_checks():
    with pytest.raises(ValueError, match="boolean"):
        load_image(np.ones((64, 64), dtype=bool))
    with pytest.raises(ValueError, match="dtype uint16"):
        load_image(np.ones((64, 64, 3), dtype=np.uint16))
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        load_image(np.full((64, 64, 3), 2.0))
    with pytest.raises(ValueError, match="channels first"):
        load_image(np.zeros((3, 64, 64), dtype=np.uint8))
    with pytest.raises(ValueError, match="HxW, HxWx3 or HxWx4"):
        load_image(np.zeros((64, 64, 2), dtype=np.uint8))

    floats = np.full((64, 64, 3), 0.5, dtype=np.float32)
    assert (load_image(floats) == 128).all()
    gray = np.full((64, 64), 7, dtype=np.uint8)
    assert (load_image(gray) == 7).all() and load_image(gray).shape == (64, 64, 3)


# ----------------------------------------------------------------------------------------------
# Sizes, resizing and tensors


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((512, 512), (512, 512)),
        ((480, 640), (384, 512)),
        ((640, 480), (512, 384)),
        ((1000, 3000), (192, 512)),  # 170.7 -> 192
        ((3000, 1000), (512, 192)),
        ((1080, 1920), (320, 512)),  # 16:9 gives 288, halfway: rounds up
        ((500, 900), (256, 512)),  # 284.4 -> 256
        ((100, 100), (512, 512)),  # small images are scaled up
        ((2000, 2001), (512, 512)),  # 511.7 -> 512
        ((96, 512), (128, 512)),  # 96 is halfway between 64 and 128: rounds up
        ((40, 4000), (64, 512)),  # 5.1 -> at least one multiple
    ],
)
def test_processing_size(size, expected):
    out = processing_size(*size)
    assert out == expected
    assert max(out) == 512 and out[0] % 64 == 0 and out[1] % 64 == 0


def test_processing_size_other_settings_and_errors():
    assert processing_size(480, 640, long_side=768) == (576, 768)
    assert processing_size(480, 640, long_side=512, multiple=8) == (384, 512)
    with pytest.raises(ValueError, match="height is 0"):
        processing_size(0, 640)


def test_resize_image():
    image = np.full((300, 517, 3), (10, 200, 30), dtype=np.uint8)
    out = resize_image(image, (192, 320))
    assert out.shape == (192, 320, 3) and out.dtype == np.uint8
    assert (out == (10, 200, 30)).all()
    same = resize_image(image, (300, 517))
    assert same is not image
    np.testing.assert_array_equal(same, image)
    with pytest.raises(ValueError, match="uint8"):
        resize_image(image.astype(np.float32), (64, 64))


def test_image_to_tensor_is_the_reference_formula():
    image = np.random.default_rng(3).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    tensor = image_to_tensor(image)
    assert tensor.shape == (1, 3, 8, 12) and tensor.dtype == torch.float32
    reference = (torch.from_numpy(image).float() / 127.5 - 1).permute(2, 0, 1).unsqueeze(0)
    assert torch.equal(tensor, reference)
    corners = image_to_tensor(np.array([[[0, 255, 128]]], dtype=np.uint8)).flatten()
    assert corners.tolist() == pytest.approx([-1.0, 1.0, 128 / 127.5 - 1], abs=1e-7)
    assert image_to_tensor(image, dtype=torch.float16).dtype == torch.float16


def test_tensor_to_image_rounds():
    values = torch.tensor([0.0, 0.5, 1.0, 1.5, -0.2, 0.1, 0.998, 0.002]).reshape(1, 8)
    tensor = values.expand(3, 1, 8)  # (3, 1, 8)
    out = tensor_to_image(tensor)
    assert out.shape == (1, 8, 3) and out.dtype == np.uint8
    # 127.5 rounds half to even -> 128; 25.5 -> 26; 254.49 -> 254; 0.51 -> 1.
    assert out[0, :, 0].tolist() == [0, 128, 255, 255, 0, 26, 254, 1]
    assert tensor_to_image(tensor.unsqueeze(0)).shape == (1, 8, 3)
    with pytest.raises(ValueError, match=r"\(1, 3, H, W\)"):
        tensor_to_image(torch.zeros(1, 4, 2, 2))


def test_image_tensor_round_trip_is_exact():
    image = np.random.default_rng(4).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    back = tensor_to_image((image_to_tensor(image) + 1) / 2)
    np.testing.assert_array_equal(back, image)


def test_image_hash():
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    key = image_hash(image)
    assert len(key) == 64 and key == image_hash(image.copy())
    changed = image.copy()
    changed[10, 10, 1] = 1
    assert image_hash(changed) != key
    assert image_hash(image.reshape(32, 128, 3)) != key
    assert image_hash(image.astype(np.int8)) != key


def test_importing_the_module_does_not_import_torch():
    code = "import sys, magedit.images; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------------------------
# Masks


def test_mask_any_colour_channel_is_inside():
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[0, 0] = (0, 0, 5)
    rgb[1, 1] = (255, 255, 255)
    rgb[2, 2] = (0, 1, 0)
    expected = np.zeros((4, 4), dtype=bool)
    expected[[0, 1, 2], [0, 1, 2]] = True
    np.testing.assert_array_equal(load_mask(rgb), expected)
    np.testing.assert_array_equal(load_mask(encode(Image.fromarray(rgb))), expected)


def test_mask_transparent_pixels_are_outside():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white everywhere, as a brush layer exported with white "paper"
    rgba[0, :, 3] = 255  # painted row
    rgba[1, 0, 3] = 1  # faint stroke still counts
    expected = np.zeros((4, 4), dtype=bool)
    expected[0] = True
    expected[1, 0] = True
    np.testing.assert_array_equal(load_mask(rgba), expected)
    np.testing.assert_array_equal(load_mask(encode(Image.fromarray(rgba, "RGBA"))), expected)

    gray_alpha = np.zeros((4, 4, 2), dtype=np.uint8)
    gray_alpha[..., 0] = 200
    gray_alpha[3, 3, 1] = 255
    only = np.zeros((4, 4), dtype=bool)
    only[3, 3] = True
    np.testing.assert_array_equal(load_mask(encode(Image.fromarray(gray_alpha, "LA"))), only)


def test_mask_fully_opaque_alpha_uses_colour():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[2, 1, 0] = 9
    expected = np.zeros((4, 4), dtype=bool)
    expected[2, 1] = True
    np.testing.assert_array_equal(load_mask(rgba), expected)


def test_mask_from_arrays_tensors_and_gray_files():
    expected = np.zeros((5, 6), dtype=bool)
    expected[1:3, 2:5] = True
    for source in (
        expected,
        expected.astype(np.uint8) * 255,
        expected.astype(np.float32) * 0.3,
        expected[..., None],
        torch.from_numpy(expected).float()[None, None],
        torch.from_numpy(expected),
        encode(Image.fromarray(expected.astype(np.uint8) * 255)),
        encode(Image.fromarray(expected)),  # 1-bit
    ):
        out = load_mask(source)
        assert out.dtype == np.bool_
        np.testing.assert_array_equal(out, expected)


def test_mask_resize_is_nearest():
    small = np.array([[True, False], [False, False]])
    big = load_mask(small, size=(4, 4))
    expected = np.zeros((4, 4), dtype=bool)
    expected[:2, :2] = True
    np.testing.assert_array_equal(big, expected)

    # 4 -> 2 samples rows and columns floor(i * 4 / 2) = 0, 2, as resize_mask and the pipeline's
    # latent masks do (PIL's nearest, used before, sampled the centres 1, 3).
    dots = np.zeros((4, 4), dtype=bool)
    dots[1, 1] = True
    dots[2, 2] = True
    assert load_mask(dots, size=(2, 2)).tolist() == [[False, False], [False, True]]
    np.testing.assert_array_equal(load_mask(dots, size=(4, 4)), dots)


def test_empty_masks_are_refused():
    with pytest.raises(ValueError, match="the mask is empty.*paint or click the region"):
        load_mask(np.zeros((8, 8), dtype=bool))
    transparent = np.zeros((8, 8, 4), dtype=np.uint8)
    transparent[..., :3] = 255
    with pytest.raises(ValueError, match="the mask is empty"):
        load_mask(transparent)
    speck = np.zeros((100, 100), dtype=bool)
    speck[0, 1] = True
    with pytest.raises(ValueError, match="none is left at 10x10"):
        load_mask(speck, size=(10, 10))
    with pytest.raises(ValueError, match="not a mask"):
        load_mask(b"hello")


def test_mask_to_latent_hand_computed():
    mask = np.zeros((4, 4), dtype=bool)
    mask[1, 1] = True  # not sampled: nearest takes rows/cols floor(i * 4 / 2) = 0, 2
    mask[2, 2] = True
    out = mask_to_latent(mask, (2, 2))
    assert out.shape == (1, 1, 2, 2) and out.dtype == torch.float32
    assert out[0, 0].tolist() == [[0.0, 0.0], [0.0, 1.0]]

    three = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.2, 0.0], [0.0, 0.0, 0.0]])
    # 3 -> 2 samples floor(i * 1.5) = 0, 1
    assert mask_to_latent(three, (2, 2))[0, 0].tolist() == [[0.0, 0.0], [0.0, 1.0]]

    up = mask_to_latent(np.array([[True, False], [False, True]]), (4, 4))[0, 0]
    assert up.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]

    big = np.random.default_rng(5).random((37, 53)) > 0.7
    literal = torch.from_numpy(big).float()[None, None]
    literal = (torch.nn.functional.interpolate(literal, size=(16, 16)) != 0).float()
    assert torch.equal(mask_to_latent(big, (16, 16)), literal)
    assert torch.equal(mask_to_latent(literal, (16, 16), device="cpu"), literal)


def test_resize_mask_hand_computed():
    dots = np.zeros((4, 4), dtype=bool)
    dots[1, 1] = True
    dots[2, 2] = True
    # 4 -> 2 samples rows and columns floor(i * 4 / 2) = 0, 2; 4 -> 3 samples 0, 1, 2.
    assert resize_mask(dots, (2, 2)).tolist() == [[False, False], [False, True]]
    assert resize_mask(dots, (3, 3)).tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 1]]
    up = resize_mask(np.array([[True, False]]), (2, 5))  # columns floor(j * 2 / 5): 0 0 0 1 1
    assert up.tolist() == [[1, 1, 1, 0, 0]] * 2
    same = resize_mask(dots, (4, 4))
    assert same is not dots and np.array_equal(same, dots)
    # Row 41 of 82 is 41 * 2 / 82 = 1 exactly, but torch computes 41 * float32(2 / 82), just
    # below 1, and takes row 0; so do we.
    rows = resize_mask(np.array([[False], [True]]), (82, 1))[:, 0]
    assert not rows[:42].any() and rows[42:].all()
    with pytest.raises(ValueError, match="pass an HxW bool array"):
        resize_mask(dots.astype(np.uint8), (2, 2))
    with pytest.raises(ValueError, match=r"size is \(0, 2\)"):
        resize_mask(dots, (0, 2))


@pytest.mark.parametrize("source", [(37, 53), (2, 3), (9, 14), (123, 94), (64, 64)])
def test_resize_mask_is_torch_nearest_bit_for_bit(source):
    mask = np.random.default_rng(sum(source)).random(source) > 0.5
    literal = torch.from_numpy(mask).float()[None, None]
    # Odd sizes both ways, and sizes where float32 and exact integer arithmetic disagree.
    for size in [(1, 1), (16, 16), (7, 5), (17, 31), (82, 94), (110, 122), (74, 123), (46, 92)]:
        expected = torch.nn.functional.interpolate(literal, size=size)[0, 0] != 0
        np.testing.assert_array_equal(resize_mask(mask, size), expected.numpy())
        assert torch.equal(mask_to_latent(mask, size)[0, 0], expected.float())


# ----------------------------------------------------------------------------------------------
# Dilate, feather, composite


def test_dilate_uses_a_disk():
    mask = np.zeros((9, 9), dtype=bool)
    mask[4, 4] = True
    grown = dilate(mask, 2)
    # Offsets with dy^2 + dx^2 <= 4: 1 + 4 (distance 1) + 4 (diagonals) + 4 (distance 2).
    assert grown.sum() == 13
    assert grown[4, 6] and grown[5, 5] and not grown[5, 6] and not grown[6, 6]
    assert dilate(mask, 3).sum() == 29
    np.testing.assert_array_equal(dilate(mask, 0), mask)


@pytest.mark.parametrize("seed", range(3))
def test_dilate_matches_the_disk_definition(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((23, 31)) < (0.05, 0.5, 0.95)[seed]
    padded_out = np.pad(mask, 8, constant_values=False)  # beyond the border: outside ...
    padded_in = np.pad(mask, 8, constant_values=True)  # ... or, when shrinking, never eroding
    for radius in (1, 2, 3, 5, 8):
        grown = np.zeros_like(mask)
        shrunk = np.ones_like(mask)
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                if dy * dy + dx * dx <= radius * radius:
                    rows, cols = slice(8 + dy, 8 + dy + 23), slice(8 + dx, 8 + dx + 31)
                    grown |= padded_out[rows, cols]
                    shrunk &= padded_in[rows, cols]
        np.testing.assert_array_equal(dilate(mask, radius), grown)
        np.testing.assert_array_equal(dilate(mask, -radius), shrunk)


def test_dilate_negative_erodes_but_not_from_the_border():
    mask = np.zeros((12, 12), dtype=bool)
    mask[2:9, 0:7] = True  # 7x7, touching the left border
    eroded = dilate(mask, -1)
    expected = np.zeros_like(mask)
    expected[3:8, 0:6] = True
    np.testing.assert_array_equal(eroded, expected)
    assert not dilate(mask, -4).any()
    full = np.ones((5, 7), dtype=bool)  # every neighbour is inside or beyond the border
    np.testing.assert_array_equal(dilate(full, -2), full)


def test_dilate_on_a_large_mask():
    mask = np.zeros((3000, 4000), dtype=bool)
    mask[500:2500, 300:3700] = True
    grown = dilate(mask, 40)
    assert grown[460, 2000] and not grown[459, 2000]
    # Past the corner pixel (2499, 3699): offset (28, 28) is inside the disk, (29, 29) is not.
    assert grown[2499 + 28, 3699 + 28] and not grown[2499 + 29, 3699 + 29]


def test_feather():
    mask = np.zeros((64, 64), dtype=bool)
    mask[16:48, 16:48] = True
    alpha = feather(mask, 2.0)
    assert alpha.dtype == np.float32 and alpha.shape == (64, 64)
    assert alpha.min() >= 0 and alpha.max() <= 1
    assert alpha[32, 32] == 1.0 and alpha[0, 0] == 0.0
    assert 0.3 < alpha[32, 16] < 0.7  # the edge is about half
    np.testing.assert_array_equal(feather(mask, 0), mask.astype(np.float32))


def test_composite_keeps_outside_pixels_and_the_original_resolution():
    rng = np.random.default_rng(6)
    original = rng.integers(0, 256, (300, 517, 3), dtype=np.uint8)
    edited = rng.integers(0, 256, (192, 320, 3), dtype=np.uint8)
    mask = np.zeros((300, 517), dtype=bool)
    mask[100:220, 150:400] = True

    out = composite(original, edited, mask)
    assert out.shape == (300, 517, 3) and out.dtype == np.uint8

    region = dilate(mask, composite_band(original.shape))  # the default reach
    np.testing.assert_array_equal(out[~region], original[~region])

    resized = resize_image(edited, (300, 517)).astype(int)
    deep = dilate(mask, -10)
    assert deep.sum() > 0
    assert np.abs(out[deep].astype(int) - resized[deep]).max() <= 1
    # Between the two, a blend of both.
    ring = region & ~mask
    assert (out[ring] != original[ring]).any()


def test_composite_band_is_one_percent_of_the_long_side_at_least_two():
    assert composite_band((300, 517, 3)) == 5  # 5.17
    assert composite_band((3000, 4000)) == 40
    assert composite_band((450, 100)) == 4  # 4.5 rounds to even
    assert composite_band((250, 100)) == 2  # 2.5 rounds to even
    assert composite_band((64, 64)) == 2  # 0.64, at least 2


def test_composite_without_feathering_is_a_hard_paste():
    rng = np.random.default_rng(7)
    original = rng.integers(0, 256, (100, 80, 3), dtype=np.uint8)
    edited = rng.integers(0, 256, (100, 80, 3), dtype=np.uint8)
    mask = np.zeros((100, 80), dtype=bool)
    mask[10:50, 20:70] = True
    out = composite(original, edited, mask, dilate_px=0, feather_px=0)
    np.testing.assert_array_equal(out, np.where(mask[..., None], edited, original))


def test_composite_checks_the_mask_size():
    image = np.zeros((100, 80, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="the mask is 40x50 pixels but the image is 80x100"):
        composite(image, image, np.ones((50, 40), dtype=bool))


def test_a_mask_of_another_shape_is_refused_not_stretched():
    """Newcomer item 8: a 512x512 mask on a 451x300 photo was stretched and the edit landed in
    the wrong place. The same shape, scaled (up to a pixel of rounding), is resized; another
    shape is refused with both sizes."""
    square = np.zeros((512, 512), bool)
    square[100:200, 100:200] = True
    with pytest.raises(ValueError, match=r"the mask is 512x512 pixels and the photo 451x300"):
        load_mask(square, size=(300, 451))
    assert load_mask(square, size=(256, 256)).shape == (256, 256)
    wide = np.zeros((300, 451), bool)
    wide[50:100, 50:100] = True
    assert load_mask(wide, size=(600, 902)).shape == (600, 902)  # twice the size
    assert load_mask(wide, size=(150, 225)).shape == (150, 225)  # 225.5 rounded down
