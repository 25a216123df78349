"""Networks as neural graphs: the graph of a network's parameters, and learning from it.

* :func:`to_neural_graph` / :func:`from_neural_graph`: a network to its neural graph (one
  node per neuron, one edge per weight or kernel) and back.
* :func:`run_neural_graph`: the network's forward pass as message passing on that graph.
* :func:`layer_snapshots`: the per-layer bipartite steps (the dynamic neural graph).
* :func:`permute_hidden`: the same function with hidden neurons permuted.
* :func:`collate_graphs`: a ``Batch`` of graphs of any networks (kernels padded to the
  batch's largest grid).
"""

from neural_graphs.graph import (
    ACTIVATIONS,
    EDGE_TYPES,
    NODE_TYPES,
    collate_graphs,
    fold_batchnorm,
    from_neural_graph,
    layer_snapshots,
    to_neural_graph,
)
from neural_graphs.inr import SIREN, Sine
from neural_graphs.permute import permute_graph, permute_hidden
from neural_graphs.run import run_neural_graph

__all__ = [
    "ACTIVATIONS",
    "EDGE_TYPES",
    "NODE_TYPES",
    "SIREN",
    "Sine",
    "collate_graphs",
    "fold_batchnorm",
    "from_neural_graph",
    "layer_snapshots",
    "permute_graph",
    "permute_hidden",
    "run_neural_graph",
    "to_neural_graph",
]
