"""The state ``to_neural_graph`` keeps while it reads a traced network (internal).

A :class:`_Value` stands for a traced tensor: the states of one layer's neurons with the
pooling / flatten steps still pending on them; a :class:`_Layer` collects the incoming
edge groups (:class:`_Group`) of one layer of neurons. ``neural_graphs.tracing`` builds
them, ``neural_graphs.graph`` turns them into the graph's tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

__all__: list[str] = []


@dataclass
class _Group:
    """Incoming edges of one layer from one source layer."""

    source: int
    kind: str  # linear | conv | flatten | residual | layernorm
    pre: tuple = ()  # steps applied to the source neurons' states before the weights
    module: nn.Module | None = None
    path: str = ""
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Layer:
    index: int
    kind: str
    size: int
    path: str = ""
    module: nn.Module | None = None
    spatial_dims: int | None = None  # 0 vectors, 1 sequences, 2 images; None unknown
    groups: list[_Group] = field(default_factory=list)
    activation: str = "identity"
    activation_param: float | None = None
    batchnorm: nn.Module | None = None
    batchnorm_path: str = ""
    offset: float = 0.0
    open: bool = True  # still accepts BatchNorm, residual additions, an activation
    flatten_input: bool = False
    weight_rows: tuple[int, int] | None = None  # rows of a shared parameter (in_proj)
    tokens: dict[str, Any] = field(default_factory=dict)  # class token, position embedding
    num_heads: int = 0


@dataclass
class _Rows:
    """Rows of a module's weight and bias, seen as a Linear layer (q/k/v of in_proj)."""

    weight: Tensor
    bias: Tensor | None
    rows: tuple[int, int]


@dataclass(frozen=True)
class _Value:
    """A traced tensor: the states of a layer's neurons, with pending pooling/flatten."""

    layer: int
    pre: tuple = ()
    tokens: bool = False  # token-major (B, T, neurons) in the traced network


@dataclass(frozen=True)
class _Attr:
    """A module attribute read in forward (a parameter, or the module itself)."""

    target: str


def _model_tensor(model: nn.Module, target: str) -> Tensor:
    """The parameter or buffer ``target`` of ``model``: a learned class token or position
    embedding is a parameter, a fixed one (SimpleViT's sin-cos embedding) a buffer."""
    try:
        return model.get_parameter(target)
    except AttributeError:
        pass
    try:
        return model.get_buffer(target)
    except AttributeError as err:
        raise TypeError(f"to_neural_graph: '{target}' must be a parameter or a registered "
                        "buffer of the model (a plain tensor attribute is not read)") from err


def _dims(layer: _Layer, pre: tuple) -> int:
    """Spatial (or token) axes left after the pending steps ``pre``."""
    dims = layer.spatial_dims or 0
    for step in pre:
        if step[0] in ("flatten", "select_token"):
            dims = 0
        elif step[0] == "flatten_spatial":
            dims = min(dims, 1)
    return dims


def _map_shape(area: int, spatial_dims: int | None, path: str) -> tuple[int, ...]:
    if spatial_dims == 1:
        return (area,)
    side = math.isqrt(area)
    if side * side != area:
        raise TypeError(f"to_neural_graph: '{path}' reads a flattened map of {area} "
                        "positions per channel; only square maps are supported")
    return (side, side)

