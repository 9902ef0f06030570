"""Attention processors that record, inject and read attention maps, set with ``set_attn_processor``.

Every attention layer of the UNet gets one :class:`MagAttnProcessor`, keyed by its diffusers name.
A layer is chosen by *resolution*: its level is how many times the latent has been halved where it
sits (``down_blocks.k`` -> k, ``up_blocks.k`` -> n - 1 - k, ``mid_block`` -> n - 1 for a UNet with n
blocks), so in SD v1.4 at 512 x 512 level 2 is the 16 x 16 layers the paper's loss reads.

What a UNet call does with the maps is said by a :class:`CallPlan` the pipeline sets around that
call (``with controller.plan(CallPlan(...))``); nothing counts calls. A layer computes explicit
probabilities (``softmax(q k^T * scale)``) only when the plan records, injects or collects its map;
every other layer, and every call without a plan, uses ``scaled_dot_product_attention``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

_NAME = re.compile(
    r"^(down_blocks|up_blocks|mid_block)(?:\.(\d+))?\.attentions\.(\d+)\.transformer_blocks\.(\d+)\.(attn[12])"
)


@dataclass(frozen=True)
class LayerInfo:
    """Where an attention layer sits: ``level`` = log2(latent side / its map side)."""

    name: str
    cross: bool
    level: int
    order: tuple[int, int, int, int]  # forward order within the UNet: (section, block, attn, tb)


def layer_infos(processor_names: list[str], num_blocks: int) -> dict[str, LayerInfo]:
    """Parse diffusers processor names of an SD-style UNet into :class:`LayerInfo`s."""
    infos = {}
    for name in processor_names:
        match = _NAME.match(name)
        if match is None:
            raise ValueError(f"unexpected attention layer name {name!r}: not an SD-style UNet")
        section, block, attn_idx, tb_idx, kind = match.groups()
        block_idx = int(block) if block is not None else 0
        if section == "down_blocks":
            level, order = block_idx, 0
        elif section == "mid_block":
            level, order = num_blocks - 1, 1
        else:
            level, order = num_blocks - 1 - block_idx, 2
        infos[name] = LayerInfo(
            name=name,
            cross=kind == "attn2",
            level=level,
            order=(order, block_idx, int(attn_idx), int(tb_idx)),
        )
    return infos


class EarlyExit(Exception):
    """Raised after the last layer a guidance iteration reads, to skip the rest of the UNet."""


@dataclass
class CallPlan:
    """What one UNet call does with attention maps. Rows index the call's batch.

    record_row:   store this row's maps (detached) for the layers selected by ``record_cross`` /
                  ``record_self`` into ``controller.store`` (the reconstruction branch).
    inject_row:   replace this row's maps with the stored ones: cross-attention through the
                  refinement ``mapper``/``alphas`` (Eq. 4) when ``inject_cross``; self-attention of
                  layers at level >= 1 (<= 32x32 queries at 512) when ``inject_self``. With a
                  record_row in the same call, the stored maps are this call's recorded row's
                  (one call carries the reconstruction and the editing branch).
    collect_row:  keep this row's cross maps (after injection, with their graph) of the layers at
                  ``collect_level`` in ``controller.collected`` (what the losses read).
    stop_after:   layer name after which the forward stops (:class:`EarlyExit`).
    """

    record_row: int | None = None
    record_cross: bool = False
    record_self: bool = False
    inject_row: int | None = None
    inject_cross: bool = False
    inject_self: bool = False
    collect_row: int | None = None
    collect_level: int = 2
    stop_after: str | None = None


@dataclass
class AttentionController:
    """State shared by all processors of one UNet: the active plan and the maps it produced."""

    layers: dict[str, LayerInfo]
    mapper: torch.Tensor | None = None  # (77,) long: target position -> source position
    alphas: torch.Tensor | None = None  # (77,) float: 1 where the target token is aligned
    active: CallPlan | None = None
    store: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (heads, N, K)
    collected: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (heads, N, 77)

    @contextlib.contextmanager
    def plan(self, plan: CallPlan) -> Iterator[CallPlan]:
        if plan.collect_row is not None:
            self.collected = {}
        self.active = plan
        try:
            yield plan
        finally:
            self.active = None

    def keep(self, name: str, probs: torch.Tensor) -> None:
        """Store a recorded map. Written in place over the previous step's map of the same shape,
        so a captured CUDA graph that injects it reads each step's map from the same memory."""
        kept = self.store.get(name)
        if kept is not None and kept.shape == probs.shape and kept.dtype == probs.dtype:
            kept.copy_(probs)
        else:
            self.store[name] = probs.clone()

    def cross_layers_at(self, level: int) -> list[str]:
        """Names of the cross-attention layers at ``level``, in forward order."""
        infos = [info for info in self.layers.values() if info.cross and info.level == level]
        if not infos:
            raise ValueError(f"the UNet has no cross-attention layer at level {level}")
        return [info.name for info in sorted(infos, key=lambda info: info.order)]

    def last_layer_at(self, level: int) -> str:
        """Name of the last cross-attention layer at ``level`` in forward order."""
        return self.cross_layers_at(level)[-1]

    def levels(self, cross: bool = True) -> set[int]:
        return {info.level for info in self.layers.values() if info.cross == cross}


