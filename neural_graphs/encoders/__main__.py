"""``python -m neural_graphs.encoders``: each encoder's parameter count and its
forward+backward time on a batch of SIREN graphs (random 2-32-32-1 SIRENs), every encoder
at its reference size. ``benchmarks/encoders.py`` measures more carefully (fitted INRs,
peak memory, repeated runs)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn
from torch_geometric.data import Batch

from neural_graphs.encoders import NFN, NGGNN, DNGEncoder, FlatMLP, NGTransformer, StatNN
from neural_graphs.graph import to_neural_graph
from neural_graphs.inr import SIREN
from utils.cli import HelpFormatter, positive_int

REFERENCE_SIZES: dict[str, Callable[[int], nn.Module]] = {
    "NGGNN (hidden 32)": lambda out: NGGNN(out, hidden=32),
    "NGTransformer (4 layers, 8 heads, node 64, edge 32)": lambda out: NGTransformer(out),
    "DNGEncoder (embedding 128)": lambda out: DNGEncoder(out, hidden=128),
    "FlatMLP": lambda out: FlatMLP(out),
    "StatNN": lambda out: StatNN(out),
    "NFN (HNP)": lambda out: NFN(out, mode="hnp"),
    "NFN (NP)": lambda out: NFN(out, mode="np"),
}


def siren_graphs(count: int, seed: int = 0) -> Batch:
    """A batch of the graphs of ``count`` random 2-32-32-1 SIRENs."""
    torch.manual_seed(seed)
    return Batch.from_data_list([to_neural_graph(SIREN()) for _ in range(count)])


def forward_backward(model: nn.Module, batch: Batch) -> None:
    model.zero_grad(set_to_none=True)
    model(batch).square().mean().backward()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m neural_graphs.encoders",
                                     description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--batch-size", type=positive_int, default=128,
                        help="graphs per batch")
    parser.add_argument("--repeats", type=positive_int, default=2,
                        help="timed forward+backward runs")
    parser.add_argument("--out-dim", type=positive_int, default=10,
                        help="encoder output size")
    args = parser.parse_args(argv)
    batch = siren_graphs(args.batch_size)
    print(f"{args.batch_size} SIREN graphs, {batch.num_nodes} nodes, "
          f"{batch.edge_index.shape[1]} edges; {torch.get_num_threads()} threads")
    print(f"{'encoder':54s} {'parameters':>10s} {'fwd+bwd s':>10s} {'graphs/s':>9s}")
    for name, build in REFERENCE_SIZES.items():
        model = build(args.out_dim)
        forward_backward(model, batch)  # builds the lazy parts, warms up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            forward_backward(model, batch)
            times.append(time.perf_counter() - start)
        best = min(times)
        count = sum(p.numel() for p in model.parameters())
        print(f"{name:54s} {count:10d} {best:10.3f} {args.batch_size / best:9.1f}",
              flush=True)


if __name__ == "__main__":
    main()
