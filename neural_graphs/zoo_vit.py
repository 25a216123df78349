"""The ViT family of the model zoos: SimpleViTs, each trained by its own seed.

The dynamic-neural-graph paper's ViT zoo (official ``data/generate_vit.py``) trains
vit_pytorch's SimpleViT (patch 4, dim 32, depth 2, 4 heads, MLP 64, 2-d sin-cos position
embedding, mean pooling over the tokens) with Adam (lr 1e-3, batch 128, random crops and
flips), and its models differ only by seed and stop epoch. :class:`SimpleViT` is that
network built from ``torch.nn`` modules, so that :func:`neural_graphs.to_neural_graph`
reads it exactly: a 4x4 stride-4 convolution embeds the patches (one ``Linear`` of each
patch, as SimpleViT's), the fixed position embedding is a buffer, each block is a pre-norm
``nn.TransformerEncoderLayer`` (GELU, no dropout) and a final ``LayerNorm`` closes the
encoder. Adapted to the 28x28 grey images here, and where ``torch.nn`` differs:

- 49 tokens of one channel (7x7 patches of 28x28) instead of 64 of three;
- ``nn.MultiheadAttention`` has heads of ``dim / heads`` = 8 features (SimpleViT: 16,
  an inner width of 64) and biases in its projections; SimpleViT's patch embedding has a
  LayerNorm before and after its ``Linear``, this one none;
- random crops only (padding 4, with black): a flipped digit is another shape.

Every network is a plain module with its own ``torch.optim.Adam``; a group of networks
trains in one process, each on its own mini-batches of the training images (order and
crops from ``numpy.random.default_rng(seed)``, initialisation from ``torch`` seeded with
``seed``). At each checkpoint epoch every network is measured on its training images and
on every measurement image; predictions are screened in float32 and near ties recomputed
in float64, as for the CNN families, so ``model(torch.float64)`` reproduces the recorded
accuracies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neural_graphs.zoo_cnn import near_ties, predictions

__all__ = [
    "VIT_EPOCHS",
    "VIT_SKELETON",
    "VIT_SPACE",
    "SimpleViT",
    "build_vit",
    "is_vit",
    "predict_module",
    "sincos_2d",
    "train_vit_group",
    "vit_macs",
]

#: The official zoo's stop epochs (``selected_epochs`` of generate_vit.py).
VIT_EPOCHS = [0, 1, 2, 3, 5, 10, 13, 18, 23]
#: The official SimpleViT's sizes (heads of dim / heads features here, see above).
VIT_SKELETON: dict[str, Any] = {"kind": "vit", "patch_size": 4, "dim": 32, "depth": 2,
                                "heads": 4, "mlp_dim": 64}
#: The official recipe: every network the same but for its seed.
VIT_SPACE: dict[str, Any] = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0,
                             "init_scale": 1.0, "dropout": 0.0, "train_fraction": 1.0,
                             "activation": "gelu", "crop_padding": 4}


def sincos_2d(h: int, w: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """vit_pytorch's ``posemb_sincos_2d``: ``[h * w, dim]``, columns
    ``[sin x, cos x, sin y, cos y]`` at ``dim / 4`` frequencies ``temperature^{-i/(dim/4-1)}``."""
    if dim % 4 or dim < 8:
        raise ValueError(f"the sin-cos position embedding needs dim a multiple of 4 and at "
                         f"least 8, got {dim}")
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4) / (dim // 4 - 1))
    y = y.flatten()[:, None] * omega[None, :]
    x = x.flatten()[:, None] * omega[None, :]
    return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1)


class SimpleViT(nn.Module):
    r"""SimpleViT (Beyer et al. 2022, vit_pytorch) from ``torch.nn`` modules.

    .. math::
        t = \mathrm{PatchConv}(x) + P,\quad
        t \leftarrow \mathrm{EncoderLayer}_\ell(t)\ (\ell = 1..L),\quad
        y = W\,\mathrm{mean}_{\text{tokens}}\,\mathrm{LN}(t) + b

    Args:
        image_size (int): side of the square input.
        patch_size (int): side of a patch (``image_size`` a multiple of it).
        in_channels (int): input channels.
        num_classes (int): outputs.
        dim (int): token width (a multiple of 4 and of ``heads``).
        depth (int): encoder layers (pre-norm, GELU, no dropout).
        heads (int): attention heads.
        mlp_dim (int): hidden width of each layer's MLP.

    Shapes:
        - input: :math:`(B, C_{in}, H, W)`
        - output: :math:`(B, \text{classes})`
    """

    def __init__(self, image_size: int = 28, patch_size: int = 4, in_channels: int = 1,
                 num_classes: int = 10, dim: int = 32, depth: int = 2, heads: int = 4,
                 mlp_dim: int = 64) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size ({image_size}) must be a multiple of patch_size "
                             f"({patch_size})")
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be a multiple of heads ({heads})")
        self.image_size = image_size
        grid = image_size // patch_size
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.register_buffer("pos_embed", sincos_2d(grid, grid, dim)[None])
        layer = nn.TransformerEncoderLayer(dim, heads, mlp_dim, 0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(dim),
                                             enable_nested_tensor=False)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        return self.head(self.encoder(tokens).mean(1))

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}"


def is_vit(arch: dict[str, Any]) -> bool:
    """Whether a zoo ``arch`` describes a :class:`SimpleViT` (CNN archs have no ``kind``)."""
    return arch.get("kind") == "vit"


def build_vit(arch: dict[str, Any]) -> SimpleViT:
    """The :class:`SimpleViT` of a zoo ``arch``: ``{"kind": "vit", "in_channels",
    "num_classes", "image_size", "patch_size", "dim", "depth", "heads", "mlp_dim"}``."""
    keys = ("in_channels", "num_classes", "image_size", "patch_size", "dim", "depth",
            "heads", "mlp_dim")
    missing = [key for key in keys if key not in arch]
    if not is_vit(arch) or missing:
        raise ValueError(f"a ViT arch needs kind 'vit' and keys {list(keys)}; got "
                         f"{sorted(arch)} (missing {missing})")
    return SimpleViT(**{key: int(arch[key]) for key in keys})


def vit_macs(arch: dict[str, Any]) -> int:
    """Multiply-accumulates of one forward pass (for splitting groups over ranks)."""
    t = (arch["image_size"] // arch["patch_size"]) ** 2
    d, m = arch["dim"], arch["mlp_dim"]
    embed = t * d * arch["in_channels"] * arch["patch_size"] ** 2
    block = t * (4 * d * d + 2 * d * m) + 2 * t * t * d
    return embed + arch["depth"] * block + d * arch["num_classes"]


# --------------------------------------------------------------------------- training


def _initialised(arch: dict[str, Any], seed: int, dtype: torch.dtype) -> SimpleViT:
    """``build_vit(arch)`` with torch's default initialisation drawn after
    ``torch.manual_seed(seed)``, leaving the caller's random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build_vit(arch).to(dtype)