class MagAttnProcessor:
    """Attention of one layer; computes explicit maps only when the active plan needs them."""

    def __init__(self, info: LayerInfo, controller: AttentionController):
        self.info = info
        self.controller = controller

    def _roles(self, plan: CallPlan | None) -> tuple[bool, bool, bool]:
        if plan is None:
            return False, False, False
        info = self.info
        if info.cross:
            record = plan.record_row is not None and plan.record_cross
            inject = plan.inject_row is not None and plan.inject_cross
            collect = plan.collect_row is not None and info.level == plan.collect_level
        else:
            # The paper injects self-attention of layers with <= 32x32 queries (level >= 1 at 512).
            eligible = info.level >= 1
            record = plan.record_row is not None and plan.record_self and eligible
            inject = plan.inject_row is not None and plan.inject_self and eligible
            collect = False
        return record, inject, collect

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        controller = self.controller
        plan = controller.active
        record, inject, collect = self._roles(plan)

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])

        query = attn.to_q(hidden_states)
        key = attn.to_k(context)
        value = attn.to_v(context)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, N, d)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, K, d)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if record or inject or collect:
            out = self._explicit(attn, query, key, value, attention_mask, plan, record, inject)
        else:
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)

        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        out = out / attn.rescale_output_factor

        if plan is not None and plan.stop_after == self.info.name:
            raise EarlyExit
        return out

    def _explicit(self, attn, query, key, value, attention_mask, plan, record, inject):
        """Attention with materialised maps for the rows the plan reads or writes.

        Rows the plan does not touch (e.g. the unconditional halves) go through
        ``scaled_dot_product_attention``, so a row's arithmetic does not depend on what is done to
        the other rows of its batch. Returns (B, heads, N, d).
        """
        controller = self.controller
        name = self.info.name
        cross = self.info.cross
        rows = {plan.record_row} if record else set()
        if inject:
            rows.add(plan.inject_row)
        if cross and plan.collect_row is not None:
            rows.add(plan.collect_row)
        recorded = plan.record_row if record else None
        outs = {}
        # The recorded row first: a row injected in the same call reads what it stored.
        for row in sorted(rows, key=lambda r: (r != recorded, r)):
            if inject and row == plan.inject_row and not cross and row != recorded:
                # Injected self-attention is the stored map itself: no scores to compute.
                outs[row] = controller.store[name].to(value.dtype) @ value[row]
                continue
            scores = (query[row] @ key[row].transpose(-1, -2)) * attn.scale  # (heads, N, K)
            if attention_mask is not None:
                scores = scores + attention_mask[row]
            probs = scores.float().softmax(dim=-1).to(query.dtype)
            if record and row == plan.record_row:
                controller.keep(name, probs.detach())
            if inject and row == plan.inject_row:
                probs = self._inject(probs)
            if cross and row == plan.collect_row:
                controller.collected[name] = probs
            outs[row] = probs @ value[row]
        # The untouched rows by runs of consecutive rows: slices, not a list index (whose index
        # tensor would be copied to the GPU, which a CUDA graph cannot capture).
        batch = query.shape[0]
        row = 0
        while row < batch:
            if row in outs:
                row += 1
                continue
            end = row
            while end < batch and end not in outs:
                end += 1
            mask = None if attention_mask is None else attention_mask[row:end]
            rest = F.scaled_dot_product_attention(
                query[row:end], key[row:end], value[row:end], attn_mask=mask
            )
            outs.update(zip(range(row, end), rest.unbind(0), strict=True))
            row = end
        return torch.stack([outs[r] for r in range(batch)])

    def _inject(self, probs: torch.Tensor) -> torch.Tensor:
        """The edit row's (heads, N, K) map after Eq. 4's injection."""
        controller = self.controller
        base = controller.store[self.info.name].to(probs.dtype)  # (heads, N, K)
        if not self.info.cross:
            return base
        # Prompt-to-prompt "refine": aligned target tokens take the source token's map, new
        # tokens (alpha 0) keep the edit branch's own map.
        alphas = controller.alphas.to(probs.dtype)
        return base[:, :, controller.mapper] * alphas + probs * (1 - alphas)


def install(unet) -> AttentionController:
    """Give every attention layer of ``unet`` a :class:`MagAttnProcessor`; return their controller."""
    names = list(unet.attn_processors.keys())
    infos = layer_infos(names, len(unet.config.block_out_channels))
    controller = AttentionController(layers=infos)
    unet.set_attn_processor({name: MagAttnProcessor(infos[name], controller) for name in names})
    return controller
