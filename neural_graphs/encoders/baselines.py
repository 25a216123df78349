"""Baselines of the weight-space literature, reading the same neural graphs: a flat MLP on
all weights, StatNN on per-layer statistics, and NFN's NP / HNP layers through the
authors' ``nfn`` package."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.utils import scatter

from neural_graphs.encoders.batch import (
    as_batch,
    check_one_architecture,
    edge_ptr,
    graph_ids,
    node_ptr,
    require_fields,
)
from neural_graphs.encoders.readouts import head_mlp

__all__ = ["NFN", "FlatMLP", "LayerStatistics", "StatNN", "STATISTICS", "STATNN_SCALES",
           "segment_statistics", "signed_log", "sorted_within_segments"]

QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
STATISTICS = ("mean", "var", *(f"q{q:g}" for q in QUANTILES))
#: How StatNN scales the statistics before its MLP: ``"signed_log"``
#: (:func:`signed_log`) or ``"raw"`` (as computed, the reference ``StatNet``'s input).
STATNN_SCALES = ("signed_log", "raw")


class FlatMLP(nn.Module):
    r"""An MLP on all of a network's parameters flattened into one vector: the weights
    (``edge_attr`` entries under ``edge_mask``, edges ordered by (target, source) neuron)
    then the node features ``x`` in node order. Reads one architecture only (``ValueError``
    naming the first difference otherwise) and is not permutation invariant.

    Args:
        out_dim (int): output size.
        hidden (int): width of the hidden layers.
        num_layers (int): hidden layers.

    Shapes:
        - input: a :class:`~torch_geometric.data.Batch` of graphs of one architecture
        - output: :math:`(G, \text{out\_dim})`
    """

    def __init__(self, out_dim: int, hidden: int = 256, num_layers: int = 2) -> None:
        super().__init__()
        self.mlp = head_mlp(hidden, out_dim, num_layers)

    @staticmethod
    def flatten(batch: Batch) -> Tensor:
        """The parameter vector of each graph: ``[G, P]``."""
        check_one_architecture(batch, "FlatMLP")
        graphs = batch.num_graphs
        src, dst = batch.edge_index
        order = torch.argsort(dst * batch.num_nodes + src)  # graphs stay contiguous
        attr, mask = batch.edge_attr[order], batch.edge_mask[order]
        per_graph = batch.edge_index.shape[1] // graphs
        weights = attr.reshape(graphs, per_graph, -1)[:, mask[:per_graph]]
        return torch.cat([weights, batch.x.reshape(graphs, -1)], dim=1)

    def forward(self, graphs: Batch | Data) -> Tensor:
        batch = as_batch(graphs)
        require_fields(batch, ("x", "edge_index", "edge_attr", "edge_mask"), "FlatMLP")
        return self.mlp(self.flatten(batch))


def segment_mean_var(values: Tensor, segment: Tensor,
                     num_segments: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(count, mean, var)`` of each segment of ``values``: the number of values, their
    mean and unbiased variance (0 for a single value; empty segments get zeros).

    Shapes:
        - values, segment: :math:`(M,)`
        - output: three :math:`(S,)` tensors
    """
    count = torch.bincount(segment, minlength=num_segments)
    mean = scatter(values, segment, 0, num_segments, "mean")
    centred = values - mean[segment]
    var = scatter(centred * centred, segment, 0, num_segments, "sum") / (count - 1).clamp(
        min=1).to(values.dtype)
    return count, mean, var


def _float32_order_key(values: Tensor) -> Tensor:
    """Integers in ``[0, 2^32)`` ordered as the float32 ``values`` (-0 just below +0): the
    bits of a positive float plus 2^31, the complemented bits of a negative one."""
    bits = values.view(torch.int32).to(torch.int64)
    return torch.where(bits < 0, ~bits, bits + 2 ** 31)


def _float32_from_order_key(key: Tensor) -> Tensor:
    bits = torch.where(key >= 2 ** 31, key - 2 ** 31, ~key)
    return bits.to(torch.int32).view(torch.float32)


