"""The CNN architectures of the model zoos, and many of them run as one.

:func:`build_cnn` turns an ``arch`` description into the plain torch network every zoo
member is saved as. :class:`StackedCNNs` runs ``N`` networks of one skeleton (everything
but activation and dropout) as one: their parameters are the members' ``state_dict``
tensors with a leading network dimension (``{"0.weight": [N, 16, 1, 3, 3], ...}``) and its
activations carry the networks side by side along the channel dimension, so a convolution
is one grouped convolution (``groups=N``), BatchNorm is one ``batch_norm`` over ``N * C``
channels (exactly per network), and the linear layer one batched product. The stacked
forward walks the very module tree :func:`build_cnn` builds, so a member rebuilt from its
``arch`` and ``state_dict`` is the network that ran.

:func:`predict` screens predictions in the stack's dtype and recomputes in float64, with
the network's plain module, every prediction whose top-two logits lie within
``TIE_TOLERANCE * (1 + max |logit|)`` (or whose logits are not finite).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neural_graphs.activations import ACTIVATION_FACTORIES

__all__ = [
    "ACTIVATIONS",
    "TIE_TOLERANCE",
    "ResidualBlock",
    "StackedCNNs",
    "build_cnn",
    "near_ties",
    "predict",
    "predictions",
]

#: The activations a zoo network samples from (factories of neural_graphs.activations).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    name: ACTIVATION_FACTORIES[name]
    for name in ("relu", "leaky_relu", "gelu", "silu", "tanh", "sigmoid")
}
_ACTIVATION_TYPES = tuple(factory().__class__ for factory in ACTIVATIONS.values())
TIE_TOLERANCE = 1e-4  # float32 logits of zoo networks are within 2e-6 of float64
_FORMATS = (torch.channels_last, torch.contiguous_format)
_EVAL_FORMATS: dict[tuple, torch.memory_format] = {}  # StackedCNNs.eval_format's choices
_TIMING_IMAGES, _TIMING_ROUNDS = 32, 3


# --------------------------------------------------------------------------- networks


class ResidualBlock(nn.Module):
    r"""A residual unit :math:`y = \sigma(\mathrm{body}(x) + \mathrm{shortcut}(x))`.

    Args:
        body (nn.Module): the convolution (and BatchNorm) of the unit.
        shortcut (nn.Module): ``nn.Sequential()`` (identity) or a 1x1 convolution (and
            BatchNorm) that matches width and resolution.
        activation (nn.Module): :math:`\sigma`.

    Shapes:
        - input: :math:`(B, C_{in}, H, W)`
        - output: :math:`(B, C_{out}, H', W')`
    """

    def __init__(self, body: nn.Module, shortcut: nn.Module, activation: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut
        self.act = activation

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))


def _check_arch(arch: dict[str, Any]) -> None:
    required = ("in_channels", "num_classes", "layers", "activation", "dropout")
    missing = [key for key in required if key not in arch]
    if missing:
        raise ValueError(f"arch misses {missing}; expected keys {list(required)}, got "
                         f"{sorted(arch)}")
    if arch["activation"] not in ACTIVATIONS:
        raise ValueError(f"arch activation must be one of {list(ACTIVATIONS)}, got "
                         f"{arch['activation']!r}")
    if not 0.0 <= float(arch["dropout"]) < 1.0:
        raise ValueError(f"arch dropout must be in [0, 1), got {arch['dropout']}")
    if not arch["layers"]:
        raise ValueError("arch needs at least one convolution layer, got layers=[]")
    width = int(arch["in_channels"])
    for i, layer in enumerate(arch["layers"]):
        keys = ("out_channels", "kernel_size", "stride", "batch_norm", "residual")
        if any(key not in layer for key in keys):
            raise ValueError(f"arch layer {i} needs keys {list(keys)}, got {sorted(layer)}")
        if layer["kernel_size"] % 2 != 1:
            raise ValueError(f"arch layer {i}: kernel_size must be odd, got "
                             f"{layer['kernel_size']}")
        if layer["residual"] not in ("none", "identity", "projection"):
            raise ValueError(f"arch layer {i}: residual must be 'none', 'identity' or "
                             f"'projection', got {layer['residual']!r}")
        if layer["residual"] == "identity" and (layer["out_channels"] != width
                                                or layer["stride"] != 1):
            raise ValueError(
                f"arch layer {i}: an identity shortcut needs out_channels == in_channels "
                f"({width}) and stride 1, got out_channels={layer['out_channels']}, "
                f"stride={layer['stride']}")
        width = layer["out_channels"]


def build_cnn(arch: dict[str, Any]) -> nn.Sequential:
    """The plain torch network that ``arch`` describes (the form every zoo member is saved in).

    ``arch``: ``in_channels``, ``num_classes``, ``activation`` (a key of
    :data:`ACTIVATIONS`), ``dropout`` and ``layers``, a list of
    ``{"out_channels", "kernel_size", "stride", "batch_norm", "residual"}`` with
    ``residual`` one of ``"none"``, ``"identity"``, ``"projection"``. Layer ``i`` without a
    residual is ``Conv2d, [BatchNorm2d], activation`` (flat in the Sequential); with one it
    is a :class:`ResidualBlock`. Convolutions pad ``kernel_size // 2`` and have biases.
    The head is ``AdaptiveAvgPool2d(1), Flatten, Dropout, Linear``. Only ``nn.Conv2d``,
    ``nn.BatchNorm2d``, activation modules, ``nn.Dropout``, ``nn.AdaptiveAvgPool2d``,
    ``nn.Flatten``, ``nn.Linear``, ``nn.Sequential`` and :class:`ResidualBlock` appear, and
    ``torch.fx.symbolic_trace`` traces it.
    """
    _check_arch(arch)
    act = ACTIVATIONS[arch["activation"]]
    modules: list[nn.Module] = []
    width = int(arch["in_channels"])
    for layer in arch["layers"]:
        out, k, stride = int(layer["out_channels"]), int(layer["kernel_size"]), int(layer["stride"])
        body: list[nn.Module] = [nn.Conv2d(width, out, k, stride=stride, padding=k // 2)]
        if layer["batch_norm"]:
            body.append(nn.BatchNorm2d(out))
        if layer["residual"] == "none":
            modules += [*body, act()]
        else:
            shortcut = nn.Sequential()
            if layer["residual"] == "projection":
                shortcut.append(nn.Conv2d(width, out, 1, stride=stride))
                if layer["batch_norm"]:
                    shortcut.append(nn.BatchNorm2d(out))
            modules.append(ResidualBlock(nn.Sequential(*body), shortcut, act()))
        width = out
    modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(float(arch["dropout"])),
                nn.Linear(width, int(arch["num_classes"]))]
    return nn.Sequential(*modules)


def predictions(logits: Tensor) -> Tensor:
    """Class predictions ``argmax`` over the last dimension, ``-1`` where a logit is not finite."""
    pred = logits.argmax(-1)
    return torch.where(logits.isfinite().all(-1), pred, torch.full_like(pred, -1))


def near_ties(logits: Tensor) -> Tensor:
    """bool ``logits.shape[:-1]``: the top two logits lie within ``TIE_TOLERANCE * (1 +
    max |logit|)`` of each other, or a logit is not finite (recompute in float64)."""
    top = logits.topk(2, dim=-1).values
    scale = logits.abs().amax(-1).nan_to_num(nan=math.inf)
    return ~((top[..., 0] - top[..., 1]) > TIE_TOLERANCE * (1 + scale))


# --------------------------------------------------------------------------- stacked networks


class StackedCNNs:
    r"""``N`` networks of one skeleton run as one: stacked parameters, grouped convolutions.

    ``params`` / ``buffers`` map the members' ``state_dict`` names to tensors with a leading
    network dimension. Inside, a feature map holds the networks side by side along the
    channel dimension, :math:`(B, N \cdot C, H, W)`; a convolution is
    ``conv2d(x, W.reshape(N C_{out}, C_{in}, k, k), groups=N)``, BatchNorm is per channel
    and therefore per network, the linear layer is
    :math:`y_{bno} = \sum_c h_{bnc} W_{noc} + b_{no}`. Activations and dropout rates may
    differ between networks (networks of one activation should be contiguous).

    Args:
        archs (list[dict]): one arch per network, equal up to ``activation`` and ``dropout``.
        params (dict[str, Tensor]): stacked parameters ``[N, *shape]``.
        buffers (dict[str, Tensor]): stacked BatchNorm running statistics ``[N, C]``.

    ``eval_memory_format``: the layout of inference (None: the faster one, measured by
    :meth:`eval_format`); training runs ``channels_last``. An input shared by all networks
    meets a first convolution as one plain convolution of the ``N * C_out`` stacked filters
    instead of ``N`` copies of itself.

    Shapes:
        - input: :math:`(B, C_{in}, H, W)` shared by all networks, or
          :math:`(B, N \cdot C_{in}, H, W)` one input per network
        - output: :math:`(B, N, \text{classes})`
    """

    def __init__(self, archs: Sequence[dict[str, Any]], params: dict[str, Tensor],
                 buffers: dict[str, Tensor]) -> None:
        skeleton = _skeleton(archs[0])
        for arch in archs[1:]:
            if _skeleton(arch) != skeleton:
                raise ValueError("StackedCNNs needs networks of one skeleton (arch equal up "
                                 f"to activation and dropout); got {arch} and {archs[0]}")
        self.archs = [dict(arch) for arch in archs]
        self.n = len(archs)
        self.template = build_cnn({**skeleton, "activation": "relu", "dropout": 0.0})
        self.params = params
        self.buffers = buffers
        self.steps = 0
        self.eval_memory_format: torch.memory_format | None = None
        names = [a["activation"] for a in archs]
        self.act_runs: list[tuple[int, int, nn.Module]] = []
        start = 0
        for i in range(1, self.n + 1):
            if i == self.n or names[i] != names[start]:
                self.act_runs.append((start, i, ACTIVATIONS[names[start]]()))
                start = i
        self.dropout = torch.tensor([float(a["dropout"]) for a in archs])
        self.act_kinds = sorted(set(names))
        expected = {k for k, v in self.template.state_dict().items()
                    if not k.endswith("num_batches_tracked")}
        if set(params) | set(buffers) != expected:
            raise ValueError(f"stacked tensors {sorted(set(params) | set(buffers))} do not "
                             f"match the state_dict of the skeleton {sorted(expected)}")

    @classmethod
    def initialise(cls, archs: Sequence[dict[str, Any]], seeds: Sequence[int],
                   init_scales: Sequence[float], device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> StackedCNNs:
        """Torch's default initialisation (uniform :math:`\\pm 1/\\sqrt{\\text{fan\\_in}}` for
        convolution and linear weights and biases; BatchNorm weight 1, bias 0), drawn per
        network from ``torch.Generator().manual_seed(seed)`` and multiplied by its scale."""
        template = build_cnn({**_skeleton(archs[0]), "activation": "relu", "dropout": 0.0})
        per_net: dict[str, list[Tensor]] = {}
        for seed, scale in zip(seeds, init_scales):
            gen = torch.Generator().manual_seed(int(seed))
            for module_name, module in template.named_modules():
                prefix = f"{module_name}." if module_name else ""
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    fan_in = module.weight[0].numel()
                    bound = 1.0 / math.sqrt(fan_in)
                    for name in ("weight", "bias"):
                        shape = getattr(module, name).shape
                        value = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1)
                        per_net.setdefault(prefix + name, []).append(value * bound * scale)
                elif isinstance(module, nn.BatchNorm2d):
                    c = module.num_features
                    for name, value in (("weight", torch.ones(c)), ("bias", torch.zeros(c)),
                                        ("running_mean", torch.zeros(c)),
                                        ("running_var", torch.ones(c))):
                        per_net.setdefault(prefix + name, []).append(value.double())
        buffer_names = {k for k, _ in template.named_buffers()}
        params, buffers = {}, {}
        for name, values in per_net.items():
            stacked = torch.stack(values).to(device=device, dtype=dtype)
            if name in buffer_names:
                buffers[name] = stacked
            else:
                params[name] = stacked.requires_grad_(True)
        return cls(archs, params, buffers)

    def to(self, dtype: torch.dtype) -> StackedCNNs:
        """A detached copy in another dtype (for float64 evaluation)."""
        other = StackedCNNs(self.archs, {k: v.detach().to(dtype) for k, v in self.params.items()},
                            {k: v.detach().to(dtype) for k, v in self.buffers.items()})
        other.steps = self.steps
        return other

    def state_dict(self, index: int) -> dict[str, Tensor]:
        """Network ``index``'s ``state_dict`` (CPU copies, the keys of :func:`build_cnn`)."""
        out = {}
        for key in self.template.state_dict():
            if key.endswith("num_batches_tracked"):
                out[key] = torch.tensor(self.steps, dtype=torch.long)
            else:
                source = self.params.get(key, self.buffers.get(key))
                out[key] = source[index].detach().cpu().clone()
        return out

    def module(self, index: int, dtype: torch.dtype = torch.float32) -> nn.Sequential:
        """Network ``index`` as a plain module (:func:`build_cnn`, eval mode, on CPU)."""
        net = build_cnn(self.archs[index]).to(dtype)
        net.load_state_dict(self.state_dict(index))
        return net.eval()

    def finite(self) -> Tensor:
        """``[N]`` bool: every parameter and buffer of the network is finite."""
        tensors = (*self.params.values(), *self.buffers.values())
        ok = torch.ones(self.n, dtype=torch.bool, device=tensors[0].device)
        for tensor in tensors:
            ok &= tensor.detach().flatten(1).isfinite().all(1)
        return ok

    def __call__(self, x: Tensor, training: bool = False,
                 generator: torch.Generator | None = None) -> Tensor:
        c = self.archs[0]["in_channels"]
        if x.dim() != 4 or x.shape[1] not in (c, self.n * c):
            raise ValueError(f"StackedCNNs of {self.n} networks with {c} input channels needs "
                             f"input [B, {c}, H, W] (shared) or [B, {self.n * c}, H, W] (one "
                             f"per network), got {list(x.shape)}")
        # training: channels_last, where mkldnn's grouped convolutions of the wild family
        # ran mostly 1.2-1.4 times faster on an AVX2 CPU (the small family's as fast)
        fmt = torch.channels_last if training else self.eval_format(x)
        return self._forward(x, training, generator, fmt)

    def _forward(self, x: Tensor, training: bool, generator: torch.Generator | None,
                 memory_format: torch.memory_format) -> Tensor:
        walk = _Walk(self, training, generator)
        first = self.template[0]
        if x.shape[1] == self.archs[0]["in_channels"] and self.n > 1:
            if isinstance(first, nn.Conv2d):  # one input: a plain convolution of every filter
                h = walk.conv(first, "0.", x, groups=1).contiguous(memory_format=memory_format)
                return walk.run(self.template[1:], "", h).view(x.shape[0], self.n, -1)
            x = x.repeat(1, self.n, 1, 1)
        h = walk.run(self.template, "", x.contiguous(memory_format=memory_format))
        return h.view(x.shape[0], self.n, -1)

    def eval_format(self, x: Tensor) -> torch.memory_format:
        """The memory format of inference on inputs shaped like ``x``: ``eval_memory_format``
        when set, else the faster of ``channels_last`` and ``contiguous_format``, timed once
        per skeleton, width and input shape in this process (``channels_last`` off the CPU).
        mkldnn's fastest layout depends on the CPU and the layers (on one AVX2 CPU the small
        family's 3x3 grouped convolutions ran inference 1.1-1.4 times faster contiguous, the
        wild family's 1.3-1.8 times faster channels_last); both compute the same function."""
        if self.eval_memory_format is not None:
            return self.eval_memory_format
        if x.device.type != "cpu":
            return torch.channels_last
        key = (repr(self.template), self.n, tuple(x.shape[1:]), x.dtype)
        if key not in _EVAL_FORMATS:
            _EVAL_FORMATS[key] = self._fastest_format(x[:_TIMING_IMAGES])
        return _EVAL_FORMATS[key]

    @torch.no_grad()
    def _fastest_format(self, x: Tensor) -> torch.memory_format:
        best = {fmt: math.inf for fmt in _FORMATS}
        for _ in range(_TIMING_ROUNDS):  # alternated; the minimum of each
            for fmt in _FORMATS:
                start = time.perf_counter()
                self._forward(x, False, None, fmt)
                best[fmt] = min(best[fmt], time.perf_counter() - start)
        return min(_FORMATS, key=best.__getitem__)


