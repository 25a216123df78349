"""The graph encoders' public node embeddings: every neuron's final state, equivariant to
permutations of hidden neurons, and what each encoder's readout reads."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch

from neural_graphs import SIREN, to_neural_graph
from neural_graphs.encoders import NGGNN, DNGEncoder, NGTransformer
from neural_graphs.encoders.readouts import NodeEmbeddings
from neural_graphs.permute import hidden_permutation, permute_graph

ENCODERS = {
    "ngnn": lambda: NGGNN(3, hidden=16, num_layers=3, num_probes=4),
    "ngt": lambda: NGTransformer(3, node_dim=16, edge_dim=8, num_layers=2, heads=2,
                                 num_probes=4),
    "dng": lambda: DNGEncoder(3, hidden=16, num_probes=4),
}


def _networks() -> list[nn.Module]:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2))
    return [SIREN(hidden_features=6).double(), mlp.double()]


@pytest.mark.parametrize("name", list(ENCODERS))
@pytest.mark.parametrize("network", range(2))
def test_node_embeddings_are_equivariant_to_hidden_permutations(name, network):
    torch.manual_seed(1)
    encoder = ENCODERS[name]().double().eval()
    graph = to_neural_graph(_networks()[network])
    new_id = hidden_permutation(graph, torch.Generator().manual_seed(3))
    permuted = permute_graph(graph, torch.Generator().manual_seed(3))
    with torch.no_grad():
        encoder(graph)  # sizes read from the first batch
        plain = encoder.node_embeddings(graph)
        moved = encoder.node_embeddings(permuted)
    assert isinstance(plain, NodeEmbeddings)
    assert plain.states.shape == (graph.num_nodes, plain.states.shape[1])
    assert not torch.equal(new_id, torch.arange(graph.num_nodes))  # something moved
    torch.testing.assert_close(moved.states[new_id], plain.states, rtol=0, atol=1e-10)
    # The readout reads exactly these states.
    with torch.no_grad():
        torch.testing.assert_close(encoder.readout(*plain), encoder.readout(*moved),
                                   rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", list(ENCODERS))
def test_one_layers_states_and_a_missing_layer(name):
    encoder = ENCODERS[name]().double().eval()
    graphs = [to_neural_graph(net) for net in _networks()]
    with torch.no_grad():
        encoder(Batch.from_data_list(graphs[:1]))
        embeddings = encoder.node_embeddings(graphs[:1])
    layout = graphs[0].layer_layout
    for index, width in enumerate(layout):
        assert embeddings.layer(index).shape[0] == width
    with pytest.raises(ValueError, match="no neuron of layer 9"):
        embeddings.layer(9)
