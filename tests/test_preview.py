"""magedit.preview: the attention overlay's mask outline, on a hand-made grid."""

import numpy as np

from magedit import preview


def test_heatmap_overlay_outlines_the_mask_inside_and_not_along_the_border():
    image = np.zeros((6, 6, 3), np.uint8)
    mask = np.zeros((6, 6), bool)
    mask[1:5, 0:3] = True  # 4 rows x 3 columns, touching the left border
    out = preview.heatmap_overlay(image, np.zeros((3, 3)), mask)
    white = (out == 255).all(axis=2)
    # The mask pixels with a 4-neighbour outside it (the image border does not count): rows 1
    # and 4, and column 2 between them; column 0 lies on the border and is not outlined.
    expected = np.zeros((6, 6), bool)
    expected[[1, 4], 0:3] = True
    expected[2:4, 2] = True
    np.testing.assert_array_equal(white, expected)
    # A zero map is drawn as the ramp's blue: 0.55 * 255 = 140.25 -> 140.
    assert out[0, 5].tolist() == [0, 0, 140]
