import contextlib

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0

from magedit.attention import CallPlan, EarlyExit, install
from magedit.losses import token_ratio_loss
from magedit.tiny import UNET_CONFIG


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet2DConditionModel(**UNET_CONFIG).eval().requires_grad_(False)


def inputs(batch=2, size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, 4, size, size, generator=g)
    emb = torch.randn(batch, 77, 32, generator=g)
    return z, emb


def run(unet, z, emb, t=500):
    with torch.no_grad():
        return unet(z, t, encoder_hidden_states=emb).sample


def test_levels_follow_sd_layout(unet):
    controller = install(unet)
    try:
        infos = controller.layers
        assert len(infos) == 32 and sum(i.cross for i in infos.values()) == 16
        level = {name.split(".processor")[0]: (i.level, i.cross) for name, i in infos.items()}
        assert level["down_blocks.0.attentions.0.transformer_blocks.0.attn2"] == (0, True)
        assert level["down_blocks.2.attentions.1.transformer_blocks.0.attn1"] == (2, False)
        assert level["mid_block.attentions.0.transformer_blocks.0.attn2"] == (3, True)
        assert level["up_blocks.1.attentions.2.transformer_blocks.0.attn2"] == (2, True)
        assert level["up_blocks.3.attentions.0.transformer_blocks.0.attn2"] == (0, True)
        # The paper's 16x16 layers: two in the down path, three in the up path.
        at16 = sorted(n for n, i in infos.items() if i.cross and i.level == 2)
        assert len(at16) == 5
        last = controller.last_layer_at(2)
        assert last.startswith("up_blocks.1.attentions.2.transformer_blocks.0.attn2")
    finally:
        unet.set_attn_processor(AttnProcessor2_0())


def test_processors_reproduce_diffusers_attention(unet):
    z, emb = inputs()
    unet.set_attn_processor(AttnProcessor2_0())
    expected = run(unet, z, emb)
    controller = install(unet)
    try:
        plain = run(unet, z, emb)
        # Explicit maps everywhere (recording every layer) must not change the output either.
        with controller.plan(CallPlan(record_row=1, record_cross=True, record_self=True)):
            explicit = run(unet, z, emb)
    finally:
        unet.set_attn_processor(AttnProcessor2_0())
    assert torch.allclose(plain, expected, atol=1e-5, rtol=1e-4)
    assert torch.allclose(explicit, expected, atol=1e-5, rtol=1e-4)
    assert (plain - expected).abs().max() < 1e-4


def test_record_stores_the_maps_the_paper_injects(unet):
    controller = install(unet)
    try:
        z, emb = inputs(size=32)
        with controller.plan(CallPlan(record_row=1, record_cross=True, record_self=True)):
            run(unet, z, emb)
        store = controller.store
        cross = [n for n in store if controller.layers[n].cross]
        selfs = [n for n in store if not controller.layers[n].cross]
        assert len(cross) == 16
        # Self-attention only at levels >= 1 (<= 32x32 queries at 512): 2 + 2 + 1 + 3 + 3 layers.
        assert len(selfs) == 11 and all(controller.layers[n].level >= 1 for n in selfs)
        name = controller.last_layer_at(2)
        assert store[name].shape == (2, 8 * 8, 77)  # (heads, N, tokens) at latent / 4
        assert torch.allclose(store[name].sum(-1), torch.ones(2, 64), atol=1e-5)
    finally:
        unet.set_attn_processor(AttnProcessor2_0())


def test_injecting_a_branchs_own_maps_changes_nothing(unet):
    """Recording row 1 and injecting it into row 1 of the same input is the identity; injecting
    into a different input changes that input's output."""
    controller = install(unet)
    controller.mapper = torch.arange(77)
    controller.alphas = torch.ones(77)
    try:
        z, emb = inputs()
        with controller.plan(CallPlan(record_row=1, record_cross=True, record_self=True)):
            base = run(unet, z, emb)
        with controller.plan(CallPlan(inject_row=1, inject_cross=True, inject_self=True)):
            same = run(unet, z, emb)
        z2 = z.clone()
        z2[1] += 0.5
        with controller.plan(CallPlan(inject_row=1, inject_cross=True, inject_self=True)):
            injected = run(unet, z2, emb)
        plain = run(unet, z2, emb)
    finally:
        unet.set_attn_processor(AttnProcessor2_0())
    assert torch.allclose(same, base, atol=1e-5)
    assert torch.allclose(injected[0], plain[0], atol=1e-6)  # row 0 keeps its own attention
    assert (injected[1] - plain[1]).abs().max() > 1e-3