def sorted_within_segments(values: Tensor, segment: Tensor) -> Tensor:
    """``values`` ordered by segment, ascending within each segment.

    float32 values take one sort of a 64-bit key (segment in the high 32 bits, the value's
    order-preserving bits in the low 32), about half the time of the general path's two
    stable sorts, with the same result (NaN aside); other dtypes take the general path.
    """
    if values.dtype == torch.float32 and values.numel() and int(segment.max()) < 2 ** 31:
        key = segment.to(torch.int64) * 2 ** 32 + _float32_order_key(values)
        return _float32_from_order_key(torch.sort(key).values % 2 ** 32)
    order = torch.argsort(values, stable=True)
    return values[order[torch.argsort(segment[order], stable=True)]]


def segment_statistics(values: Tensor, segment: Tensor, num_segments: int) -> Tensor:
    r"""Mean, unbiased variance (0 for a single value) and the 0, .25, .5, .75, 1
    quantiles (linear interpolation, as :func:`torch.quantile`) of each segment of
    ``values``, vectorised. Empty segments get zeros.

    Shapes:
        - values, segment: :math:`(M,)`
        - output: :math:`(S, 7)`
    """
    count, mean, var = segment_mean_var(values, segment, num_segments)
    sorted_values = sorted_within_segments(values, segment)
    start = torch.cat([count.new_zeros(1), count.cumsum(0)[:-1]])
    q = torch.tensor(QUANTILES, dtype=values.dtype, device=values.device)
    position = q[None, :] * (count - 1).clamp(min=0).to(values.dtype)[:, None]
    low = position.floor().long()
    high = position.ceil().long()
    frac = position - low.to(values.dtype)
    last = max(values.numel() - 1, 0)
    at_low = sorted_values[(start[:, None] + low).clamp(max=last)] if values.numel() else \
        values.new_zeros(low.shape)
    at_high = sorted_values[(start[:, None] + high).clamp(max=last)] if values.numel() else \
        values.new_zeros(high.shape)
    quantiles = at_low + frac * (at_high - at_low)
    stats = torch.cat([mean[:, None], var[:, None], quantiles], dim=1)
    return stats * (count > 0).unsqueeze(-1).to(values.dtype)


def signed_log(values: Tensor) -> Tensor:
    r""":math:`\operatorname{sign}(s)\,\log(1 + |s|)`, elementwise: close to :math:`s` for
    small values, logarithmic for large ones, odd and strictly increasing."""
    return torch.sign(values) * torch.log1p(values.abs())


