"""INR2JLS (SPEC 4.4): an INR's weights to a joint latent space of six views of its image.

Stage 1, :class:`JLSAutoencoder`: a weight-space encoder's graph features :math:`f`, a
:class:`LatentGenerator` turning them into one spatial latent map per view, and a
:class:`ConvDecoder` drawing each view from its map; trained to reproduce the image in the
six views of :class:`SixViews`. Stage 2, :class:`JLSClassifier`: encoder and latent
generator frozen, a :class:`ViewClassifier` reads each view's map and the six views' logits
are summed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

__all__ = [
    "VIEW_NAMES",
    "ConvDecoder",
    "JLSAutoencoder",
    "JLSClassifier",
    "LatentGenerator",
    "LatentMLP",
    "SixViews",
    "ViewClassifier",
    "graph_features",
]

#: The six views, in the order of :class:`SixViews` (and of the official code's
#: ``INROriginalDataset`` with ``img_aug_type='1'``). Rotations are counter-clockwise.
VIEW_NAMES = ("original", "hflip", "vflip", "rot90", "rot-90", "rot180")

Graphs = Batch | Data | list[Data]


def graph_features(encoder: nn.Module, graphs: Graphs) -> Tensor:
    """What an encoder's output MLP reads: ``encoder.features(graphs)``, ``[G, F]`` (every
    graph encoder has it); a ``TypeError`` naming the encoder otherwise."""
    features = getattr(encoder, "features", None)
    if not callable(features):
        raise TypeError(f"{type(encoder).__name__} has no features(graphs): INR2JLS reads "
                        "the graph encoders NGGNN, NGTransformer and DNGEncoder")
    return features(graphs)


class SixViews(nn.Module):
    r"""The six views of a batch of square images: the image, its horizontal flip (columns
    reversed), its vertical flip (rows reversed), and its rotations by +90, -90 and 180
    degrees (counter-clockwise, as ``torchvision``'s ``RandomRotation`` turns a positive
    angle):

    .. math::
        V_1 = I,\ V_2[i, j] = I[i, W-1-j],\ V_3[i, j] = I[H-1-i, j],\
        V_4[i, j] = I[j, W-1-i],\ V_5[i, j] = I[H-1-j, i],\
        V_6[i, j] = I[H-1-i, W-1-j]

    Shapes:
        - input: :math:`(B, C, H, W)` or :math:`(B, H, W)` with :math:`H = W`
        - output: :math:`(B, 6, C, H, W)` (:math:`C = 1` for 3-d input)
    """

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() == 3:
            images = images.unsqueeze(1)
        if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
            raise ValueError(f"SixViews needs square images [B, C, H, W] or [B, H, W], got "
                             f"{tuple(images.shape)}")
        dims = (-2, -1)
        return torch.stack([images, images.flip(-1), images.flip(-2), images.rot90(1, dims),
                            images.rot90(-1, dims), images.rot90(2, dims)], 1)


class LatentGenerator(nn.Module):
    r"""A spatial latent map per view from a graph-feature vector :math:`f`: each of the
    :math:`V s^2` positions has a learned token :math:`p_{v,k}`, and

    .. math::
        z_{v,k} = W_2\, \text{ReLU}\big(W_1 [p_{v,k} \,\Vert\, f] + b_1\big) + b_2

    (the official ``LatentGen``). :math:`W_1 [p \Vert f] = W_p p + W_f f` is computed as
    that sum, the token part once per batch: the same function and parameters as the
    Linear layer on the concatenation, without repeating :math:`f` for every token.

    Args:
        in_features (int): width :math:`F` of the graph features.
        latent_dim (int): channels :math:`D` of the latent maps (128 in the paper).
        latent_size (int): positions per view, a square :math:`s^2` (49 for 28x28 images).
        views (int): latent maps per INR (6; 1 for INR-INR).
        hidden (int): width of the token MLP (1024).
        token_dim (int, optional): width of the tokens (default :math:`F`, as the paper).

    Shapes:
        - input: :math:`(B, F)`
        - output: :math:`(B, V, D, s, s)`
    """

    def __init__(self, in_features: int, latent_dim: int, latent_size: int = 49,
                 views: int = 6, hidden: int = 1024, token_dim: int | None = None) -> None:
        super().__init__()
        side = math.isqrt(latent_size)
        if latent_size < 1 or side * side != latent_size:
            raise ValueError(f"latent_size must be a square number (49 = 7x7), got "
                             f"{latent_size}")
        if min(in_features, latent_dim, views, hidden) < 1:
            raise ValueError("in_features, latent_dim, views and hidden must be positive")
        self.in_features, self.latent_dim, self.latent_size = in_features, latent_dim, latent_size
        self.views, self.side, self.hidden = views, side, hidden
        self.token_dim = token_dim or in_features
        self.tokens = nn.Parameter(torch.empty(views * latent_size, self.token_dim))
        self.fuse = nn.Linear(self.token_dim + in_features, hidden)
        self.out = nn.Linear(hidden, latent_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.tokens)  # torch.randn, as the paper's latent_init
        self.fuse.reset_parameters()
        self.out.reset_parameters()

    def forward(self, features: Tensor) -> Tensor:
        if features.dim() != 2 or features.shape[1] != self.in_features:
            raise ValueError(f"LatentGenerator expects features [B, {self.in_features}], got "
                             f"{tuple(features.shape)}")
        w_token, w_feature = self.fuse.weight.split([self.token_dim, self.in_features], 1)
        tokens = F.linear(self.tokens, w_token, self.fuse.bias)  # [T, hidden]
        hidden = torch.relu(tokens.unsqueeze(0) + F.linear(features, w_feature).unsqueeze(1))
        latent = self.out(hidden)  # [B, T, D], T = views * s * s, view-major
        b, s = features.shape[0], self.side
        return latent.view(b, self.views, s, s, self.latent_dim).permute(0, 1, 4, 2, 3)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.in_features}, latent_dim={self.latent_dim}, "
                f"latent_size={self.latent_size}, views={self.views}, hidden={self.hidden}, "
                f"token_dim={self.token_dim})")


class ConvDecoder(nn.Module):
    r"""Each view's image from its latent map, 4x larger:
    ``ConvTranspose2d(D, hidden, 4, stride 2, padding 1) -> ReLU ->
    ConvTranspose2d(hidden, C, 4, stride 2, padding 1)`` (7x7 -> 14x14 -> 28x28; the
    official ``ConvDecoder49``), shared by the views.

    Args:
        latent_dim (int): channels :math:`D` of the latent maps.
        out_channels (int): image channels :math:`C` (1 for MNIST).
        hidden (int): channels of the middle map (256).

    Shapes:
        - input: :math:`(B, V, D, s, s)`
        - output: :math:`(B, V, C, 4s, 4s)`
    """

    def __init__(self, latent_dim: int, out_channels: int = 1, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, hidden, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(hidden, out_channels, 4, stride=2, padding=1))

    def reset_parameters(self) -> None:
        for layer in self.net:
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()

    def forward(self, latent: Tensor) -> Tensor:
        b, v = latent.shape[:2]
        out = self.net(latent.reshape(b * v, *latent.shape[2:]))
        return out.view(b, v, *out.shape[1:])


class ViewClassifier(nn.Module):
    r"""Class logits of each view from its latent map (the official ``ConvLatentClassifier``
    for 28x28 images): ``Conv2d(D, c, 3, stride 2, padding 1) -> BatchNorm -> ReLU ->
    MaxPool(2) -> Dropout(dropout) -> Conv2d(c, c, 1) -> BatchNorm -> ReLU -> global max
    pool -> Linear(c, c) -> ReLU -> Dropout(head_dropout) -> Linear(c, c) -> ReLU ->
    Dropout(head_dropout) -> Linear(c, classes)``, shared by the views. On 7x7 maps the
    global max pool is the official second ``MaxPool(2)``; the first pools with
    ``ceil_mode`` so that smaller maps work too. The prediction of an INR is the sum of its
    views' logits, :math:`\arg\max_y \sum_v \ell_v(y)`.

    Args:
        latent_dim (int): channels :math:`D` of the maps.
        num_classes (int): classes (10).
        channels (int): conv channels and MLP width :math:`c` (256).
        dropout (float): dropout after the first conv block (0.2).
        head_dropout (float): dropout in the MLP (0.5).

    Shapes:
        - input: :math:`(B, V, D, s, s)`
        - output: :math:`(B, V, \text{classes})`
    """

    def __init__(self, latent_dim: int, num_classes: int = 10, channels: int = 256,
                 dropout: float = 0.2, head_dropout: float = 0.5) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(latent_dim, channels, 3, stride=2, padding=1),
            nn.BatchNorm2d(channels), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Dropout(dropout),
            nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.AdaptiveMaxPool2d(1))
        self.mlp = nn.Sequential(
            nn.Linear(channels, channels), nn.ReLU(), nn.Dropout(head_dropout),
            nn.Linear(channels, channels), nn.ReLU(), nn.Dropout(head_dropout),
            nn.Linear(channels, num_classes))

    def forward(self, latent: Tensor) -> Tensor:
        b, v = latent.shape[:2]
        logits = self.mlp(self.conv(latent.reshape(b * v, *latent.shape[2:])).flatten(1))
        return logits.view(b, v, -1)


class LatentMLP(nn.Module):
    r"""Class logits from the flattened latent of each INR (the official
    ``MLPLatentClassifier`` of INR-INR): ``Linear(V s^2 D, h) -> ReLU -> Linear(h, h) ->
    ReLU -> Linear(h, classes)``.

    Shapes:
        - input: :math:`(B, V, D, s, s)`
        - output: :math:`(B, 1, \text{classes})` (one "view": the whole latent)
    """

    def __init__(self, in_features: int, num_classes: int = 10, hidden: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, num_classes))

    def forward(self, latent: Tensor) -> Tensor:
        return self.mlp(latent.flatten(1)).unsqueeze(1)


class JLSAutoencoder(nn.Module):
    r"""INR2JLS stage 1: :math:`\hat V = \text{decoder}(\text{latent}(f(G)))`, the six
    views of an INR's image drawn from its weights alone.

    Args:
        encoder (nn.Module): a weight-space encoder (its graph features,
            :func:`graph_features`).
        latent (LatentGenerator): graph features to per-view latent maps.
        decoder (ConvDecoder): latent maps to images.

    Shapes:
        - input: a batch of ``B`` neural graphs
        - output: :math:`(B, 6, C, H, W)`, values meant for images scaled to :math:`[-1, 1]`
    """

    def __init__(self, encoder: nn.Module, latent: LatentGenerator,
                 decoder: ConvDecoder) -> None:
        super().__init__()
        self.encoder, self.latent, self.decoder = encoder, latent, decoder

    def encode(self, graphs: Graphs) -> Tensor:
        """The latent maps, :math:`(B, V, D, s, s)`."""
        return self.latent(graph_features(self.encoder, graphs))

    def forward(self, graphs: Graphs) -> Tensor:
        return self.decoder(self.encode(graphs))


class JLSClassifier(nn.Module):
    r"""INR2JLS stage 2 (and INR-INR's classifier): ``head(latent(f(G)))`` with the encoder
    and the latent generator of a trained stage 1 frozen: no gradient reaches them
    (``requires_grad`` off, computed under ``no_grad``) and they stay in eval mode whatever
    ``train()`` says. Only ``head`` learns.

    Shapes:
        - input: a batch of ``B`` neural graphs
        - output: the head's, :math:`(B, V, \text{classes})`; the INR's logits are the sum
          over :math:`V`
    """

    def __init__(self, encoder: nn.Module, latent: LatentGenerator, head: nn.Module) -> None:
        super().__init__()
        self.encoder, self.latent, self.head = encoder, latent, head
        for frozen in (encoder, latent):
            frozen.requires_grad_(False)
            frozen.eval()

    def train(self, mode: bool = True) -> JLSClassifier:
        super().train(mode)
        self.encoder.eval()
        self.latent.eval()
        return self

    def encode(self, graphs: Graphs) -> Tensor:
        with torch.no_grad():
            return self.latent(graph_features(self.encoder, graphs))

    def forward(self, graphs: Graphs) -> Tensor:
        return self.head(self.encode(graphs))