def test_refine_injection_keeps_new_tokens(unet):
    """Aligned positions take the source map (through the mapper), new tokens keep their own."""
    controller = install(unet)
    mapper = torch.arange(77)
    mapper[5] = -1
    controller.mapper = mapper
    alphas = torch.ones(77)
    alphas[5] = 0
    controller.alphas = alphas
    name = controller.last_layer_at(2)
    try:
        z, emb = inputs()
        with controller.plan(CallPlan(record_row=0, record_cross=True)):
            run(unet, z, emb)
        base = controller.store[name]
        with controller.plan(CallPlan(collect_row=1)):
            run(unet, z, emb)
        own = controller.collected[name]
        with controller.plan(CallPlan(inject_row=1, inject_cross=True, collect_row=1)):
            run(unet, z[:1].expand(2, -1, -1, -1), emb)
        mixed = controller.collected[name]
    finally:
        unet.set_attn_processor(AttnProcessor2_0())
    keep = [p for p in range(77) if p != 5]
    assert torch.allclose(mixed[:, :, keep], base[:, :, keep])
    # Position 5 is the edit row's own map (same latent as row 0 but the row-1 prompt).
    assert not torch.allclose(mixed[:, :, 5], base[:, :, 5])
    assert own.shape == mixed.shape


def test_early_exit_gives_the_same_loss_and_gradient(unet):
    controller = install(unet)
    controller.mapper = torch.arange(77)
    controller.alphas = torch.ones(77)
    controller.alphas[4] = 0
    names = sorted(
        (i for i in controller.layers.values() if i.cross and i.level == 2), key=lambda i: i.order
    )
    names = [i.name for i in names]
    mask = torch.zeros(64)
    mask[10:30] = 1
    try:
        z, emb = inputs(batch=1, size=32)
        with controller.plan(CallPlan(record_row=0, record_cross=True, record_self=True)):
            run(unet, z + 0.1, emb)

        def loss_and_grad(stop_after):
            zz = z.clone().requires_grad_(True)
            plan = CallPlan(
                inject_row=0,
                inject_cross=True,
                inject_self=True,
                collect_row=0,
                stop_after=stop_after,
            )
            with controller.plan(plan), contextlib.suppress(EarlyExit):
                unet(zz, 500, encoder_hidden_states=emb)
            maps = [controller.collected[n] for n in names]
            loss = token_ratio_loss(maps, [[4]], mask)
            (grad,) = torch.autograd.grad(loss, zz)
            return loss, grad

        full_loss, full_grad = loss_and_grad(None)
        fast_loss, fast_grad = loss_and_grad(controller.last_layer_at(2))
    finally:
        unet.set_attn_processor(AttnProcessor2_0())
    assert torch.allclose(fast_loss, full_loss)
    assert torch.allclose(fast_grad, full_grad, atol=1e-7)
    assert full_grad.abs().max() > 0


@pytest.mark.parametrize("record_row, inject_row", [(1, 3), (3, 1)])
def test_record_and_inject_in_one_call_equals_two_calls(unet, record_row, inject_row):
    """One call that records one row and injects into another gives what a record call followed
    by an inject call gives, whichever row comes first in the batch."""
    controller = install(unet)
    controller.mapper = torch.arange(77)
    controller.alphas = torch.ones(77)
    controller.alphas[4] = 0
    both = dict(record_cross=True, record_self=True, inject_cross=True, inject_self=True)
    try:
        z, emb = inputs(batch=4)
        with controller.plan(CallPlan(record_row=record_row, inject_row=inject_row, **both)):
            joint = run(unet, z, emb)
        with controller.plan(CallPlan(record_row=record_row, record_cross=True, record_self=True)):
            recorded = run(unet, z, emb)
        with controller.plan(CallPlan(inject_row=inject_row, inject_cross=True, inject_self=True)):
            injected = run(unet, z, emb)
    finally:
        unet.set_attn_processor(AttnProcessor2_0())
    assert torch.allclose(joint[record_row], recorded[record_row], atol=1e-6)
    assert torch.allclose(joint[inject_row], injected[inject_row], atol=1e-6)
    assert (joint[inject_row] - recorded[inject_row]).abs().max() > 1e-3
