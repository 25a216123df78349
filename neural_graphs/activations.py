"""The activations a neural graph knows: names, ids, modules, functions and methods.

One table for every reader of activations: ``to_neural_graph`` (which module, function or
tensor method is which activation), ``run_neural_graph`` and the encoders' probe features
(apply an activation by name), the encoders' activation embeddings (one id per name) and
the CNN zoo (a module factory per name).

``ACTIVATIONS`` is the id order of ``node_activation`` in graphs: new names are only ever
appended, so ids stored in graphs and caches keep their meaning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "ACTIVATION_FACTORIES",
    "ACTIVATION_FUNCTIONS",
    "ACTIVATION_METHODS",
    "ACTIVATION_MODULES",
    "Sine",
    "activate",
    "activation_id",
    "function_activation",
    "module_activation",
]


class Sine(nn.Module):
    r"""The SIREN activation :math:`\sin(\omega_0 x)`.

    Args:
        omega_0 (float): frequency factor (default 30, as in the SIREN paper).
    """

    def __init__(self, omega_0: float = 30.0) -> None:
        super().__init__()
        self.omega_0 = float(omega_0)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.omega_0 * x)

    def extra_repr(self) -> str:
        return f"omega_0={self.omega_0}"


#: Activation names in id order (``node_activation`` of a graph indexes this tuple).
ACTIVATIONS = ("identity", "relu", "leaky_relu", "gelu", "silu", "tanh", "sigmoid", "sine")

#: Name -> ``nn.Module`` factory (called with no argument: the module's defaults).
ACTIVATION_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "identity": nn.Identity, "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU,
    "silu": nn.SiLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "sine": Sine,
}

#: Module type -> name.
ACTIVATION_MODULES: dict[type[nn.Module], str] = {
    factory: name for name, factory in ACTIVATION_FACTORIES.items()}

#: Function -> name (``torch.*`` and ``torch.nn.functional.*`` forms, in-place ones too).
ACTIVATION_FUNCTIONS: dict[Callable, str] = {
    torch.relu: "relu", torch.relu_: "relu", F.relu: "relu", F.relu_: "relu",
    F.leaky_relu: "leaky_relu", F.leaky_relu_: "leaky_relu", F.gelu: "gelu",
    F.silu: "silu", torch.tanh: "tanh", torch.tanh_: "tanh", F.tanh: "tanh",
    torch.sigmoid: "sigmoid", torch.sigmoid_: "sigmoid", F.sigmoid: "sigmoid",
}

#: Tensor method -> name (``x.relu()``, ``x.relu_()``, ...).
ACTIVATION_METHODS: dict[str, str] = {
    "relu": "relu", "relu_": "relu", "tanh": "tanh", "tanh_": "tanh",
    "sigmoid": "sigmoid", "sigmoid_": "sigmoid",
}

# The parameter each parametrised activation carries, and its default.
_PARAMETER = {"leaky_relu": ("negative_slope", 0.01), "sine": ("omega_0", 30.0)}


def activation_id(name: str) -> int:
    """The id of activation ``name`` in :data:`ACTIVATIONS` (``ValueError`` if unknown)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {ACTIVATIONS}")
    return ACTIVATIONS.index(name)


def module_activation(m: nn.Module) -> tuple[str, float | None] | None:
    """``(name, parameter)`` of an activation module (``None`` for other modules). The
    parameter is LeakyReLU's slope or the sine's :math:`\\omega_0`, else ``None``.

    Raises ``TypeError`` for a variant the graph cannot hold (``GELU(approximate='tanh')``).
    """
    name = ACTIVATION_MODULES.get(type(m))
    if name is None:
        return None
    if name == "gelu" and m.approximate != "none":
        raise TypeError("GELU(approximate='tanh') is not supported (only the exact GELU)")
    parameter = _PARAMETER.get(name)
    return name, None if parameter is None else float(getattr(m, parameter[0]))


def function_activation(target: Callable, args: tuple, kwargs: dict[str, Any]
                        ) -> tuple[str, float | None] | None:
    """``(name, parameter)`` of an activation function call (``None`` for other
    functions); ``args`` are the call's arguments after the input."""
    name = ACTIVATION_FUNCTIONS.get(target)
    if name is None:
        return None
    if name == "gelu" and kwargs.get("approximate", args[0] if args else "none") != "none":
        raise TypeError("F.gelu(approximate='tanh') is not supported (only the exact GELU)")
    if name == "leaky_relu":
        return name, float(kwargs.get("negative_slope", args[0] if args else 0.01))
    return name, None


def activate(z: Tensor, name: str, param: float | None = None) -> Tensor:
    """Apply activation ``name`` (with its parameter: LeakyReLU slope, sine
    :math:`\\omega_0`; ``None`` takes the module's default) to ``z``."""
    if name == "identity":
        return z
    if name in _PARAMETER and param is None:
        param = _PARAMETER[name][1]
    if name == "leaky_relu":
        return F.leaky_relu(z, param)
    if name == "sine":
        return torch.sin(param * z)
    function = _FUNCTIONS.get(name)
    if function is None:
        raise ValueError(f"unknown activation {name!r}; known: {ACTIVATIONS}")
    return function(z)


_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}
