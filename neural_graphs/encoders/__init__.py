"""Weight-space encoders: networks that read neural graphs (``to_neural_graph`` output).

Each is built as ``Encoder(out_dim=...)`` with every other argument defaulted (input widths
are read from the first batch: run one forward pass before building the optimizer) and
maps a :class:`~torch_geometric.data.Batch` of neural graphs to ``[num_graphs, out_dim]``:

* :class:`NGGNN`: PNA message passing with edge-modulated messages and edge updates.
* :class:`NGTransformer`: the relational transformer, padding masked.
* :class:`DNGEncoder`: the network read layer by layer, a GRU as node memory.
* Baselines: :class:`FlatMLP` (flattened weights, one architecture), :class:`StatNN`
  (per-layer weight statistics, :class:`LayerStatistics`), :class:`NFN` (NP / HNP layers
  of the ``nfn`` package).
* :class:`WithStatistics`: a graph encoder whose head also reads StatNN's statistics.

All but ``FlatMLP`` are invariant to permutations of hidden neurons.
``python -m neural_graphs.encoders`` prints each encoder's size and speed.
"""

from neural_graphs.encoders.baselines import NFN, FlatMLP, LayerStatistics, StatNN
from neural_graphs.encoders.batch import KernelGrid
from neural_graphs.encoders.dng import DNGEncoder
from neural_graphs.encoders.embeddings import FourierFeatures, GraphEmbedding
from neural_graphs.encoders.gnn import NGGNN
from neural_graphs.encoders.probes import ProbeFeatures, probe_activations
from neural_graphs.encoders.readouts import Readout
from neural_graphs.encoders.transformer import NGTransformer
from neural_graphs.encoders.with_statistics import WithStatistics

ENCODERS = {"NGGNN": NGGNN, "NGTransformer": NGTransformer, "DNGEncoder": DNGEncoder,
            "FlatMLP": FlatMLP, "StatNN": StatNN, "NFN": NFN}

__all__ = [
    "ENCODERS",
    "NFN",
    "NGGNN",
    "DNGEncoder",
    "FlatMLP",
    "FourierFeatures",
    "GraphEmbedding",
    "KernelGrid",
    "LayerStatistics",
    "NGTransformer",
    "ProbeFeatures",
    "Readout",
    "StatNN",
    "WithStatistics",
    "probe_activations",
]
