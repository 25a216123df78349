"""Vision Transformer for 32x32 CIFAR-100: patch 8, embed 128, depth 6, 8 heads."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from models.common import check_input, model_main
from modules.convert import to_gnn

INPUT_SHAPE = (3, 32, 32)


class ViTCIFAR100(nn.Module):
    """Patch embedding (8x8 convolution, stride 8: 16 patches), class token, learned
    position embedding, post-norm Transformer encoder (GELU, MLP ratio 4, dropout 0.1)
    with a final LayerNorm, and a class-token head LayerNorm + Linear."""

    def __init__(self, num_classes: int = 100, image_size: int = 32, patch_size: int = 8,
                 embed_dim: int = 128, depth: int = 6, num_heads: int = 8,
                 mlp_ratio: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        self.pos_drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(embed_dim, num_heads, embed_dim * mlp_ratio,
                                           dropout, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(embed_dim),
                                             enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, num_classes))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.image_size = image_size

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, (3, self.image_size, self.image_size))
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        tokens = self.pos_drop(torch.cat([cls, tokens], dim=1) + self.pos_embed)
        return self.head(self.encoder(tokens)[:, 0])


def ViTAsGNNCIFAR100(**kwargs: int | float) -> nn.Module:  # noqa: N802
    """The message-passing twin of :class:`ViTCIFAR100`."""
    return to_gnn(ViTCIFAR100(**kwargs), copy_model=False)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m models.CIFAR100_ViT``: parameter counts and the equivalence check."""
    return model_main("CIFAR100_ViT", ViTCIFAR100, ViTAsGNNCIFAR100, INPUT_SHAPE, 2000, 250,
                      argv=argv)