class _Walk:
    """One stacked forward pass: mirrors the module tree of :func:`build_cnn`."""

    def __init__(self, stack: StackedCNNs, training: bool,
                 generator: torch.Generator | None) -> None:
        self.stack = stack
        self.training = training
        self.generator = generator

    def run(self, module: nn.Module, prefix: str, h: Tensor) -> Tensor:
        s = self.stack
        if isinstance(module, nn.Sequential):
            for name, child in module.named_children():
                h = self.run(child, f"{prefix}{name}.", h)
            return h
        if isinstance(module, ResidualBlock):
            body = self.run(module.body, prefix + "body.", h)
            return self._activation(body + self.run(module.shortcut, prefix + "shortcut.", h))
        if isinstance(module, nn.Conv2d):
            return self.conv(module, prefix, h, groups=s.n)
        if isinstance(module, nn.BatchNorm2d):
            return F.batch_norm(
                h, s.buffers[prefix + "running_mean"].view(-1),
                s.buffers[prefix + "running_var"].view(-1),
                s.params[prefix + "weight"].reshape(-1), s.params[prefix + "bias"].reshape(-1),
                self.training, module.momentum, module.eps)
        if isinstance(module, _ACTIVATION_TYPES):
            return self._activation(h)
        if isinstance(module, nn.AdaptiveAvgPool2d):
            return h.mean((2, 3), keepdim=True)
        if isinstance(module, nn.Flatten):
            return h.flatten(1)
        if isinstance(module, nn.Dropout):
            if not self.training or not bool((s.dropout > 0).any()):
                return h
            p = s.dropout.to(device=h.device, dtype=h.dtype)
            hv = h.view(h.shape[0], s.n, -1)
            keep = torch.rand(hv.shape, generator=self.generator, device=h.device,
                              dtype=h.dtype) >= p[None, :, None]
            return (hv * keep / (1 - p)[None, :, None]).view_as(h)
        if isinstance(module, nn.Linear):
            hv = h.view(h.shape[0], s.n, -1)
            out = torch.einsum("bnc,noc->bno", hv, s.params[prefix + "weight"])
            return (out + s.params[prefix + "bias"]).reshape(h.shape[0], -1)
        raise TypeError(f"StackedCNNs cannot run {type(module).__name__} (at {prefix!r})")

    def conv(self, module: nn.Conv2d, prefix: str, h: Tensor, groups: int) -> Tensor:
        """Every network's convolution: ``groups=N`` on stacked maps; ``groups=1`` on one
        input that every network reads (its filters stacked: the same sums)."""
        w, b = self.stack.params[prefix + "weight"], self.stack.params[prefix + "bias"]
        return F.conv2d(h, w.reshape(-1, *w.shape[2:]), b.reshape(-1), module.stride,
                        module.padding, groups=groups)

    def _activation(self, h: Tensor) -> Tensor:
        runs = self.stack.act_runs
        if len(runs) == 1:
            return runs[0][2](h)
        c = h.shape[1] // self.stack.n
        return torch.cat([act(h[:, start * c:stop * c]) for start, stop, act in runs], 1)


