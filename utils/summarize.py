"""Summarize training logs: the results table and the training curves.

Usage::

    python -m utils.summarize [--log-dir log] [--out log/summary]

Reads every ``LOG_DIR/*.jsonl`` written by the training scripts and prints, per script and
side (standard, twin), the best validation accuracy (mean +/- std over seeds), the mean
training time per epoch and the twin/standard time ratio, plus the largest per-epoch train
loss gap between the twins and the standard networks of the same seed. Writes the table as
``OUT/summary.md`` and the curves (train loss, val accuracy; mean over seeds) as
``OUT/curves.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from utils.atomic import atomic_write, write_text_atomic

SIDES = ("standard", "gnn")

Run = dict[int, dict[str, Any]]  # epoch -> record


@dataclass
class SideStats:
    """Statistics of one side of one script over its seeds."""

    seeds: list[int]
    best_acc: list[float]
    epoch_time: float

    @property
    def acc_mean(self) -> float:
        return float(np.mean(self.best_acc))

    @property
    def acc_std(self) -> float:
        return float(np.std(self.best_acc, ddof=1)) if len(self.best_acc) > 1 else 0.0


def read_logs(log_dir: str | Path) -> dict[str, dict[str, dict[int, Run]]]:
    """``{script: {side: {seed: {epoch: record}}}}`` from ``log_dir/*.jsonl``.

    A later record of the same epoch replaces an earlier one; malformed lines raise
    ValueError naming the file and line.
    """
    runs: dict[str, dict[str, dict[int, Run]]] = defaultdict(lambda: defaultdict(dict))
    for path in sorted(Path(log_dir).glob("*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                script, side, seed, epoch = r["script"], r["model"], int(r["seed"]), int(
                    r["epoch"])
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{number}: not a training record ({err})") from err
            runs[script][side].setdefault(seed, {})[epoch] = r
    return {script: dict(sides) for script, sides in runs.items()}


def side_stats(seed_runs: dict[int, Run]) -> SideStats:
    """Best val accuracy per seed and mean training seconds per epoch."""
    seeds = sorted(seed_runs)
    best = [max(r["val_acc"] for r in seed_runs[s].values()) for s in seeds]
    times = [r["epoch_time"] for s in seeds for r in seed_runs[s].values()]
    return SideStats(seeds, best, float(np.mean(times)))


def loss_gap(standard: dict[int, Run], twin: dict[int, Run]) -> float:
    """Largest |train loss difference| over the (seed, epoch) pairs both sides logged."""
    gaps = [abs(standard[s][e]["train_loss"] - twin[s][e]["train_loss"])
            for s in standard.keys() & twin.keys()
            for e in standard[s].keys() & twin[s].keys()]
    return max(gaps) if gaps else math.nan


def _acc(stats: SideStats | None) -> str:
    if stats is None:
        return "-"
    return f"{stats.acc_mean:.2f} ± {stats.acc_std:.2f} (n={len(stats.seeds)})"


def _seconds(stats: SideStats | None) -> str:
    return "-" if stats is None else f"{stats.epoch_time:.2f}"


def summary_table(runs: dict[str, dict[str, dict[int, Run]]]) -> str:
    """The results table in Markdown."""
    lines = [
        "| script | standard best val acc (%) | twin best val acc (%) | standard s/epoch "
        "| twin s/epoch | twin/standard time | max train loss gap |",
        "|---|---|---|---|---|---|---|",
    ]
    for script in sorted(runs):
        sides = runs[script]
        std = side_stats(sides["standard"]) if "standard" in sides else None
        gnn = side_stats(sides["gnn"]) if "gnn" in sides else None
        ratio = f"{gnn.epoch_time / std.epoch_time:.2f}x" if std and gnn and std.epoch_time \
            else "-"
        gap = loss_gap(sides["standard"], sides["gnn"]) if std and gnn else math.nan
        lines.append(f"| {script} | {_acc(std)} | {_acc(gnn)} | {_seconds(std)} | "
                     f"{_seconds(gnn)} | {ratio} | {'-' if math.isnan(gap) else f'{gap:.2e}'} |")
    return "\n".join(lines) + "\n"


def _mean_curve(seed_runs: dict[int, Run], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``key`` over the seeds that reached each epoch."""
    values: dict[int, list[float]] = defaultdict(list)
    for run in seed_runs.values():
        for epoch, r in run.items():
            values[epoch].append(r[key])
    epochs = np.array(sorted(values))
    return epochs, np.array([np.mean(values[e]) for e in epochs])


def plot_curves(runs: dict[str, dict[str, dict[int, Run]]], path: str | Path) -> Path:
    """Train loss and val accuracy against epoch, one row per script."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scripts = sorted(runs)
    fig, axes = plt.subplots(len(scripts), 2, figsize=(11, 3.2 * len(scripts)), squeeze=False)
    styles = {"standard": ("tab:blue", "-", "standard"), "gnn": ("tab:orange", "--", "twin")}
    for row, script in zip(axes, scripts):
        for side in SIDES:
            if side not in runs[script]:
                continue
            color, style, label = styles[side]
            for ax, key in zip(row, ("train_loss", "val_acc")):
                epochs, values = _mean_curve(runs[script][side], key)
                ax.plot(epochs, values, style, color=color, label=label, marker=".")
        row[0].set(title=f"{script}: train loss", xlabel="epoch", ylabel="loss")
        row[1].set(title=f"{script}: val accuracy", xlabel="epoch", ylabel="accuracy (%)")
        for ax in row:
            ax.grid(alpha=0.3)
            ax.legend()
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table, write summary.md and curves.png; exit 1 when there are no logs."""
    parser = argparse.ArgumentParser(
        prog="python -m utils.summarize",
        description="Results table (best val accuracy mean +/- std over seeds, seconds per "
        "training epoch, twin/standard time ratio) and training curves from the .jsonl "
        "logs of the training scripts.")
    parser.add_argument("--log-dir", default="log", help="folder holding the *.jsonl logs "
                        "(default: log)")
    parser.add_argument("--out", default=None, help="output folder for summary.md and "
                        "curves.png (default: LOG_DIR/summary)")
    args = parser.parse_args(argv)
    runs = read_logs(args.log_dir)
    if not runs:
        print(f"no training logs (*.jsonl) in {args.log_dir}", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else Path(args.log_dir) / "summary"
    out.mkdir(parents=True, exist_ok=True)
    table = summary_table(runs)
    print(table, end="")
    write_text_atomic(
        out / "summary.md",
        f"# Training results ({args.log_dir})\n\nBest validation accuracy per seed, mean ± "
        "std over seeds; seconds per training epoch averaged over all epochs and seeds.\n\n"
        + table)
    plot_curves(runs, out / "curves.png")
    print(f"wrote {out / 'summary.md'} and {out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