class LayerStatistics(nn.Module):
    r"""StatNN's input: per layer, statistics (:data:`STATISTICS`: mean, variance,
    quantiles) of the layer's weights (every ``edge_attr`` entry under ``edge_mask`` of the
    edges into the layer, ``edge_layer``) and of each node-feature column of its neurons
    (the bias; BatchNorm columns with ``batchnorm="nodes"``), scaled:

    .. math::
        \phi(s) = \operatorname{sign}(s)\log(1 + |s|) \text{ or } s

    The signed log (the default) keeps the small statistics of most networks nearly as
    they are and brings huge ones into range: a network whose BatchNorm lets its weights
    grow without changing its function can hold weights of :math:`10^6` and variances of
    :math:`10^{11}`, and on such a zoo the raw statistics drive a loss to
    :math:`10^5`-:math:`10^6`. ``feature_scale="raw"`` gives them as computed, the
    reference ``StatNet``'s input (neural-graphs ``nn/dynamic_stat_net.py``).

    Networks of different depths batch together: layer ``l`` fills slot ``l`` and slots
    past a network's last layer hold zeros, up to ``max_layers`` (``ValueError`` beyond).
    Invariant to every permutation of neurons inside a layer. No parameters.

    The statistics cost far more than a small MLP and never change for a fixed graph: a job
    that reads the same graphs every epoch stores them once with :meth:`attach_features`
    (as ``graph.statnn_features``), and :meth:`features` reads them from there.

    Args:
        max_layers (int): layer slots (network layers, input layer included).
        feature_scale (str): ``"signed_log"`` or ``"raw"`` (:data:`STATNN_SCALES`).

    Shapes:
        - input: a :class:`~torch_geometric.data.Batch` of graphs with ``C`` node-feature
          columns
        - output: :math:`(G, \text{max\_layers} \cdot (1 + C) \cdot 7)`
    """

    def __init__(self, max_layers: int = 32, feature_scale: str = "signed_log") -> None:
        super().__init__()
        if feature_scale not in STATNN_SCALES:
            raise ValueError(f"feature_scale must be one of {STATNN_SCALES}, got "
                             f"{feature_scale!r}")
        self.max_layers = max_layers
        self.feature_scale = feature_scale

    def features(self, batch: Batch) -> Tensor:
        """Per-graph statistics, unscaled: ``batch.statnn_features`` when every graph
        carries them (:meth:`attach_features`, for this ``max_layers``)."""
        stored = batch.get("statnn_features")
        if stored is not None:
            width = self.max_layers * (1 + batch.x.shape[1]) * len(STATISTICS)
            if stored.shape != (batch.num_graphs, width):
                raise ValueError(f"statnn_features of shape {tuple(stored.shape)} do not fit "
                                 f"{batch.num_graphs} graphs of these statistics ({width} "
                                 "each): attach them with this encoder again")
            return stored
        return self._statistics(batch)

    @torch.no_grad()
    def attach_features(self, graphs: list[Data], batch_size: int = 256) -> None:
        """Compute each graph's statistics once and store them in the graph as
        ``statnn_features`` (``[1, F]``), so that batches of these graphs skip the
        computation. Only for graphs that are not changed afterwards."""
        for start in range(0, len(graphs), batch_size):
            chunk = graphs[start:start + batch_size]
            stats = self._statistics(Batch.from_data_list(chunk))
            for graph, row in zip(chunk, stats):
                graph.statnn_features = row.unsqueeze(0)

    def _statistics(self, batch: Batch) -> Tensor:
        require_fields(batch, ("x", "edge_index", "edge_attr", "edge_mask", "edge_layer",
                               "node_layer"), "StatNN")
        depth = int(batch.node_layer.max()) + 1 if batch.num_nodes else 0
        if depth > self.max_layers:
            raise ValueError(f"StatNN was built for at most {self.max_layers} layers, a "
                             f"network has {depth}")
        graphs, slots = batch.num_graphs, self.max_layers
        edge_segment = graph_ids(batch)[batch.edge_index[0]] * slots + batch.edge_layer
        # an edge's valid entries are consecutive in edge_attr[edge_mask] (row-major)
        entry_segment = torch.repeat_interleave(edge_segment, batch.edge_mask.sum(1))
        weights = segment_statistics(batch.edge_attr[batch.edge_mask], entry_segment,
                                     graphs * slots)
        node_segment = graph_ids(batch) * slots + batch.node_layer
        columns = [segment_statistics(batch.x[:, c], node_segment, graphs * slots)
                   for c in range(batch.x.shape[1])]
        stats = torch.stack([weights, *columns], dim=1)  # [G * slots, 1 + C, 7]
        return stats.reshape(graphs, -1)

    def forward(self, graphs: Batch | Data) -> Tensor:
        stats = self.features(as_batch(graphs))
        return signed_log(stats) if self.feature_scale == "signed_log" else stats

    def extra_repr(self) -> str:
        return f"max_layers={self.max_layers}, feature_scale={self.feature_scale!r}"


