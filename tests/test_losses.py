import math

import pytest
import torch

from magedit import losses

# One head, four pixels (2x2, row-major), three token positions.
MAPS = torch.tensor(
    [
        [
            [0.50, 0.25, 0.25],
            [0.20, 0.60, 0.20],
            [0.70, 0.10, 0.20],
            [0.10, 0.10, 0.80],
        ]
    ]
)
MASK = torch.tensor([1.0, 1.0, 0.0, 0.0])


def test_token_ratio_by_hand():
    # shares of token 1: 0.25/1, 0.6/1 inside the mask -> (0.25 + 0.6) / 2
    assert losses.token_ratio(MAPS, [1], MASK).item() == pytest.approx(0.425)
    assert losses.token_ratio_loss([MAPS], [[1]], MASK).item() == pytest.approx((1 - 0.425) ** 2)


def test_token_ratio_divides_by_the_injected_total():
    # Injected maps need not sum to 1: pixel 0 sums to 1.5 -> share 0.5 / 1.5.
    maps = MAPS.clone()
    maps[0, 0] = torch.tensor([0.5, 0.5, 0.5])
    expected = (0.5 / 1.5 + 0.6) / 2
    assert losses.token_ratio(maps, [1], MASK).item() == pytest.approx(expected)


def test_token_ratio_multi_token_word_uses_the_mean():
    # word = tokens 1 and 2: mean map 0.25, 0.4 inside the mask.
    assert losses.token_ratio(MAPS, [1, 2], MASK).item() == pytest.approx((0.25 + 0.4) / 2)


def test_spatial_ratio_by_hand():
    # word = tokens 1+2 summed: 0.5, 0.8 | 0.3, 0.9 -> r = 1.3 / 2.5
    r = 1.3 / 2.5
    assert losses.spatial_ratio(MAPS, [1, 2], MASK).item() == pytest.approx(r)
    loss = losses.spatial_ratio_loss([MAPS], [[1, 2]], MASK, lam=3.0)
    assert loss.item() == pytest.approx(3 * (1 - r) - r)


def test_means_over_heads_layers_and_words():
    second = MAPS.flip(1)  # another head: pixels reversed
    two_heads = torch.cat([MAPS, second])
    r0 = 0.425
    r1 = (0.10 + 0.10) / 2  # token 1 of pixels 3, 2 in the reversed head
    per_layer = ((1 - r0) ** 2 + (1 - r1) ** 2) / 2
    layer2 = MAPS  # a second layer with one head
    # token 2: head 0 shares 0.25, 0.2; the reversed head 0.8, 0.2
    w0, w1 = (0.25 + 0.2) / 2, (0.8 + 0.2) / 2
    word2 = (((1 - w0) ** 2 + (1 - w1) ** 2) / 2 + (1 - w0) ** 2) / 2
    got = losses.token_ratio_loss([two_heads, layer2.expand(2, -1, -1)], [[1], [2]], MASK)
    expected = ((per_layer + (1 - r0) ** 2) / 2 + word2) / 2
    assert got.item() == pytest.approx(expected)


def test_negative_constraint_eq7():
    pos, neg = torch.tensor(0.4), torch.tensor(0.1)
    assert losses.with_negative(pos, neg, 2.5, 5.5).item() == pytest.approx(2.5 * 0.4 - 5.5 * 0.1)
    assert losses.with_negative(pos, None, 2.5, 5.5).item() == pytest.approx(1.0)


def test_multi_region_eq9_normalises_weights():
    got = losses.multi_region_loss([torch.tensor(1.0), torch.tensor(3.0)], [1.0, 3.0])
    assert got.item() == pytest.approx(0.25 * 1 + 0.75 * 3)
    assert losses.region_weights([2, 2, 4]) == [0.25, 0.25, 0.5]
    with pytest.raises(ValueError, match="must not all be 0"):
        losses.region_weights([0, 0])
    with pytest.raises(ValueError, match=">= 0"):
        losses.region_weights([1, -1])
    with pytest.raises(ValueError, match=">= 0"):
        losses.region_weights([1, math.nan])


def test_gradients_raise_the_ratio():
    logits = torch.randn(2, 16, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    mask = torch.zeros(16)
    mask[:6] = 1
    for constraint in ("token_ratio", "spatial_ratio"):
        maps = logits.softmax(-1)
        before = losses.in_mask_ratio(constraint, [maps], [[3]], mask)
        loss = losses.constraint_loss(constraint, [maps], [[3]], mask)
        (grad,) = torch.autograd.grad(loss, logits)
        maps_after = (logits - 0.5 * grad).softmax(-1)
        after = losses.in_mask_ratio(constraint, [maps_after], [[3]], mask)
        assert after.item() > before.item() + 1e-4, constraint


def test_unknown_constraint():
    with pytest.raises(ValueError, match="unknown constraint"):
        losses.constraint_loss("area", [MAPS], [[1]], MASK)
