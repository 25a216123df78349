"""`python -m benchmarks.reference`: our NG-GNN, NG-T and DNG against the published code.

Two jobs, both run with a Python that imports the reference repositories (never part of
this project; see ``--help``):

* ``fixtures``: writes ``tests/fixtures/reference/<encoder>.pt`` (the reference's
  parameters, the SIRENs it read and its outputs), which the test suite compares our
  encoders' reference configurations against;
* ``time`` (the default): one training step (forward, backward, optimizer step) on 128
  SIRENs at the reference sizes, ours and the reference's alternating in this one process
  under the same allocator setting: median seconds, graphs per second, the ratio ours /
  reference, and the peak tensor memory of one step of each.

Our INR2JLS and INR-INR autoencoders against the official ones have their own command,
``python -m benchmarks.reference.jls``.

Example (reference checkouts in /work/ref, their extra dependencies in a separate
environment)::

    PYTHONPATH=/work/ref/neural-graphs:/work/ref/DNG python -m benchmarks.reference time
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks.common import format_table, memory_use
from utils.cli import HelpFormatter, non_negative_int, positive_int
from utils.memory import allocator_setting, keep_freed_memory

#: Our encoder, the module that runs it beside its reference, and that reference's folder.
ENCODERS = {"ngnn": "neural-graphs", "ngt": "neural-graphs", "dng": "DNG"}
#: Targets of issue 20: ours / reference seconds of one training step.
TARGETS = {"ngnn": 0.1, "ngt": 0.25, "dng": 1.0}
FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "reference"


def _module(name: str):
    return importlib.import_module(f"benchmarks.reference.{name}")


def _reference_dir(root: Path, name: str) -> Path:
    folder = root / ENCODERS[name]
    if not folder.is_dir():
        raise SystemExit(f"error: {folder} is not a folder; --reference-root must hold the "
                         f"checkouts {sorted(set(ENCODERS.values()))}")
    return folder


def time_encoders(names: Sequence[str], batch_size: int, warmup: int,
                  rounds: int, compile_layers: bool = True) -> list[tuple[str, ...]]:
    """One table row per encoder: median step seconds of each side, their ratio against
    the target, graphs per second and the peak tensor memory of one step
    (``compile_layers``: ours as a long training run runs it, its compilable layers
    compiled in the warm-up steps)."""
    rows = []
    for name in names:
        steps, times = _module(name).RUN.step_times(rounds, batch_size, warmup=warmup,
                                                    compile_layers=compile_layers)
        median = {side: statistics.median(values) for side, values in times.items()}
        peak = {side: memory_use(step, torch.device("cpu")).peak for side, step in steps.items()}
        ratio = median["ours"] / median["reference"]
        rows.append((name, f"{median['ours']:.3f}", f"{median['reference']:.3f}",
                     f"{ratio:.2f}x", f"<= {TARGETS[name]}x",
                     "met" if ratio <= TARGETS[name] else "missed",
                     f"{batch_size / median['ours']:.0f} / {batch_size / median['reference']:.0f}",
                     f"{peak['ours'] / 2**20:.0f} / {peak['reference'] / 2**20:.0f}"))
        print(f"{name}: ours {times['ours']}, reference {times['reference']}", file=sys.stderr,
              flush=True)
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reference",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("job", nargs="?", choices=("time", "fixtures"), default="time",
                        help="time one training step of each side, or write the fixtures")
    parser.add_argument("--encoders", nargs="+", choices=list(ENCODERS), default=list(ENCODERS),
                        help="encoders to run")
    parser.add_argument("--reference-root", type=Path, default=Path("/work/ref"),
                        help="folder holding the checkouts neural-graphs/ "
                        "(mkofinas/neural-graphs) and DNG/ (dddiowww/DNG)")
    parser.add_argument("--batch-size", type=positive_int, default=128,
                        help="SIRENs per training step")
    parser.add_argument("--warmup", type=non_negative_int, default=1,
                        help="untimed steps of each side")
    parser.add_argument("--rounds", type=positive_int, default=5,
                        help="timed steps of each side, taken in turns")
    parser.add_argument("--out", type=Path, default=FIXTURES,
                        help="folder of the fixtures (job fixtures)")
    parser.add_argument("--compile", choices=("on", "off"), default="on",
                        help="ours with the layers it offers to compile (NG-T's) compiled, "
                        "as the training loop runs a long run (--compile auto), or eager")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in args.encoders:
        folder = str(_reference_dir(args.reference_root, name))
        if folder not in sys.path:
            sys.path.append(folder)
    if args.job == "fixtures":
        args.out.mkdir(parents=True, exist_ok=True)
        for name in args.encoders:
            _module(name).make_fixture(_reference_dir(args.reference_root, name),
                                       args.out / f"{name}.pt")
            print(f"wrote {args.out / f'{name}.pt'}")
        return 0
    keep_freed_memory()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu, "
          f"{allocator_setting()}; batch {args.batch_size}, median of {args.rounds} steps "
          f"per side, taken in turns; compiled layers {args.compile}")
    rows = time_encoders(args.encoders, args.batch_size, args.warmup, args.rounds,
                         args.compile == "on")
    print(format_table(("encoder", "ours s", "reference s", "ours / ref", "target", "",
                        "graphs/s ours / ref", "peak MiB ours / ref"), rows,
                       right=(False, True, True, True, True, False, True, True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
