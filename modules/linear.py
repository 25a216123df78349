"""Linear layers and MLPs as message passing over the bipartite graph of neurons.

Input neurons are source nodes, output neurons target nodes, the graph is complete
bipartite: edge (i -> o) carries weight[o, i], target o carries bias[o] (the neural-graph
view of a layer). The batch rides along the leading dimensions; neurons are the last.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from modules.base import MessagePassingModule, NativeTwin, layer_neural_graph


class LinearAsGNN(MessagePassingModule):
    r"""Twin of :class:`torch.nn.Linear`, message passing over the graph of neurons.

    The graph is complete bipartite: every input neuron :math:`i` (source node) sends a
    message to every output neuron :math:`o` (target node) along an edge carrying the
    weight :math:`w_{oi}`; target nodes carry the biases. The message is the weighted
    source value, the aggregation a sum:

    .. math::
        y_o = b_o + \sum_{i=1}^{F_{in}} w_{oi} \, x_i

    The reference path (``fused = False``) sends one message per edge and sums them; the
    fused path uses that the weighted adjacency of a complete bipartite graph is the dense
    matrix ``weight``, stored as a single dense block, so aggregation is one GEMM. Same
    arguments, parameters (``weight`` (out, in), ``bias`` (out,)) and initialization as
    ``nn.Linear``.

    Args:
        in_features (int): Number of input neurons :math:`F_{in}` (source nodes).
        out_features (int): Number of output neurons :math:`F_{out}` (target nodes).
        bias (bool, optional): If ``False``, the target nodes carry no bias.
            (default: ``True``)
        device (torch.device, optional): Device of the parameters.
        dtype (torch.dtype, optional): Data type of the parameters.

    Shapes:
        - **input:** :math:`(*, F_{in})`, any leading dimensions (batch, tokens) ride
          along as features
        - **output:** :math:`(*, F_{out})`
    """

    native_type = nn.Linear

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(aggr="sum", node_dim=-1)
        if in_features < 0 or out_features < 0:
            raise ValueError(f"in_features and out_features must be >= 0, "
                             f"got {in_features} and {out_features}")
        factory = {"device": device, "dtype": dtype}
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.Linear.reset_parameters(self)

    @staticmethod
    def native_kwargs(module: nn.Module) -> dict[str, Any]:
        return {"in_features": module.in_features, "out_features": module.out_features,
                "bias": module.bias is not None}

    def _adjacency(self, device: torch.device) -> Tensor:
        """The complete bipartite graph for the fused path: each target row holds one dense
        row of edges from all inputs, a hybrid sparse-dense adjacency with no per-edge
        storage (its values are a stride-0 view)."""
        n_in, n_out = self.in_features, self.out_features
        return self.cached(("adjacency", device), lambda: torch.sparse_coo_tensor(
            torch.arange(n_out, device=device)[None, :],
            torch.ones((), dtype=torch.bool, device=device).expand(n_out, n_in),
            size=(n_out, n_in), is_coalesced=True, check_invariants=False))

    def _edges(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """The explicit edge list (in*out edges), built only for the reference path and
        for inspection; edge e carries weight.view(-1)[weight_index[e]]."""
        def build() -> tuple[Tensor, Tensor]:
            weight_index = torch.arange(self.in_features * self.out_features, device=device)
            dst, src = weight_index // self.in_features, weight_index % self.in_features
            return torch.stack([src, dst]), weight_index
        return self.cached(("edges", device), build)

    def graph(self, input_shape: Sequence[int] | None = None) -> Data:
        """The neuron graph: edge_index (2, in*out), weights on edges, biases on targets."""
        if input_shape is not None:
            self._check_features(tuple(input_shape))
        edge_index, weight_index = self._edges(self.weight.device)
        bias = self.bias.detach() if self.bias is not None else None
        return Data(edge_index=edge_index, weight_index=weight_index,
                    edge_attr=self.weight.detach().reshape(-1)[weight_index].unsqueeze(-1),
                    bias=bias, num_src_nodes=self.in_features,
                    num_dst_nodes=self.out_features, num_nodes=self.in_features)

    def _check_features(self, shape: tuple[int, ...]) -> None:
        if len(shape) == 0 or shape[-1] != self.in_features:
            raise RuntimeError(f"{type(self).__name__}: expected input of shape "
                               f"(*, {self.in_features}), got {shape}")

    def neural_graph(self) -> Data:
        """The layer's neural graph: input and output neurons, one edge per weight, the
        bias on the output neurons (see :func:`modules.base.layer_neural_graph`); the view
        :func:`neural_graphs.to_neural_graph` composes for whole networks."""
        return layer_neural_graph(self.weight, self.bias)

    def forward(self, input: Tensor) -> Tensor:
        self._check_features(tuple(input.shape))
        # One propagate call (PyG compiles its signature from the call site): a sparse
        # adjacency selects message_and_aggregate, an edge list message + aggregate.
        if self.fused:
            adj, weight_index = self._adjacency(input.device), None
        else:
            adj, weight_index = self._edges(input.device)
        return self.propagate(adj, x=input, weight_index=weight_index,
                              size=(self.in_features, self.out_features))

    def message(self, x_j: Tensor, weight_index: Tensor) -> Tensor:
        return x_j * self.weight.reshape(-1)[weight_index]

    def message_and_aggregate(self, adj_t: Tensor, x: Tensor) -> Tensor:
        return torch.matmul(x, self.weight.t())

    def update(self, aggr_out: Tensor) -> Tensor:
        return aggr_out if self.bias is None else aggr_out + self.bias

    def extra_repr(self) -> str:
        return nn.Linear.extra_repr(self)


_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class MLPAsGNN(NativeTwin, nn.Sequential):
    r"""Multi-layer perceptron of :class:`LinearAsGNN` layers.

    The graph is the chain of the layers' complete bipartite neuron graphs; each hidden
    layer's output neurons apply the activation ('relu' or 'gelu', node-wise) and dropout:

    .. math::
        \mathbf{h}^{(l+1)} = \mathrm{dropout}\big(\sigma(W^{(l)} \mathbf{h}^{(l)}
        + \mathbf{b}^{(l)})\big)

    The layout (and state_dict keys) is that of the plain ``nn.Sequential`` returned by
    :meth:`to_native`.

    Args:
        in_channels (int): Number of input neurons.
        hidden_channels (int or list of int): Size of each hidden layer.
        out_channels (int): Number of output neurons.
        activation (str, optional): ``'relu'`` or ``'gelu'``. (default: ``'relu'``)
        bias (bool, optional): Biases on every layer. (default: ``True``)
        dropout (float, optional): Dropout after each hidden activation; none at 0.
            (default: ``0.0``)

    Shapes:
        - **input:** :math:`(*, F_{in})`
        - **output:** :math:`(*, F_{out})`
    """

    def __init__(self, in_channels: int, hidden_channels: int | Sequence[int],
                 out_channels: int, activation: str = "relu", bias: bool = True,
                 dropout: float = 0.0) -> None:
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, "
                             f"got {activation!r}")
        hidden = [hidden_channels] if isinstance(hidden_channels, int) else list(hidden_channels)
        sizes = [in_channels, *hidden, out_channels]
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(LinearAsGNN(n_in, n_out, bias=bias))
            if i < len(sizes) - 2:
                layers.append(_ACTIVATIONS[activation]())
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
        super().__init__(*layers)

    @classmethod
    def from_native(cls, module: nn.Module) -> nn.Module:
        raise TypeError("MLPAsGNN has no single native type: to_gnn(nn.Sequential(...)) "
                        f"converts the layers of a {type(module).__name__}")

    def to_native(self) -> nn.Sequential:
        """The same MLP built from torch.nn layers, with the same weights."""
        return nn.Sequential(*(m.to_native() if isinstance(m, LinearAsGNN) else m
                               for m in self))
