"""python -m neural_graphs.show: the drawing command, its edge sample and edge colours."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from neural_graphs import to_neural_graph
from neural_graphs.show import build_parser, edge_colour_values, main, sample_edges

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("model", ["mlp", "siren"])
def test_main_writes_a_png(model: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "figures" / f"{model}.png"
    assert main([model, "--out", str(out), "--max-edges", "2000", "--dpi", "50"]) == 0
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5_000
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left
    assert f"wrote {out}" in capsys.readouterr().out


def test_unsupported_network_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "x.png"
    code = main(["mlp", "--out", str(out)],
                build=lambda _: nn.Sequential(nn.Linear(2, 2), nn.Softmax(1)))
    assert code == 1 and not out.exists()
    assert "Softmax at '1'" in capsys.readouterr().err


def test_help_and_choices(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for word in ("mlp", "cwru", "vgg11", "resnet18", "vit", "siren", "--max-edges", "--seed"):
        assert word in text
    with pytest.raises(SystemExit):
        build_parser().parse_args(["lenet", "--out", "x.png"])


def test_sample_edges_shares_the_budget_per_layer() -> None:
    edge_layer = torch.cat([torch.full((5,), 1), torch.full((1000,), 2), torch.full((300,), 3)])
    keep = sample_edges(edge_layer, 205, torch.Generator().manual_seed(0))
    assert keep.numel() == 205 and keep.unique().numel() == 205
    counts = torch.bincount(edge_layer[keep], minlength=4).tolist()
    assert counts == [0, 5, 100, 100]  # the small layer keeps all, the rest split evenly
    assert torch.equal(sample_edges(edge_layer, 10_000), torch.arange(1305))
    with pytest.raises(ValueError, match="max_edges"):
        sample_edges(edge_layer, 0)


def test_edge_colour_values() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 1, 1),
                          nn.Flatten(), nn.Linear(4, 2)).double()
    graph = to_neural_graph(model)
    assert graph.kernel_shape == (3, 3)
    mean, centre = edge_colour_values(graph), edge_colour_values(graph, "centre")
    first = graph.edge_layer == 1
    weights = model[0].weight.detach().reshape(2, 9)  # edges of layer 1: one per out channel
    assert torch.allclose(mean[first], weights.mean(1), rtol=0, atol=1e-15)
    assert torch.equal(centre[first], weights[:, 4])
    linear = graph.edge_layer == 2  # 1x1 kernels: mean and centre are the weight
    assert torch.equal(mean[linear], centre[linear])
    flatten = graph.edge_layer == 3  # a 2x2 map: the mean of 4 entries
    assert torch.allclose(mean[flatten], model[4].weight.detach().mean(1), rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="kernel"):
        edge_colour_values(graph, "max")
