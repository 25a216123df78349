"""Summarize training logs: the results tables and the training curves.

Usage::

    python -m utils.summarize [--log-dir log [log2 ...]] [--out log/summary]

Reads every ``LOG_DIR/*.jsonl`` written by the training loop (:mod:`utils.Train_Test`).

* Twin scripts (sides ``standard`` and ``gnn``): one row per script with the best
  validation accuracy per side (mean +/- std over seeds), the mean training time per epoch,
  the twin/standard time ratio and the largest per-epoch train loss gap between the twins
  and the standard networks of the same seed.
* Any other script (sides such as encoders): one table per script, one row per side, with
  the best validation value of the metric that picked its checkpoints and the final test
  metrics (``test_acc``, ``test_mse``, ``kendall_tau``, ``r2``, ...), mean +/- std over seeds.

Writes the tables as ``OUT/summary.md`` and the curves (train loss, train accuracy where
logged, and the validation metric; mean over seeds; whole-number epoch ticks, no offset
notation, legends outside the data) as ``OUT/curves.png``. Several folders (an ablation:
one folder per variant) are compared in one table and one figure, each side named
``<folder>/<side>``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from utils.atomic import atomic_write, write_text_atomic

SIDES = ("standard", "gnn")
DEFAULT_METRIC = "val_acc"

Run = dict[int, dict[str, Any]]  # epoch -> record
Logs = dict[str, dict[str, dict[int, Run]]]  # script -> side -> seed -> run
Finals = dict[str, dict[str, dict[int, dict[str, Any]]]]  # script -> side -> seed -> record


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = float(np.mean(values))
    return mean, float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


@dataclass
class SideStats:
    """Statistics of one side of one script over its seeds."""

    seeds: list[int]
    best_acc: list[float]
    epoch_time: float
    metric: str = DEFAULT_METRIC

    @property
    def acc_mean(self) -> float:
        return _mean_std(self.best_acc)[0]

    @property
    def acc_std(self) -> float:
        return _mean_std(self.best_acc)[1]


def _records(log_dir: str | Path) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    for path in sorted(Path(log_dir).glob("*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                record["seed"], record["epoch"] = int(record["seed"]), int(record["epoch"])
                if not isinstance(record["script"], str) or not isinstance(
                        record["model"], str):
                    raise TypeError("'script' and 'model' must be strings")
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{number}: not a training record ({err})") from err
            yield path, number, record


def read_logs(log_dir: str | Path) -> Logs:
    """``{script: {side: {seed: {epoch: record}}}}`` of the per-epoch records of
    ``log_dir/*.jsonl`` (final test records are left to :func:`read_finals`).

    A later record of the same epoch replaces an earlier one; malformed lines raise
    ValueError naming the file and line.
    """
    runs: Logs = defaultdict(lambda: defaultdict(dict))  # type: ignore[assignment]
    for _, _, r in _records(log_dir):
        if not r.get("final"):
            runs[r["script"]][r["model"]].setdefault(r["seed"], {})[r["epoch"]] = r
    return {script: dict(sides) for script, sides in runs.items()}


def read_finals(log_dir: str | Path) -> Finals:
    """``{script: {side: {seed: final record}}}``: the test results of finished runs."""
    finals: Finals = defaultdict(lambda: defaultdict(dict))  # type: ignore[assignment]
    for _, _, r in _records(log_dir):
        if r.get("final"):
            finals[r["script"]][r["model"]][r["seed"]] = r
    return {script: dict(sides) for script, sides in finals.items()}


def read_folders(log_dirs: Sequence[str | Path]) -> tuple[Logs, Finals]:
    """:func:`read_logs` and :func:`read_finals` of one folder, or of several with each
    side renamed ``<folder name>/<side>`` so that the variants of an ablation stand side by
    side."""
    if len(log_dirs) == 1:
        return read_logs(log_dirs[0]), read_finals(log_dirs[0])
    names = [Path(d).name for d in log_dirs]
    if len(set(names)) != len(names):
        raise ValueError(f"the folders must have distinct names, got {names}")
    runs: Logs = defaultdict(dict)  # type: ignore[assignment]
    finals: Finals = defaultdict(dict)  # type: ignore[assignment]
    for name, folder in zip(names, log_dirs):
        for merged, read in ((runs, read_logs), (finals, read_finals)):
            for script, sides in read(folder).items():
                for side, seeds in sides.items():
                    merged[script][f"{name}/{side}"] = seeds
    return dict(runs), dict(finals)


def selection_metric(seed_runs: dict[int, Run]) -> str:
    """The record key whose validation value picked the checkpoints (``val_acc`` for logs
    written before records named it)."""
    for run in seed_runs.values():
        for record in run.values():
            return str(record.get("best_metric", DEFAULT_METRIC))
    return DEFAULT_METRIC


def _lower_is_better(metric: str) -> bool:
    return any(word in metric for word in ("loss", "mse", "error"))


def side_stats(seed_runs: dict[int, Run]) -> SideStats:
    """Best validation value per seed (of the metric that picked the checkpoints: highest,
    or lowest for losses and errors) and mean training seconds per epoch."""
    seeds = sorted(seed_runs)
    metric = selection_metric(seed_runs)
    pick = min if _lower_is_better(metric) else max
    best = []
    for s in seeds:
        values = [r[metric] for r in seed_runs[s].values()
                  if isinstance(r.get(metric), (int, float)) and not math.isnan(r[metric])]
        best.append(pick(values) if values else math.nan)
    times = [r["epoch_time"] for s in seeds for r in seed_runs[s].values()]
    return SideStats(seeds, best, float(np.mean(times)), metric)


def loss_gap(standard: dict[int, Run], twin: dict[int, Run]) -> float:
    """Largest |train loss difference| over the (seed, epoch) pairs both sides logged."""
    gaps = [abs(standard[s][e]["train_loss"] - twin[s][e]["train_loss"])
            for s in standard.keys() & twin.keys()
            for e in standard[s].keys() & twin[s].keys()]
    return max(gaps) if gaps else math.nan


def _mean_pm_std(mean: float, std: float, n: int, digits: int) -> str:
    """``mean ± std (n=N)``; one seed has no spread to show: ``mean (n=1)``."""
    if n == 1:
        return f"{mean:.{digits}f} (n=1)"
    return f"{mean:.{digits}f} ± {std:.{digits}f} (n={n})"


def _acc(stats: SideStats | None) -> str:
    if stats is None:
        return "-"
    return _mean_pm_std(stats.acc_mean, stats.acc_std, len(stats.seeds), 2)


def _seconds(stats: SideStats | None) -> str:
    return "-" if stats is None else f"{stats.epoch_time:.2f}"


def is_twin_script(sides: dict[str, Any]) -> bool:
    """Whether a script's sides are the twins' (``standard`` and/or ``gnn``)."""
    return set(sides) <= set(SIDES)


def summary_table(runs: Logs) -> str:
    """The twin table in Markdown (scripts with sides standard / gnn only)."""
    lines = [
        "| script | standard best val acc (%) | twin best val acc (%) | standard s/epoch "
        "| twin s/epoch | twin/standard time | max train loss gap |",
        "|---|---|---|---|---|---|---|",
    ]
    for script in sorted(runs):
        sides = runs[script]
        if not is_twin_script(sides):
            continue
        std = side_stats(sides["standard"]) if "standard" in sides else None
        gnn = side_stats(sides["gnn"]) if "gnn" in sides else None
        ratio = f"{gnn.epoch_time / std.epoch_time:.2f}x" if std and gnn and std.epoch_time \
            else "-"
        gap = loss_gap(sides["standard"], sides["gnn"]) if std and gnn else math.nan
        lines.append(f"| {script} | {_acc(std)} | {_acc(gnn)} | {_seconds(std)} | "
                     f"{_seconds(gnn)} | {ratio} | {'-' if math.isnan(gap) else f'{gap:.2e}'} |")
    return "\n".join(lines) + "\n"


def _format(values: Sequence[float]) -> str:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return "-"
    mean, std = _mean_std(finite)
    digits = 2 if max(abs(mean), std) >= 1 else 4
    return _mean_pm_std(mean, std, len(finite), digits)


def side_tables(runs: Logs, finals: Finals) -> str:
    """One Markdown table per script whose sides are not the twins': a row per side with
    the best validation metric and each final test metric, mean ± std over seeds."""
    out = []
    for script in sorted(set(runs) | set(finals)):
        sides = runs.get(script, {})
        if sides and is_twin_script(sides) and script not in finals:
            continue
        script_finals = finals.get(script, {})
        metric_keys: list[str] = []
        for records in script_finals.values():
            for record in records.values():
                for key in record.get("final_metrics", []):
                    if key not in metric_keys:
                        metric_keys.append(key)
        metric = next((selection_metric(s) for s in sides.values()), DEFAULT_METRIC)
        head = ["side", f"best {metric}", *metric_keys, "s/epoch"]
        lines = [f"**{script}**", "", "| " + " | ".join(head) + " |",
                 "|" + "---|" * len(head)]
        for side in sorted(set(sides) | set(script_finals)):
            stats = side_stats(sides[side]) if side in sides else None
            seeds = script_finals.get(side, {})
            cells = [side, _format(stats.best_acc) if stats else "-"]
            cells += [_format([r.get(key, math.nan) for r in seeds.values()])
                      for key in metric_keys]
            cells.append(_seconds(stats))
            lines.append("| " + " | ".join(cells) + " |")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def _mean_curve(seed_runs: dict[int, Run], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``key`` over the seeds that reached each epoch."""
    values: dict[int, list[float]] = defaultdict(list)
    for run in seed_runs.values():
        for epoch, r in run.items():
            if key in r:
                values[epoch].append(r[key])
    epochs = np.array(sorted(values))
    return epochs, np.array([np.mean(values[e]) for e in epochs])


#: Loss and error panels are zoomed on each curve from epoch ``len // SETTLED_FROM`` on.
SETTLED_FROM = 4

_TWIN_STYLES = {"standard": ("tab:blue", "-", "standard"), "gnn": ("tab:orange", "--", "twin")}


def draw_curves(runs: Logs) -> Any:
    """The figure of :func:`plot_curves`: per script, train loss and the validation metric
    that picked the checkpoints against epoch, one line per side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    scripts = sorted(runs)
    panels = {script: _panels(runs[script]) for script in scripts}
    columns = max(len(keys) for keys in panels.values())
    fig, axes = plt.subplots(len(scripts), columns, figsize=(6 * columns, 3.2 * len(scripts)),
                             squeeze=False)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, script in zip(axes, scripts):
        sides, keys = runs[script], panels[script]
        for ax in row[len(keys):]:
            fig.delaxes(ax)
        row = row[:len(keys)]
        ordered = [s for s in SIDES if s in sides] + sorted(set(sides) - set(SIDES))
        settled: dict[str, list[np.ndarray]] = defaultdict(list)
        for index, side in enumerate(ordered):
            color, style, label = _TWIN_STYLES.get(
                side, (palette[index % len(palette)], "-", side))
            for ax, key in zip(row, keys):
                epochs, values = _mean_curve(sides[side], key)
                ax.plot(epochs, values, style, color=color, label=label, marker=".")
                settled[key].append(values[len(values) // SETTLED_FROM:])
        for ax, key in zip(row, keys):
            if _lower_is_better(key):
                _zoom_on(ax, np.concatenate(settled[key]))
            unit = " (%)" if key.endswith("_acc") else ""
            what = key.removeprefix("val_").removeprefix("train_").replace("_", " ")
            ax.set(title=f"{script}: {key.replace('_', ' ')}", xlabel="epoch",
                   ylabel=f"{what}{unit}")
        epochs = sorted({e for runs_ in sides.values() for run in runs_.values() for e in run})
        for ax in row:
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if len(epochs) == 1:  # one point: autoscale would span +-5% of it in fractions
                ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
            formatter = ScalarFormatter(useOffset=False)
            formatter.set_scientific(False)
            ax.yaxis.set_major_formatter(formatter)
        # Outside the plotting area, so it never covers a curve.
        row[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def _zoom_on(ax: Any, values: np.ndarray) -> None:
    """Fit the y-axis of a loss or error panel to ``values`` (the curves after their
    first epochs): the early drop, often ten times the later values, would otherwise
    flatten the differences the panel is drawn for; the early points run off the top."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return
    low, high = float(values.min()), float(values.max())
    # At least 1% of the value: curves 1e-9 apart must not fill the panel.
    margin = max(0.05 * (high - low), 0.01 * abs(high)) or 0.05
    ax.set_ylim(low - margin, high + margin)


def _panels(sides: dict[str, dict[int, Run]]) -> tuple[str, ...]:
    """The curves of one script: train loss, the train accuracy when the records carry it
    (an accuracy metric picked the checkpoints), and the metric that picked them."""
    metric = selection_metric(next(iter(sides.values())))
    train = f"train_{metric.removeprefix('val_')}"
    logged = any(train in record for seeds in sides.values() for run in seeds.values()
                 for record in run.values())
    return ("train_loss", train, metric) if metric.endswith("_acc") and logged \
        else ("train_loss", metric)


def plot_curves(runs: Logs, path: str | Path) -> Path:
    """Write :func:`draw_curves` as a PNG at ``path`` (atomically)."""
    import matplotlib.pyplot as plt

    fig = draw_curves(runs)
    path = Path(path)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Print the tables, write summary.md and curves.png; exit 1 when there are no logs."""
    parser = argparse.ArgumentParser(
        prog="python -m utils.summarize",
        description="Results tables (twin scripts: best val accuracy mean +/- std over "
        "seeds, seconds per training epoch, twin/standard time ratio; other scripts: one "
        "row per side with the best validation metric and the final test metrics) and "
        "training curves from the .jsonl logs of the training scripts.")
    parser.add_argument("--log-dir", nargs="+", default=["log"],
                        help="folder holding the *.jsonl logs; several folders (one per "
                        "variant of an ablation) are compared, each side named "
                        "<folder>/<side> (default: log)")
    parser.add_argument("--out", default=None, help="output folder for summary.md and "
                        "curves.png (default: LOG_DIR/summary, with several folders the "
                        "first one's)")
    args = parser.parse_args(argv)
    try:
        runs, finals = read_folders(args.log_dir)
    except ValueError as err:
        parser.error(str(err))
    folders = ", ".join(args.log_dir)
    if not runs:
        print(f"no training logs (*.jsonl) in {folders}", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else Path(args.log_dir[0]) / "summary"
    out.mkdir(parents=True, exist_ok=True)
    tables = []
    if any(is_twin_script(sides) for sides in runs.values()):
        tables.append(summary_table(runs))
    others = side_tables(runs, finals)
    if others:
        tables.append(others)
    text = "\n".join(tables)
    print(text, end="")
    write_text_atomic(
        out / "summary.md",
        f"# Training results ({folders})\n\nBest validation value per seed, mean ± "
        "std over seeds; final test metrics of the best checkpoint, mean ± std over seeds; "
        "seconds per training epoch averaged over all epochs and seeds.\n\n" + text)
    plot_curves(runs, out / "curves.png")
    print(f"wrote {out / 'summary.md'} and {out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
