"""Encoder pieces (issue 17): PNAEdgeConv's reset_parameters and repr, the build_encoder
registry, and the shared pieces importable from every place they were."""

from __future__ import annotations

import pytest
import torch

import neural_graphs.encoders.build as build
from neural_graphs.encoders import NGGNN
from neural_graphs.encoders.gnn import PNAEdgeConv


def test_pna_edge_conv_reset_parameters_redraws_every_weight() -> None:
    torch.manual_seed(0)
    conv = PNAEdgeConv(6, 3)
    fresh = {k: v.clone() for k, v in conv.state_dict().items()}
    with torch.no_grad():
        for p in conv.parameters():
            p.fill_(0.5)
    torch.manual_seed(0)
    conv.reset_parameters()
    for key, value in conv.state_dict().items():
        assert torch.equal(value, fresh[key]), key
    conv.reset_parameters()  # a second draw differs from the first
    assert not torch.equal(conv.lin.weight, fresh["lin.weight"])
    assert not torch.equal(conv.edge_encoder.weight, fresh["edge_encoder.weight"])


def test_pna_edge_conv_reset_keeps_the_degree_calibration() -> None:
    enc = NGGNN(2, hidden=4, num_layers=1, deg=torch.tensor([0.0, 2.0, 2.0]))
    conv = enc.convs[0]
    before = conv.aggr_module.avg_deg_log.clone()
    conv.reset_parameters()
    assert torch.equal(conv.aggr_module.avg_deg_log, before)


def test_pna_edge_conv_repr_shows_sizes_and_aggregators() -> None:
    conv = PNAEdgeConv(6, 3, aggregators=("mean", "max"), scalers=("identity",))
    assert repr(conv) == ("PNAEdgeConv(6, 6, edge_dim=3, aggregators=['mean', 'max'], "
                          "scalers=['identity'])")


def test_build_encoder_is_a_registry() -> None:
    assert tuple(build.ENCODER_BUILDERS) == build.ENCODER_NAMES
    assert set(build.GRAPH_ENCODER_NAMES) <= set(build.ENCODER_NAMES)
    built = {name: type(build.build_encoder(name, 2, hidden=8, layers=1))
             for name in build.ENCODER_NAMES if name != "nfn"}
    assert {k: v.__name__ for k, v in built.items()} == {
        "flatmlp": "FlatMLP", "statnn": "StatNN", "ngnn": "NGGNN", "ngt": "NGTransformer",
        "dng": "DNGEncoder"}
    with pytest.raises(ValueError, match="unknown encoder 'gcn'"):
        build.build_encoder("gcn", 1, hidden=8, layers=1)


def test_shared_pieces_are_importable_where_they_were() -> None:
    from neural_graphs.encoders import common
    from neural_graphs.encoders.batch import as_batch
    from neural_graphs.encoders.embeddings import GraphEmbedding
    from neural_graphs.encoders.probes import probe_activations
    from neural_graphs.encoders.readouts import Readout

    assert common.as_batch is as_batch and common.GraphEmbedding is GraphEmbedding
    assert common.probe_activations is probe_activations and common.Readout is Readout
    for name in common.__all__:
        assert getattr(common, name) is not None
