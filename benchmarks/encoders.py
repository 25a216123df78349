"""`python -m benchmarks.encoders`: weight-space encoders, forward+backward on a batch of
MNIST SIREN graphs, each at its reference size (``--sizes reference``) or at the defaults of
the INR classification job (``--sizes job``: what one default run trains).

Reports, per encoder: parameter count, median forward+backward seconds over the timed
runs (:func:`benchmarks.common.time_samples`: warm-up, device synchronisation), graphs per
second, the CPU seconds of one forward+backward (all threads; on a CPU the cost a busy
machine cannot inflate) and the peak tensor memory of one forward+backward
(:func:`benchmarks.common.memory_use`). The SIRENs are fitted MNIST INRs when a fitted set
is found (``--inr-dir``, shards written by ``neural_graphs.inr_fit``), random reference-init
SIRENs otherwise. The reference implementation (mkofinas/neural-graphs) is not part of
this project: run it on the same batch (:func:`siren_batch`) and configuration
(:data:`REFERENCE_SIZES`) to compare.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch_geometric.data import Batch
from tqdm import tqdm

from benchmarks.common import format_table, memory_use, parameter_count, time_samples
from jobs.inr_jobs import INR_CLASSIFICATION_DEFAULTS, make_encoder
from neural_graphs.encoders import NFN, NGGNN, DNGEncoder, FlatMLP, NGTransformer, StatNN
from neural_graphs.graph import to_neural_graph
from neural_graphs.inr import SIREN, siren_from_params
from utils.cli import (
    HelpFormatter,
    checked_device,
    default_device,
    non_negative_int,
    positive_int,
)
from utils.compiled import set_compiled_layers
from utils.memory import allocator_setting, keep_freed_memory

INR_DIRS = (Path("/work/runs/inr_fast"), Path("/work/runs/inr200_fast"))

REFERENCE_SIZES: dict[str, Callable[[int], nn.Module]] = {
    "NGGNN": lambda out: NGGNN(out, hidden=32, num_layers=4),
    "NGTransformer": lambda out: NGTransformer(out, node_dim=64, edge_dim=32, num_layers=4,
                                               heads=8),
    "DNGEncoder": lambda out: DNGEncoder(out, hidden=128),
    "FlatMLP": lambda out: FlatMLP(out),
    "StatNN": lambda out: StatNN(out),
    "NFN-HNP": lambda out: NFN(out, mode="hnp"),
    "NFN-NP": lambda out: NFN(out, mode="np"),
}


def fitted_params(inr_dir: Path | None) -> dict[str, torch.Tensor] | None:
    """Stacked SIREN parameters of the first shard in ``inr_dir`` (or the first of
    :data:`INR_DIRS` holding one), None when there is none."""
    for folder in ([inr_dir] if inr_dir is not None else list(INR_DIRS)):
        shards = sorted(folder.glob("shard_*.pt")) if folder.is_dir() else []
        if shards:
            return torch.load(shards[0], map_location="cpu", weights_only=True)["params"]
    if inr_dir is not None:
        raise FileNotFoundError(f"no shard_*.pt in {inr_dir}")
    return None


def siren_batch(count: int = 128, inr_dir: Path | None = None, seed: int = 0
                ) -> tuple[Batch, str]:
    """A batch of ``count`` SIREN graphs (fitted INRs when available) and its source."""
    params = fitted_params(inr_dir)
    if params is not None and params["net.0.weight"].shape[0] >= count:
        sirens = [siren_from_params(params, i) for i in range(count)]
        source = "fitted MNIST INRs"
    else:
        torch.manual_seed(seed)
        sirens = [SIREN() for _ in range(count)]
        source = "random reference-init SIRENs"
    return Batch.from_data_list([to_neural_graph(net) for net in sirens]), source


def job_sizes() -> dict[str, Callable[[int], nn.Module]]:
    """A builder ``out_dim -> encoder`` per encoder of the INR classification job, at that
    job's default sizes (probes included): :data:`jobs.inr_jobs.INR_CLASSIFICATION_DEFAULTS`."""
    return {name: (lambda out, d=d, name=name: make_encoder(name, out, d.hidden, d.layers,
                                                            d.probes))
            for name, d in INR_CLASSIFICATION_DEFAULTS.items()}