def _random_crops(images: Tensor, padding: int, rng: np.random.Generator,
                  fill: float) -> Tensor:
    """Each image shifted by its own offset: padded by ``padding`` pixels of ``fill`` on
    every side and cropped back to its size (torchvision's ``RandomCrop(size, padding)``)."""
    if padding == 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4, value=fill)
    offsets = torch.as_tensor(rng.integers(0, 2 * padding + 1, size=(2, b)),
                              device=images.device)
    rows = (offsets[0, :, None] + torch.arange(h, device=images.device))[:, :, None]
    cols = (offsets[1, :, None] + torch.arange(w, device=images.device))[:, None, :]
    batch = torch.arange(b, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


@torch.no_grad()
def predict_module(model: nn.Module, images: Tensor, chunk: int = 1000) -> Tensor:
    """Predictions ``[M]`` of one network: screened in its dtype, near ties (top two
    logits within ``TIE_TOLERANCE * (1 + max |logit|)``) and non-finite logits
    recomputed in float64."""
    model.eval()
    dtype = next(model.parameters()).dtype
    out, near = [], []
    for start in range(0, len(images), chunk):
        logits = model(images[start:start + chunk].to(dtype))
        out.append(predictions(logits))
        if dtype != torch.float64:
            near.append(near_ties(logits))
    pred = torch.cat(out)
    if near:
        recheck = torch.cat(near).nonzero().flatten()
        if len(recheck):
            exact = _copy_as(model, torch.float64)
            pred[recheck] = predictions(exact(images[recheck].double()))
    return pred


def _copy_as(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A zoo network (one with its ``arch``) rebuilt in ``dtype``, in eval mode."""
    if not hasattr(model, "arch"):
        raise TypeError("predict_module rechecks near ties of zoo networks only (modules "
                        f"with an 'arch' attribute), got {type(model).__name__}")
    copy = build_vit(model.arch)
    copy.load_state_dict(model.state_dict())
    return copy.to(dtype).eval()


def _finite(model: nn.Module) -> bool:
    return all(bool(p.detach().isfinite().all()) for p in model.parameters())


def _member(model: SimpleViT, network: int, epoch: int, data: Any, subset: Tensor,
            train_x: Tensor, test_x: Tensor) -> dict[str, Any]:
    """One checkpoint: accuracies on the network's training images and on every
    measurement image, and a CPU copy of its ``state_dict``."""
    train_pred = predict_module(model, train_x[subset])
    test_pred = predict_module(model, test_x)
    return {"network": network, "epoch": epoch,
            "train_acc": float((train_pred == data.train_y[subset]).double().mean()),
            "test_acc": float((test_pred == data.test_y).double().mean()),
            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}


def _train_network(net: dict[str, Any], data: Any, config: Any, dtype: torch.dtype,
                   on_epoch: Callable[[int], None] | None
                   ) -> tuple[list[dict[str, Any]], float | None]:
    """One network's members and the fraction of an epoch at which it diverged (None)."""
    hp, arch = net["hparams"], net["arch"]
    device = data.train_x.device
    train_x, test_x = data.train_x.to(dtype), data.test_x.to(dtype)
    fill = -data.mean / data.std  # black, normalised like the images
    rng = np.random.default_rng(hp["seed"])
    model = _initialised(arch, hp["seed"], dtype).to(device)
    model.arch = arch
    optimizer = torch.optim.Adam(model.parameters(), lr=hp["lr"],
                                 weight_decay=hp["weight_decay"])
    size = max(1, round(hp["train_fraction"] * len(train_x)))
    subset = torch.as_tensor(rng.choice(len(train_x), size, replace=False), device=device)
    members = []
    if 0 in config.epochs:
        members.append(_member(model, net["network"], 0, data, subset, train_x, test_x))
    steps = math.ceil(size / config.batch_size)
    for epoch in range(1, max(config.epochs) + 1):
        model.train()
        order = subset[torch.as_tensor(rng.permutation(size), device=device)]
        for step in range(steps):
            index = order[step * config.batch_size:(step + 1) * config.batch_size]
            x = _random_crops(train_x[index], hp["crop_padding"], rng, fill)
            loss = F.cross_entropy(model(x), data.train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if not _finite(model):
                return members, round(epoch - 1 + (step + 1) / steps, 6)
        if epoch in config.epochs:
            members.append(_member(model, net["network"], epoch, data, subset, train_x,
                                   test_x))
        if on_epoch is not None:
            on_epoch(epoch)
    return members, None


def train_vit_group(group: dict[str, Any], data: Any, config: Any,
                    on_epoch: Callable[[int], None] | None = None,
                    dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Train one group of ViTs; return its members (records and ``state_dict`` s), in the
    form of :func:`neural_graphs.zoo.train_group`.

    Each network trains on ``round(train_fraction * M)`` training images drawn by
    ``numpy.random.default_rng(seed)`` (all of them in the official recipe), in a new
    order every epoch, in batches of ``config.batch_size``, with random crops; at every
    epoch of ``config.epochs`` (0: the initialisation) a finite network becomes a member.
    """
    members: list[dict[str, Any]] = []
    networks = []
    for net in group["networks"]:
        own, diverged = _train_network(net, data, config, dtype, on_epoch)
        members += own
        networks.append({"network": net["network"], "arch": net["arch"],
                         "hparams": net["hparams"], "diverged_epoch": diverged})
    return {"group": group["group"], "train_fraction": group["train_fraction"],
            "networks": networks, "members": members}


def vit_skeleton(in_channels: int, num_classes: int, image_size: int) -> dict[str, Any]:
    """The official sizes for images of ``image_size`` (a multiple of the patch)."""
    patch = VIT_SKELETON["patch_size"]
    if image_size % patch:
        raise ValueError(f"the ViT family needs images whose side is a multiple of {patch}, "
                         f"got {image_size}")
    return {**VIT_SKELETON, "in_channels": in_channels, "num_classes": num_classes,
            "image_size": image_size}


def vit_hparams(seed: int) -> dict[str, Any]:
    """A network's hyper-parameters: the official recipe and its own ``seed``."""
    return {"seed": int(seed), **VIT_SPACE}