class StatNN(nn.Module):
    r"""StatNN: an MLP on :class:`LayerStatistics`, per layer the mean, variance and
    quantiles of the layer's weights and of its neurons' biases, scaled:

    .. math::
        y = \operatorname{MLP}\big(\phi(s)\big), \qquad
        \phi(s) = \operatorname{sign}(s)\log(1 + |s|) \text{ or } s

    The signed log is the default; ``feature_scale="raw"`` feeds the statistics as
    computed, as the reference ``StatNet`` (neural-graphs ``nn/dynamic_stat_net.py``) does.
    Networks of different depths batch together (up to ``max_layers``); invariant to every
    permutation of neurons inside a layer. :meth:`attach_features` stores each graph's
    statistics once for a job that reads the same graphs every epoch.

    Args:
        out_dim (int): output size.
        hidden (int): MLP width.
        num_layers (int): MLP hidden layers.
        max_layers (int): layer slots (network layers, input layer included).
        feature_scale (str): ``"signed_log"`` or ``"raw"`` (:data:`STATNN_SCALES`).

    Shapes:
        - input: a :class:`~torch_geometric.data.Batch` of graphs
        - output: :math:`(G, \text{out\_dim})`
    """

    def __init__(self, out_dim: int, hidden: int = 256, num_layers: int = 2,
                 max_layers: int = 32, feature_scale: str = "signed_log") -> None:
        super().__init__()
        self.statistics = LayerStatistics(max_layers, feature_scale)
        self.mlp = head_mlp(hidden, out_dim, num_layers)

    @property
    def max_layers(self) -> int:
        return self.statistics.max_layers

    @property
    def feature_scale(self) -> str:
        return self.statistics.feature_scale

    def features(self, batch: Batch) -> Tensor:
        """Per-graph statistics ``[G, max_layers * (1 + C) * 7]`` (C node-feature
        columns), unscaled (:meth:`LayerStatistics.features`)."""
        return self.statistics.features(batch)

    def attach_features(self, graphs: list[Data], batch_size: int = 256) -> None:
        """Store each graph's statistics in it (:meth:`LayerStatistics.attach_features`)."""
        self.statistics.attach_features(graphs, batch_size)

    def forward(self, graphs: Batch | Data) -> Tensor:
        return self.mlp(self.statistics(graphs))


def _nfn_modules() -> Any:
    try:
        import nfn.common
        import nfn.layers
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("NFN needs the authors' package: pip install --no-deps nfn "
                          "(it depends on torch and einops)") from err
    return nfn


def _nfn_group(group: dict[str, Any]) -> bool:
    """Linear, Conv, or a Linear reading feature maps pooled to one position."""
    if group["kind"] == "flatten":
        return all(size == 1 for size in group["params"]["map_shape"])
    return group["kind"] in ("linear", "conv")


def nfn_weight_space(batch: Batch) -> Any:
    """The batch as NFN's ``WeightSpaceFeatures``: per layer weights ``[G, 1, out, in]``
    (``[G, 1, out, in, kh, kw]`` for 2-d convolutions, kernels on the graph's
    ``kernel_shape`` grid) and biases ``[G, 1, out]``, read from each edge's (target,
    source) place. Needs one architecture, a chain of Linear / Conv2d layers (pooling and
    a flatten of 1x1 maps between them allowed); ``ValueError`` otherwise."""
    nfn = _nfn_modules()
    layers = check_one_architecture(batch, "NFN")
    grid = tuple(batch.kernel_shape[0] if isinstance(batch.kernel_shape[0], (tuple, list))
                 else batch.kernel_shape)
    graphs = batch.num_graphs
    device = batch.x.device
    nodes0, edges0 = node_ptr(batch)[:-1], edge_ptr(batch)[:-1]
    rows = torch.arange(graphs, device=device)[:, None]
    weights, biases = [], []
    for index, layer in enumerate(layers[1:], start=1):
        groups = layer["groups"]
        if layer["kind"] not in ("linear", "conv") or len(groups) != 1 or \
                groups[0]["source"] != index - 1 or not _nfn_group(groups[0]):
            kinds = [g["kind"] for g in groups]
            raise ValueError(f"NFN reads chains of Linear and Conv2d layers; layer {index} is "
                             f"'{layer['kind']}' with inputs {kinds} (residual, flatten of "
                             "feature maps, LayerNorm and attention are not supported)")
        group = groups[0]
        if group["kind"] == "conv" and (len(grid) != 2 or group["params"]["groups"] != 1):
            raise ValueError(f"NFN reads 2-d convolutions with groups=1; layer {index} has "
                             f"kernel grid {grid}, groups {group['params']['groups']}")
        start, stop = group["edges"]
        lo, hi = layer["nodes"]
        src_lo, src_hi = layers[index - 1]["nodes"]
        edges = edges0[:, None] + torch.arange(start, stop, device=device)
        dst = batch.edge_index[1, edges] - nodes0[:, None] - lo
        src = batch.edge_index[0, edges] - nodes0[:, None] - src_lo
        if group["kind"] != "conv":  # Linear, or Linear after pooling to 1x1 maps
            values = (batch.edge_attr * batch.edge_mask).sum(-1)[edges]
            weight = values.new_zeros(graphs, hi - lo, src_hi - src_lo)
        else:
            values = batch.edge_attr[edges]
            weight = values.new_zeros(graphs, hi - lo, src_hi - src_lo, values.shape[-1])
        weight = weight.index_put((rows.expand_as(dst), dst, src), values)
        if group["kind"] == "conv":
            weight = weight.reshape(graphs, hi - lo, src_hi - src_lo, *grid)
        weights.append(weight.unsqueeze(1))
        bias = batch.x[nodes0[:, None] + torch.arange(lo, hi, device=device), 0]
        biases.append(bias.unsqueeze(1))
    if any(w.dim() == 6 for w in weights) and weights[-1].dim() == 6:
        raise ValueError("NFN: the network must end with a Linear layer after pooling")
    return nfn.common.WeightSpaceFeatures(weights, biases)


