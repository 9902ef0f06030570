"""Tiny random-weight components for tests and the offline demo (``--tiny``).

The UNet has exactly SD v1.4's block layout (4 down / 4 up blocks, 2 layers per block,
cross-attention at latent, latent/2 and latent/4, a mid block at latent/8) with widths 32/32/64/64
and 2 heads, like the authors' oracle model; the text encoder is a 2-layer 32-wide CLIP over the
real CLIP BPE vocabulary (so any English prompt tokenizes as in SD), and the VAE a small 4-level
one (8x downsampling, as SD's); ``tiny_sam`` is Segment Anything's architecture at a 64-pixel
input. Nothing here was trained: images and masks made with them are noise.
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


# Segment Anything with SAM's architecture at a 64-pixel input: a 2-block ViT (patch 16, so a
# 4x4 embedding, one windowed and one global block as in SAM), a 32-wide prompt encoder and a
# 2-layer two-way-transformer mask decoder. The prompt encoder's embed_dim, the image encoder's
# out_chans and the mask decoder's transformer_dim are one width, as SAM requires.
SAM_CONFIG = {
    "img_size": 64,  # SAM: 1024
    "patch_size": 16,  # SAM: 16
    "encoder_embed_dim": 32,  # SAM ViT-B: 768
    "encoder_depth": 2,  # SAM ViT-B: 12
    "encoder_num_heads": 2,
    "encoder_global_attn_indexes": (1,),
    "window_size": 2,  # SAM: 14
    "prompt_embed_dim": 32,  # SAM: 256
    "mask_in_chans": 16,  # SAM: 16
    "decoder_mlp_dim": 64,  # SAM: 2048
    "decoder_num_heads": 2,  # SAM: 8
}


def tiny_sam(seed: int = 0):
    """A random-weight ``segment_anything.modeling.Sam`` (img_size 64) in eval mode."""
    from functools import partial

    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    c = SAM_CONFIG
    side = c["img_size"] // c["patch_size"]
    torch.manual_seed(seed)
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=c["img_size"],
            patch_size=c["patch_size"],
            embed_dim=c["encoder_embed_dim"],
            depth=c["encoder_depth"],
            num_heads=c["encoder_num_heads"],
            mlp_ratio=4,
            out_chans=c["prompt_embed_dim"],
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=c["window_size"],
            global_attn_indexes=c["encoder_global_attn_indexes"],
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=c["prompt_embed_dim"],
            image_embedding_size=(side, side),
            input_image_size=(c["img_size"], c["img_size"]),
            mask_in_chans=c["mask_in_chans"],
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2,
                embedding_dim=c["prompt_embed_dim"],
                mlp_dim=c["decoder_mlp_dim"],
                num_heads=c["decoder_num_heads"],
            ),
            transformer_dim=c["prompt_embed_dim"],
            iou_head_depth=3,
            iou_head_hidden_dim=c["prompt_embed_dim"],
        ),
    )
    return sam.eval()
