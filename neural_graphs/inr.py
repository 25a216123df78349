"""Implicit neural representations: the SIREN of the MNIST INR experiments.

``SIREN()`` is the network of the field's MNIST INR set (../shared/SPEC.md 4.1): two sine
layers ``sin(omega_0 (W x + b))`` and a plain linear output, plus a constant 0.5 so a
zero output is mid-grey. It is built from ``nn.Linear`` and :class:`Sine` only, so
``to_neural_graph`` reads it like any other network.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from neural_graphs.activations import Sine

__all__ = [
    "SIREN",
    "Sine",
    "batched_siren_forward",
    "make_coordinates",
    "render",
    "siren_from_params",
    "siren_layer_keys",
    "stack_siren_params",
]


class SIREN(nn.Module):
    r"""A SIREN :math:`f(c) = W_L \phi_{L-1}(\dots \phi_1(c)) + b_L + \text{out\_offset}`
    with :math:`\phi_l(h) = \sin(\omega_0 (W_l h + b_l))`.

    The initialisation is the reference one of the MNIST INR set: every sine layer's
    weights uniform in :math:`\pm\sqrt{6/\text{fan\_in}}/\omega_0` (the first layer too),
    zero sine biases, torch's default for the output layer. ``first_layer_init="siren"``
    uses the SIREN paper's first layer instead, uniform in :math:`\pm 1/\text{fan\_in}`.

    Args:
        in_features (int): coordinate dimensions (default 2).
        hidden_features (int): width of every sine layer (default 32).
        hidden_layers (int): number of sine layers (default 2).
        out_features (int): output channels (default 1, grey).
        omega_0 (float): sine frequency (default 30).
        out_offset (float): constant added to the output (default 0.5).
        first_layer_init (str): ``"reference"`` (default) or ``"siren"``.

    Shapes:
        - input: coordinates :math:`(*, \text{in\_features})`
        - output: :math:`(*, \text{out\_features})`
    """

    def __init__(self, in_features: int = 2, hidden_features: int = 32,
                 hidden_layers: int = 2, out_features: int = 1, omega_0: float = 30.0,
                 out_offset: float = 0.5, first_layer_init: str = "reference") -> None:
        super().__init__()
        if first_layer_init not in ("reference", "siren"):
            raise ValueError(f"first_layer_init must be 'reference' or 'siren', "
                             f"got {first_layer_init!r}")
        if hidden_layers < 1:
            raise ValueError(f"hidden_layers must be at least 1, got {hidden_layers}")
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(hidden_layers):
            layers += [nn.Linear(width, hidden_features), Sine(omega_0)]
            width = hidden_features
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)
        self.omega_0 = float(omega_0)
        self.out_offset = float(out_offset)
        self.first_layer_init = first_layer_init
        self.reset_parameters()

    def reset_parameters(self) -> None:
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        for index, layer in enumerate(linears[:-1]):
            bound = math.sqrt(6.0 / layer.in_features) / self.omega_0
            if index == 0 and self.first_layer_init == "siren":
                bound = 1.0 / layer.in_features
            nn.init.uniform_(layer.weight, -bound, bound)
            nn.init.zeros_(layer.bias)
        linears[-1].reset_parameters()

    def forward(self, coords: Tensor) -> Tensor:
        return self.net(coords) + self.out_offset


# --------------------------------------------------------------------------- stacked SIRENs
#
# Many SIRENs of one architecture are held as one dict of stacked tensors in the SIREN
# state_dict key names with a leading INR dimension, e.g. {"net.0.weight": [n, 32, 2],
# "net.0.bias": [n, 32], ..., "net.4.bias": [n, 1]}, and evaluated together.


def make_coordinates(height: int = 28, width: int = 28, *, dtype: torch.dtype | None = None,
                     device: torch.device | str | None = None) -> Tensor:
    r"""The pixel-centre coordinates of an image grid in :math:`[-1, 1]^2`, row-major.

    Row ``r``, column ``c`` of the image is point ``r * width + c`` with coordinates
    :math:`(x, y) = (\text{lin}_W[c], \text{lin}_H[r])`, where
    :math:`\text{lin}_K = \text{linspace}(-1, 1, K)`: the first coordinate runs along the
    columns, the second along the rows. This is ``make_coordinates`` of the neural-graphs
    reference (``np.meshgrid`` with its default ``"xy"`` indexing), the grid on which it
    renders the MNIST INR set.

    Shapes:
        - output: :math:`(H W, 2)`
    """
    if height < 1 or width < 1:
        raise ValueError(f"the grid needs a positive size, got {height}x{width}")
    ys = torch.linspace(-1.0, 1.0, height, dtype=dtype, device=device)
    xs = torch.linspace(-1.0, 1.0, width, dtype=dtype, device=device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1)


def siren_layer_keys(params: dict[str, Tensor]) -> list[tuple[str, str]]:
    """The ``(weight key, bias key)`` of each linear layer of stacked SIREN parameters, in
    order (``net.0``, ``net.2``, ...), after checking that the shapes chain."""
    layers, index = [], 0
    while f"net.{index}.weight" in params:
        layers.append((f"net.{index}.weight", f"net.{index}.bias"))
        index += 2
    expected = {key for pair in layers for key in pair}
    if len(layers) < 2 or set(params) != expected:
        raise ValueError(f"stacked SIREN parameters need keys net.0.weight, net.0.bias, "
                         f"net.2.weight, ... (at least two layers), got {sorted(params)}")
    count = params["net.0.weight"].shape[0]
    width = params["net.0.weight"].shape[-1]
    for weight_key, bias_key in layers:
        weight, bias = params[weight_key], params[bias_key]
        if (weight.dim() != 3 or bias.dim() != 2 or weight.shape[0] != count
                or bias.shape != (count, weight.shape[1]) or weight.shape[2] != width):
            raise ValueError(f"{weight_key} {tuple(weight.shape)} / {bias_key} "
                             f"{tuple(bias.shape)}: expected [{count}, out, {width}] and "
                             f"[{count}, out]")
        width = weight.shape[1]
    return layers


def stack_siren_params(sirens: list[SIREN]) -> dict[str, Tensor]:
    """The parameters of ``sirens`` (one architecture) stacked along a new leading dim."""
    if not sirens:
        raise ValueError("stack_siren_params needs at least one SIREN")
    states = [net.state_dict() for net in sirens]
    return {key: torch.stack([state[key].detach() for state in states]) for key in states[0]}


def siren_from_params(params: dict[str, Tensor], index: int, omega_0: float = 30.0,
                      out_offset: float = 0.5) -> SIREN:
    """A :class:`SIREN` holding INR ``index`` of the stacked ``params`` (same dtype and
    device as ``params``)."""
    layers = siren_layer_keys(params)
    count = params["net.0.weight"].shape[0]
    if not -count <= index < count:
        raise IndexError(f"INR index {index} out of range for {count} stacked INRs")
    first = params[layers[0][0]]
    net = SIREN(in_features=first.shape[2], hidden_features=first.shape[1],
                hidden_layers=len(layers) - 1, out_features=params[layers[-1][0]].shape[1],
                omega_0=omega_0, out_offset=out_offset)
    net.to(dtype=first.dtype, device=first.device)
    net.load_state_dict({key: value[index] for key, value in params.items()})
    return net


def batched_siren_forward(params: dict[str, Tensor], coords: Tensor, omega_0: float = 30.0,
                          out_offset: float = 0.5) -> Tensor:
    r"""Evaluate ``n`` stacked SIRENs on shared coordinates, one batched matrix product per
    layer: :math:`h_{l+1} = \sin(\omega_0 (W_l h_l + b_l))` per INR (``torch.baddbmm``),
    output :math:`W_L h_L + b_L + \text{out\_offset}`. Equals ``SIREN(...)(coords)`` of each
    INR (:func:`siren_from_params`).

    Args:
        params (dict): stacked SIREN parameters ``{"net.0.weight": [n, out, in], ...}``.
        coords (Tensor): coordinates shared by every INR.
        omega_0 (float): sine frequency (default 30).
        out_offset (float): constant added to the output (default 0.5).

    Shapes:
        - coords: :math:`(P, \text{in})`
        - output: :math:`(n, P, \text{out})`
    """
    layers = siren_layer_keys(params)
    weight = params[layers[0][0]]
    if coords.dim() != 2 or coords.shape[1] != weight.shape[2]:
        raise ValueError(f"coords must be [points, {weight.shape[2]}], got "
                         f"{tuple(coords.shape)}")
    count = weight.shape[0]
    hidden = coords.t().unsqueeze(0).expand(count, -1, -1)  # [n, in, P]
    for weight_key, bias_key in layers[:-1]:
        hidden = torch.sin(torch.baddbmm(params[bias_key].unsqueeze(-1), params[weight_key],
                                         hidden, beta=omega_0, alpha=omega_0))
    weight_key, bias_key = layers[-1]
    out = torch.baddbmm(params[bias_key].unsqueeze(-1), params[weight_key], hidden)
    return (out + out_offset).transpose(1, 2)


def render(params: dict[str, Tensor], size: tuple[int, int] = (28, 28),
           coords: Tensor | None = None, omega_0: float = 30.0,
           out_offset: float = 0.5) -> Tensor:
    r"""Images of ``n`` stacked SIRENs on the grid of :func:`make_coordinates` (or on
    ``coords``, whose points must then number ``size[0] * size[1]``, row-major). Values are
    not clipped. SIRENs with one output draw ``[n, H, W]``; with ``C`` outputs (colour
    INRs) ``[n, H, W, C]``, channels last.

    Shapes:
        - output: :math:`(n, H, W)` for one output channel, else :math:`(n, H, W, C)`
    """
    height, width = size
    if coords is None:
        first = params["net.0.weight"]
        coords = make_coordinates(height, width, dtype=first.dtype, device=first.device)
    if coords.shape[0] != height * width:
        raise ValueError(f"{coords.shape[0]} coordinates cannot fill a {height}x{width} image")
    out = batched_siren_forward(params, coords, omega_0, out_offset)
    if out.shape[-1] == 1:
        return out[..., 0].reshape(-1, height, width)
    return out.reshape(-1, height, width, out.shape[-1])
