"""Pieces every weight-space encoder shares, gathered from the files that hold them:

* ``encoders/batch.py``: reading a batch of neural graphs (fields, per-graph pointers,
  architectures, :class:`KernelGrid`);
* ``encoders/embeddings.py``: random Fourier features of scalars, position / activation /
  edge-type embeddings (:class:`GraphEmbedding`), the published graph constructor's
  features (:class:`ConstructorEmbedding`, the reference configurations of NG-GNN and
  NG-T);
* ``encoders/probes.py``: probe features;
* ``encoders/readouts.py``: readouts and the output MLP.

Symmetry: nothing here looks at a hidden neuron's ``node_position`` or its position in the
node list. A hidden neuron is seen through its bias, its activation, its layer
(``node_layer``) and its edges; input and output neurons (which no hidden permutation
moves) also through their ``node_position``. Every function of a batch is therefore
invariant (per graph) or equivariant (per node, per edge) under hidden-neuron
permutations, and computes each graph from that graph's nodes and edges only, so a graph
gets the same result alone or batched with any others.
"""

from neural_graphs.encoders.batch import (
    GRAPH_FIELDS,
    KernelGrid,
    as_batch,
    check_one_architecture,
    describe_difference,
    edge_ptr,
    graph_ids,
    graph_structure,
    layer_slot,
    local_node_position,
    node_ptr,
    require_fields,
)
from neural_graphs.encoders.embeddings import (
    ConstructorEmbedding,
    FourierFeatures,
    GraphEmbedding,
    IndexEmbedding,
)
from neural_graphs.encoders.probes import ProbeFeatures, linear_chain_weights, probe_activations
from neural_graphs.encoders.readouts import Readout, head_mlp

__all__ = [
    "GRAPH_FIELDS",
    "ConstructorEmbedding",
    "FourierFeatures",
    "GraphEmbedding",
    "IndexEmbedding",
    "KernelGrid",
    "ProbeFeatures",
    "Readout",
    "as_batch",
    "check_one_architecture",
    "describe_difference",
    "edge_ptr",
    "graph_ids",
    "graph_structure",
    "head_mlp",
    "layer_slot",
    "linear_chain_weights",
    "local_node_position",
    "node_ptr",
    "probe_activations",
    "require_fields",
]
