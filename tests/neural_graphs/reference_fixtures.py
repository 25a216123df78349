"""What the reference-fidelity tests share: the SIRENs of a fixture written by
``python -m benchmarks.reference fixtures`` as one batch of neural graphs."""

from __future__ import annotations

import torch
from torch_geometric.data import Batch

from neural_graphs.graph import to_neural_graph
from neural_graphs.inr import siren_from_params


def siren_graphs(params: dict[str, torch.Tensor], dtype: torch.dtype | None = None) -> Batch:
    """The stacked SIREN ``params`` (leading INR axis), cast to ``dtype`` when given, as one
    batch of neural graphs."""
    if dtype is not None:
        params = {k: v.to(dtype) for k, v in params.items()}
    count = params["net.0.weight"].shape[0]
    return Batch.from_data_list([to_neural_graph(siren_from_params(params, i))
                                 for i in range(count)])