def _skeleton(arch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in arch.items() if k not in ("activation", "dropout")}


def _chunk_size(stack: StackedCNNs, image_shape: Sequence[int], budget: int = 1 << 22) -> int:
    """Images per evaluation chunk: the first feature map stays under ``budget`` elements
    (large feature maps cost more per image on CPU: allocation and cache misses)."""
    first = stack.archs[0]["layers"][0]
    size = (image_shape[-1] - 1) // first["stride"] + 1
    per_image = stack.n * max(first["out_channels"] * size * size,
                              image_shape[0] * image_shape[1] * image_shape[2])
    return max(1, budget // per_image)


def _gather(images: Tensor, index: Tensor) -> Tensor:
    """Per-network inputs: ``index [N, b]`` -> ``[b, N * C, H, W]``."""
    x = images[index]  # [N, b, C, H, W]
    return x.transpose(0, 1).reshape(index.shape[1], -1, *images.shape[2:])


@torch.no_grad()
def predict(stack: StackedCNNs, images: Tensor, index: Tensor | None) -> Tensor:
    """Predictions ``[N, M]`` of every network: on all ``images`` (``index`` None) or on
    ``images[index[n]]`` for network ``n``. Screened in the stack's dtype; where the top two
    logits lie within ``TIE_TOLERANCE * (1 + max |logit|)`` or a logit is not finite, the
    network's plain module (:func:`build_cnn`) recomputes the prediction in float64."""
    m = len(images) if index is None else index.shape[1]
    chunk = _chunk_size(stack, images.shape[1:])
    out = torch.empty(stack.n, m, dtype=torch.long, device=images.device)
    recheck = stack.params[next(iter(stack.params))].dtype != torch.float64
    near_pairs: list[Tensor] = []
    for start in range(0, m, chunk):
        stop = min(m, start + chunk)
        if index is None:
            logits = stack(images[start:stop])
        else:
            logits = stack(_gather(images, index[:, start:stop]))
        out[:, start:stop] = predictions(logits).T
        if recheck:
            pairs = near_ties(logits).T.nonzero()  # of [b, N]
            pairs[:, 1] += start
            near_pairs.append(pairs)
    if near_pairs:
        pairs = torch.cat(near_pairs)
        for n in pairs[:, 0].unique().tolist():
            positions = pairs[pairs[:, 0] == n, 1]
            image_index = positions if index is None else index[n, positions]
            model = stack.module(n, torch.float64).to(images.device)
            out[n, positions] = predictions(model(images[image_index].double()))
    return out


