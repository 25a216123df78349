"""Swap a network's layers for their message-passing twins, and back.

``to_gnn`` replaces every information-mixing layer (Linear, Conv1d/2d, pooling,
MultiheadAttention, Transformer encoder/decoder modules) by its twin carrying the same
weights, and leaves node-wise modules (activations, normalization, dropout, reshapes)
as they are; state_dict keys are unchanged. ``to_native`` goes back.

The native -> twin table is the registry the twin classes fill themselves (their
``native_type``); importing the component files here completes it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from types import MappingProxyType

from torch import nn

import modules.adaptive_pooling
import modules.attention
import modules.conv
import modules.linear
import modules.pooling
import modules.transformer  # noqa: F401  (the component files register their twins)
from modules.base import NODE_WISE, TWIN_REGISTRY, swap_to_native, swap_to_twins

#: native type -> twin type (read-only view of the registry). Exact types: a subclass of
#: a native layer may change its forward, so it is not swapped silently (it is reported
#: as unsupported instead).
TWINS: Mapping[type[nn.Module], type[nn.Module]] = MappingProxyType(TWIN_REGISTRY)

__all__ = ["NODE_WISE", "TWINS", "to_gnn", "to_native"]


def to_gnn(model: nn.Module, copy_model: bool = True) -> nn.Module:
    """The message-passing twin of ``model`` (a deep copy unless ``copy_model=False``).

    Raises ``TypeError`` naming the layer and its path when an information-mixing layer
    has no twin.
    """
    return swap_to_twins(copy.deepcopy(model) if copy_model else model)


def to_native(model: nn.Module, copy_model: bool = True) -> nn.Module:
    """The torch.nn network of a twin: every twin layer back to its native type."""
    return swap_to_native(copy.deepcopy(model) if copy_model else model)
