"""Adaptive pooling as message passing: output position i aggregates the input positions
of its window [floor(i L / O), ceil((i + 1) L / O)), windows varying in size; max or mean
over the window's edges, as in :mod:`modules.pooling` (whose base classes these twins
share, with the same torch-compatible checks when called).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from modules.pooling import (
    _AvgPoolAsGNN,
    _check_dims_1d,
    _MaxPoolAsGNN,
    _PoolAsGNN,
    _require_dtype,
    _scalar_name,
)
from modules.window_graph import WindowGraph, adaptive_axis, combine_axes


class _AdaptivePoolAsGNN(_PoolAsGNN):
    """Adaptive windows: output position i covers [floor(i L / O), ceil((i + 1) L / O))."""

    output_size: Any

    def _requested(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The output size, ``None`` entries replaced by the input's, as torch does."""
        size = self.output_size
        size = (size,) * self.n if isinstance(size, int) or size is None else tuple(size)
        if len(size) != self.n:
            raise ValueError(f"{type(self).__name__}: output_size must have {self.n} "
                             f"elements, got {self.output_size}")
        return tuple(s if o is None else int(o) for s, o in zip(shape[-self.n:], size))

    def _build(self, spatial: tuple[int, ...], out: tuple[int, ...],
               device: torch.device) -> WindowGraph:
        return combine_axes([adaptive_axis(s, o, device) for s, o in zip(spatial, out)],
                            spatial)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveAvgPool1dAsGNN(_AdaptivePoolAsGNN, _AvgPoolAsGNN):
    r"""Twin of :class:`torch.nn.AdaptiveAvgPool1d`, message passing over the positions.

    Nodes are the positions of the sequence, each carrying its :math:`C` channels. Output
    position :math:`i` of :math:`O` (target node) receives an edge from every input
    position of its window
    :math:`W_i = [\lfloor iL/O \rfloor, \lceil (i+1)L/O \rceil)`; windows vary in size.
    The message is the source's features unchanged, the aggregation a mean:

    .. math::
        \mathbf{y}_i = \frac{1}{|W_i|} \sum_{j \in W_i} \mathbf{x}_j

    Args:
        output_size (int): Output length :math:`O`.

    Shapes:
        - **input:** :math:`(N, C, L)` or :math:`(C, L)`
        - **output:** :math:`(N, C, O)` or :math:`(C, O)`
    """

    n = 1
    native_type = nn.AdaptiveAvgPool1d

    def __init__(self, output_size: int | tuple[int]) -> None:
        super().__init__()
        self.output_size = output_size

    @staticmethod
    def native_kwargs(module: nn.Module) -> dict[str, Any]:
        return {"output_size": module.output_size}

    def _check(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[int, ...]:
        if self.n == 1:  # torch runs adaptive_avg_pool2d over a height of 1
            _check_dims_1d("adaptive_avg_pool1d", shape)
            view, out = (*shape[:-1], 1, shape[-1]), (1, *self._requested(shape))
        else:
            view, out = shape, self._requested(shape)
        if any(o < 0 for o in out):
            raise RuntimeError("adaptive_avg_pool2d: elements of output_size must be greater "
                               f"than or equal to 0 but received {{{out[0]}, {out[1]}}}")
        global_mean = out == (1, 1)  # torch takes the mean over the spatial axes
        if global_mean and not (dtype.is_floating_point or dtype.is_complex):
            raise RuntimeError("mean(): could not infer output dtype. Input dtype must be "
                               "either a floating point or complex dtype. Got: "
                               f"{_scalar_name(dtype)}")
        if len(view) not in (3, 4):
            raise RuntimeError(f"adaptive_avg_pool2d(): Expected 3D or 4D tensor, but got "
                               f"{list(view)}")
        for axis in (len(view) - 2, len(view) - 1):
            if view[axis] <= 0:
                raise RuntimeError("adaptive_avg_pool2d(): Expected input to have non-zero "
                                   "size for non-batch dimensions, but input has sizes "
                                   f"{list(view)} with dimension {axis} being empty")
        if not global_mean and math.prod(view[:-2]) * math.prod(out):  # dispatch on dtype
            _require_dtype("adaptive_avg_pool2d", dtype, "none")
        return out[-self.n:]

    def _divisor(self, graph: WindowGraph, device: torch.device) -> Tensor:
        return self.cached(("divisor", graph.input_size, device), lambda: graph.window_size.to(
            device=device, dtype=torch.float64)[:, None])


class AdaptiveAvgPool2dAsGNN(AdaptiveAvgPool1dAsGNN):
    r"""Twin of :class:`torch.nn.AdaptiveAvgPool2d`, message passing over the pixels
    (global average pooling at output size 1).

    Nodes are the pixels, each carrying its :math:`C` channels. Output pixel
    :math:`(i, i')` (target node) receives an edge from every input pixel of its window,
    the product of the per-axis windows
    :math:`[\lfloor iH/O_H \rfloor, \lceil (i+1)H/O_H \rceil)` (same for the width). The
    message is the source's features unchanged, the aggregation a mean:

    .. math::
        \mathbf{y}_i = \frac{1}{|W_i|} \sum_{j \in W_i} \mathbf{x}_j

    Args:
        output_size (int or tuple): Output size :math:`(O_H, O_W)`; ``None`` keeps the
            input's size on that axis.

    Shapes:
        - **input:** :math:`(N, C, H, W)` or :math:`(C, H, W)`
        - **output:** :math:`(N, C, O_H, O_W)` or :math:`(C, O_H, O_W)`
    """

    n = 2
    native_type = nn.AdaptiveAvgPool2d

    def __init__(self, output_size: int | None | tuple[int | None, int | None]) -> None:
        super().__init__(output_size)


class AdaptiveMaxPool2dAsGNN(_AdaptivePoolAsGNN, _MaxPoolAsGNN):
    r"""Twin of :class:`torch.nn.AdaptiveMaxPool2d`, message passing over the pixels.

    Nodes are the pixels, each carrying its :math:`C` channels. Output pixel
    :math:`(i, i')` (target node) receives an edge from every input pixel of its window,
    the product of the per-axis windows
    :math:`[\lfloor iH/O_H \rfloor, \lceil (i+1)H/O_H \rceil)` (same for the width). The
    message is the source's features unchanged, the aggregation a channel-wise max:

    .. math::
        \mathbf{y}_i = \max_{j \in W_i} \mathbf{x}_j

    Args:
        output_size (int or tuple): Output size :math:`(O_H, O_W)`; ``None`` keeps the
            input's size on that axis.
        return_indices (bool, optional): Also return the flat input index of each
            maximum. (default: ``False``)

    Shapes:
        - **input:** :math:`(N, C, H, W)` or :math:`(C, H, W)`
        - **output:** :math:`(N, C, O_H, O_W)` or :math:`(C, O_H, O_W)` (and the indices,
          same shape, with ``return_indices``)
    """

    n = 2
    native_type = nn.AdaptiveMaxPool2d

    def __init__(self, output_size: int | None | tuple[int | None, int | None],
                 return_indices: bool = False) -> None:
        super().__init__()
        self.output_size = output_size
        self.return_indices = return_indices

    @staticmethod
    def native_kwargs(module: nn.Module) -> dict[str, Any]:
        return {"output_size": module.output_size, "return_indices": module.return_indices}

    def _check(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[int, ...]:
        if len(shape) not in (3, 4):
            raise RuntimeError(f"adaptive_max_pool2d(): Expected 3D or 4D tensor, but got: "
                               f"{list(shape)}")
        for axis in range(1, len(shape)):
            if shape[axis] <= 0:
                raise RuntimeError("adaptive_max_pool2d(): Expected input to have non-zero "
                                   "size for non-batch dimensions, but input has sizes "
                                   f"{list(shape)} with dimension {axis} being empty")
        out = self._requested(shape)
        negative = [o for o in out if o < 0]
        if negative:
            raise RuntimeError(f"Trying to create tensor with negative dimension "
                               f"{negative[0]}: {[*shape[:-2], *out]}")
        _require_dtype("adaptive_max_pool2d", dtype, "none")
        return out
