"""`python -m benchmarks.zoo_encoders`: each zoo encoder on one batch of a zoo family's
networks: parameters, CPU seconds and peak tensor memory of one training step.

The networks are the family's own (:func:`neural_graphs.zoo.plan_zoo` on 28x28 grey
images, ten classes), untrained: the cost of a step depends on the architectures, not on
the weights. Each becomes its neural graph on the family's kernel grid (3x3 small, 7x7
wild, the 4x4 patch for vit), as ``CNN_Generalization_Train`` reads them, and each encoder
(at that job's defaults, :data:`jobs.zoo_jobs.ZOO_ENCODER_DEFAULTS`, with the probe images
the job gives it or ``--probes N`` of them) runs one forward and backward pass of a squared
loss on the whole batch: after one such step to warm up, the user and system CPU seconds
of a second (system time is page faults: memory the allocator maps afresh) and the peak of
tensor memory of a third above the level at its start
(:func:`benchmarks.common.memory_use`)::

    python -m benchmarks.zoo_encoders --family wild --batch-size 128
    python -m benchmarks.zoo_encoders --family wild --batch-size 128 --probes 0
    python -m benchmarks.zoo_encoders --family vit --batch-size 32 --encoders statnn ngnn dng

NG-T computes every pair of neurons: on ViT graphs (747 neurons, 558,009 pairs, in row
blocks) a step costs about 1.5 s of CPU a graph; ask for it with a small batch.
"""

from __future__ import annotations

import argparse
import resource
import sys
from collections.abc import Sequence

import torch
from torch_geometric.data import Batch

from benchmarks.common import format_table, memory_use, parameter_count
from jobs.zoo_jobs import ZOO_ENCODER_DEFAULTS, ZOO_ENCODERS, make_zoo_encoder, zoo_probes
from neural_graphs.graph import to_neural_graph
from neural_graphs.zoo import FAMILIES, ZooConfig, build_cnn, build_vit, plan_zoo
from neural_graphs.zoo_vit import is_vit
from utils.cli import HelpFormatter, non_negative_int, positive_int
from utils.compiled import set_compiled_layers
from utils.memory import allocator_setting, keep_freed_memory

KERNELS = {"small": (3, 3), "wild": (7, 7), "vit": (4, 4)}
IMAGE_SHAPE = (1, 28, 28)  # the images every family is planned for (probe images too)
DEFAULT_ENCODERS = ("statnn", "ngnn", "ngt", "dng")


def family_graphs(family: str, count: int, seed: int = 0) -> list:
    """The neural graphs of the first ``count`` networks of a ``family`` zoo (untrained)."""
    groups = plan_zoo(ZooConfig(family=family, num=count, seed=seed, epochs=[1]),
                      IMAGE_SHAPE[0], 10, IMAGE_SHAPE[1])
    graphs = []
    for group in groups:
        for net in group["networks"]:
            torch.manual_seed(net["hparams"]["seed"])
            arch = net["arch"]
            model = build_vit(arch) if is_vit(arch) else build_cnn(arch)
            graph = to_neural_graph(model.eval(), kernel_shape=KERNELS[family])
            graph.y = torch.rand(1)
            graphs.append(graph)
    return graphs


def measure(side: str, graphs: list, grad_checkpointing: bool = False,
            probes: int = 0) -> tuple[str, ...]:
    """One row: the encoder (with ``probes`` probe images), its parameters, user and system
    CPU seconds and peak MiB of one step."""
    defaults = ZOO_ENCODER_DEFAULTS[side]
    degrees = torch.cat([torch.bincount(g.edge_index[1], minlength=g.num_nodes) for g in graphs])
    encoder = make_zoo_encoder(side, defaults.hidden, defaults.layers, defaults.rff_dim, 1.0,
                               deg=torch.bincount(degrees), probes=probes,
                               probe_shape=IMAGE_SHAPE if probes else None)
    if side == "statnn":
        encoder.attach_features(graphs)
    set_compiled_layers(encoder, "off", 0, grad_checkpointing)
    batch = Batch.from_data_list(graphs)
    with torch.no_grad():
        encoder(Batch.from_data_list(graphs[:2]))  # lazy parts

    def step() -> None:
        encoder(batch).square().mean().backward()

    step()  # the allocator's heap grows once, as in the first step of a training run
    before = resource.getrusage(resource.RUSAGE_SELF)
    step()
    after = resource.getrusage(resource.RUSAGE_SELF)
    encoder.zero_grad()
    use = memory_use(step, torch.device("cpu"))  # a third step: the profiler costs time
    return (side, str(probes), f"{parameter_count(encoder):,}",
            f"{after.ru_utime - before.ru_utime:.1f}", f"{after.ru_stime - before.ru_stime:.1f}",
            f"{use.peak / 2**20:,.0f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.zoo_encoders",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--family", choices=FAMILIES, default="wild", help="zoo family")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="networks")
    parser.add_argument("--encoders", nargs="+", choices=ZOO_ENCODERS,
                        default=list(DEFAULT_ENCODERS), help="encoders to measure")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads")
    parser.add_argument("--grad-checkpointing", action="store_true",
                        help="encoders that can (DNG's message groups, NG-T's chunks of "
                             "graphs) recompute their activations in the backward pass "
                             "instead of keeping them: less memory, more time")
    parser.add_argument("--probes", type=non_negative_int, default=None, metavar="N",
                        help="probe images of each graph encoder, 0 for none; left out, as "
                             "CNN_Generalization_Train gives them (32 on CNNs, none on ViTs)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    graphs = family_graphs(args.family, args.batch_size)
    nodes = [g.num_nodes for g in graphs]
    print(f"torch {torch.__version__}, {args.threads} thread(s), {allocator_setting()}; "
          f"{len(graphs)} {args.family} networks, neurons {min(nodes)}-{max(nodes)} (mean "
          f"{sum(nodes) / len(nodes):.0f}), kernel grid {KERNELS[args.family]}", flush=True)
    rows = [measure(side, graphs, args.grad_checkpointing,
                    zoo_probes(side, args.family, args.probes)) for side in args.encoders]
    print(format_table(("encoder", "probes", "parameters", "user s / step", "system s / step",
                        "peak MiB"), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