class NFN(nn.Module):
    r"""Neural functional (NFN, Zhou et al. 2023) through the authors' ``nfn`` package:
    ``num_layers`` equivariant layers (``"hnp"``: HNPLinear; ``"np"``: NPLinear with
    learned input/output embeddings) with ReLU, the matching invariant pooling (HNPPool /
    NPPool) and an MLP. The layers are built for the architecture of the first batch
    (``nfn``'s layers need its ``NetworkSpec``); later batches must have the same one.
    Invariant to hidden-neuron permutations; reads one architecture, a chain of Linear /
    Conv2d layers (``ValueError`` naming what differs otherwise).

    Args:
        out_dim (int): output size.
        mode (str): ``"hnp"`` or ``"np"``.
        channels (int): channels of the equivariant layers.
        num_layers (int): equivariant layers.
        hidden (int): MLP width.

    Shapes:
        - input: a :class:`~torch_geometric.data.Batch` of graphs of one architecture
        - output: :math:`(G, \text{out\_dim})`
    """

    def __init__(self, out_dim: int, mode: str = "hnp", channels: int = 32,
                 num_layers: int = 3, hidden: int = 256) -> None:
        super().__init__()
        if mode not in ("hnp", "np"):
            raise ValueError(f"mode must be 'hnp' or 'np', got {mode!r}")
        _nfn_modules()
        self.mode, self.channels, self.num_layers = mode, channels, num_layers
        self.layers: nn.Sequential | None = None
        self.pool: nn.Module | None = None
        self.spec: Any = None
        self.head = head_mlp(hidden, out_dim, 1)

    def _build(self, wsfeat: Any, like: Tensor) -> None:
        import nfn.common
        import nfn.layers

        self.spec = nfn.common.network_spec_from_wsfeat(wsfeat)
        modules: list[nn.Module] = []
        width = 1
        for index in range(self.num_layers):
            if self.mode == "hnp":
                modules.append(nfn.layers.HNPLinear(self.spec, width, self.channels))
            else:
                modules.append(nfn.layers.NPLinear(self.spec, width, self.channels,
                                                   io_embed=index == 0))
            modules.append(nfn.layers.TupleOp(nn.ReLU()))
            width = self.channels
        self.layers = nn.Sequential(*modules).to(device=like.device, dtype=like.dtype)
        self.pool = (nfn.layers.HNPPool if self.mode == "hnp" else nfn.layers.NPPool)(self.spec)

    def forward(self, graphs: Batch | Data) -> Tensor:
        batch = as_batch(graphs)
        require_fields(batch, ("x", "edge_index", "edge_attr", "edge_mask"), "NFN")
        wsfeat = nfn_weight_space(batch)
        if self.layers is None:
            self._build(wsfeat, batch.edge_attr)
        else:
            import nfn.common

            spec = nfn.common.network_spec_from_wsfeat(wsfeat)
            if spec != self.spec:
                raise ValueError(f"NFN was built for the architecture {self.spec}, this "
                                 f"batch has {spec}")
        pooled = self.pool(self.layers(wsfeat))
        return self.head(pooled.flatten(1))
