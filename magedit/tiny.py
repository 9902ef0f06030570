"""Tiny random-weight components for tests and the offline demo (``--tiny``).

The UNet has exactly SD v1.4's block layout (4 down / 4 up blocks, 2 layers per block,
cross-attention at latent, latent/2 and latent/4, a mid block at latent/8) with widths 32/32/64/64
and 2 heads, like the authors' oracle model; the text encoder is a 2-layer 32-wide CLIP over the
real CLIP BPE vocabulary (so any English prompt tokenizes as in SD), and the VAE a small 4-level
one (8x downsampling, as SD's). Nothing here was trained: images made with them are noise.
"""

from __future__ import annotations

import torch

UNET_CONFIG = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "up_block_types": [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ],
    "block_out_channels": [32, 32, 64, 64],
    "layers_per_block": 2,
    "attention_head_dim": 2,  # diffusers' name for the number of heads in SD v1.x configs
    "cross_attention_dim": 32,
    "norm_num_groups": 32,
}

VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [8, 16, 16, 16],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 64,
}

TEXT_CONFIG = {
    "vocab_size": 49408,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
}


def tiny_components(seed: int = 0) -> dict:
    """Random-weight ``unet``, ``vae``, ``text_encoder`` and the real CLIP ``tokenizer``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from magedit.tokenizer import clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    vae = AutoencoderKL(**VAE_CONFIG)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": clip_tokenizer(),
    }