def measure(model: nn.Module, batch: Batch, warmup: int, iters: int,
            device: torch.device) -> dict[str, float]:
    """Parameter count, median forward+backward seconds, CPU seconds of one
    forward+backward, graphs/s and peak bytes."""
    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(batch).square().mean().backward()

    step()  # builds the lazy parts (and compiles what is compiled)
    cpu_start = time.process_time()
    times = time_samples(step, warmup, iters, device)
    cpu = (time.process_time() - cpu_start) / (warmup + len(times))
    median = statistics.median(times)
    peak = memory_use(step, device).peak
    return {"parameters": parameter_count(model), "seconds": median, "cpu_seconds": cpu,
            "graphs_per_s": batch.num_graphs / median, "peak_bytes": peak}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.encoders", description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--batch-size", type=positive_int, default=128, help="graphs per batch")
    parser.add_argument("--inr-dir", type=Path, default=None,
                        help="folder of fitted SIREN shards (default: first of "
                             f"{[str(d) for d in INR_DIRS]} that has one)")
    parser.add_argument("--sizes", choices=("reference", "job"), default="reference",
                        help="reference: each encoder at its reference implementation's "
                        "size (NFN both modes); job: the INR classification job's defaults")
    parser.add_argument("--encoders", nargs="+", default=None,
                        help=f"encoders to run (reference sizes: {list(REFERENCE_SIZES)}; "
                        "job sizes: flatmlp statnn nfn ngnn ngt dng; default all)")
    parser.add_argument("--warmup", type=non_negative_int, default=1, help="untimed runs")
    parser.add_argument("--iters", type=positive_int, default=3, help="timed runs")
    parser.add_argument("--out-dim", type=positive_int, default=10, help="encoder output size")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--device", default=default_device(), help="cpu, cuda or cuda:N")
    parser.add_argument("--compile", choices=("on", "off"), default="on",
                        help="the layers an encoder offers to compile (NG-T's) compiled, as "
                        "a long training run has them (--compile auto), or eager; the "
                        "compilation falls in the first, untimed step")
    args = parser.parse_args(argv)
    device = checked_device(parser, args.device)
    if device.type == "cpu":
        keep_freed_memory()  # as the training jobs do: the step's tensors reused, no faults
    batch, source = siren_batch(args.batch_size, args.inr_dir)
    batch = batch.to(device)
    print(f"{args.batch_size} graphs ({source}), {batch.num_nodes} nodes, "
          f"{batch.edge_index.shape[1]} edges; {device}, {torch.get_num_threads()} threads, "
          f"{allocator_setting()}, compiled layers {args.compile}")
    builders = REFERENCE_SIZES if args.sizes == "reference" else job_sizes()
    names = args.encoders or list(builders)
    unknown = sorted(set(names) - set(builders))
    if unknown:
        parser.error(f"--encoders {' '.join(unknown)}: with --sizes {args.sizes} choose from "
                     f"{list(builders)}")
    results = {}
    for name in tqdm(names, desc="encoders", file=sys.stderr,
                     disable=not sys.stderr.isatty()):
        torch.manual_seed(0)
        model = builders[name](args.out_dim).to(device)
        set_compiled_layers(model, args.compile, 0)
        results[name] = measure(model, batch, args.warmup, args.iters, device)
        print(f"{name}: {results[name]}", file=sys.stderr, flush=True)
    rows = [(name, f"{r['parameters']:,}", f"{r['seconds'] * 1e3:.0f}",
             f"{r['cpu_seconds'] * 1e3:.0f}", f"{r['graphs_per_s']:.1f}",
             f"{r['peak_bytes'] / 2**20:.1f}")
            for name, r in results.items()]
    print(format_table(("encoder", "parameters", "fwd+bwd ms", "CPU ms", "graphs/s",
                        "peak MiB"), rows, right=(False, True, True, True, True, True)))
    if args.json is not None:
        args.json.write_text(json.dumps({"source": source, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
