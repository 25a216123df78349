"""Standard networks against their message-passing twins: parameters, inference latency,
training-step time and peak memory, with twin/standard ratios and targets.

The command is ``python -m Memory_Inference_Analysis`` (``--help``); this module holds its
implementation. For each model in ``models.MODELS`` the standard network is built under a
fixed seed and its twin is ``modules.to_gnn`` of it (a deep copy: same weights), both in
eval mode, in the chosen dtype and device. Every measurement uses :mod:`benchmarks.common`.

Figures, each measured for the standard network and the twin:

- parameters: number of parameter elements.
- inference latency under ``torch.no_grad`` at each batch size: warm-up calls, then
  timed calls; mean, std and median. Default batch sizes: 1 and 128 for the MNIST MLP and
  the CWRU 1D-CNN, 1 and 32 for the CIFAR-100 networks (``--batch-size`` overrides them
  for every model). The ratio is twin median / standard median, robust to the outliers a
  shared machine produces.
- training step at the largest batch size, train mode: forward, cross-entropy,
  backward, ``SGD.step`` and ``zero_grad``.
- peak memory of inference (and of the training step) at the largest batch size:
  ``state + input + transient``, where ``state`` is the bytes the model keeps between
  calls (parameters, buffers, and the graph structures a twin caches on its first call,
  measured as the allocation its first call leaves behind) and ``transient`` is the peak
  of allocated tensor bytes above the level at the entry of one steady-state call
  (:func:`benchmarks.common.memory_use`: CUDA's ``max_memory_allocated``; on CPU the
  profiler's allocator events, tensor memory only). This mirrors CUDA's
  ``max_memory_allocated`` of the original (weights + input + work memory) while
  excluding the other model that is resident at the same time.

Standard and twin are measured alternately, one call each per iteration with the order
swapped every iteration, so drift on a shared machine hits both alike. ``--time-budget``
caps the seconds spent on one figure (at least 3 iterations are still run).

Targets (issue 6, twin/standard, float32, 2-core CPU): inference latency at the largest
batch size MLP <= 1.3, CWRU <= 2, VGG11 <= 3, ResNet-18 <= 3, ViT <= 2; at batch 1 every
model <= 3; training step <= 3; peak inference memory <= 2. They were stated for the
default batch sizes; with ``--batch-size`` the large-batch target applies to the largest
batch size above 1.

Outputs in ``--out`` (default ``log/analysis``), each written atomically: ``analysis.md``,
``analysis.csv`` and ``ratios.png`` (bar chart of the ratios with their targets). A model
whose twin cannot be built or run is reported as unavailable with the reason, the other
models are still measured, and the command exits with status 1. A figure the standard
network itself cannot give at the chosen batch size (ResNet-18's training step at batch 1:
BatchNorm on a 1x1 map) is reported as not measurable, with the reason; the rest of the
table is complete and the exit status is 0.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from benchmarks.common import (
    MIN_ITERS,
    Stats,
    format_ratio,
    format_table,
    memory_use,
    parameter_count,
    profiled,
    state_bytes,
    time_interleaved,
)
from models import MODELS, ModelSpec
from modules import to_gnn
from utils.atomic import atomic_write, write_text_atomic
from utils.cli import (
    HelpFormatter,
    checked_device,
    non_negative_float,
    non_negative_int,
    positive_int,
)
from utils.memory import allocator_setting, keep_freed_memory

MIB = 1024 ** 2
DEFAULT_BATCH_SIZES: dict[str, tuple[int, ...]] = {"mlp": (1, 128), "cwru": (1, 128)}
CIFAR_BATCH_SIZES = (1, 32)
LARGE_BATCH_TARGETS = {"mlp": 1.3, "cwru": 2.0, "vgg11": 3.0, "resnet18": 3.0, "vit": 2.0}
BATCH1_TARGET = 3.0
TRAIN_TARGET = 3.0
MEMORY_TARGET = 2.0
UNAVAILABLE = "unavailable"

CSV_FIELDS = ("model_key", "model", "figure", "batch_size", "unit", "standard_mean",
              "standard_std", "standard_median", "twin_mean", "twin_std", "twin_median",
              "ratio", "target", "met", "note")


@dataclass
class Row:
    """One figure of one model pair."""

    model_key: str
    model: str
    figure: str
    batch_size: int | None = None
    unit: str = ""
    standard: Stats | None = None
    twin: Stats | None = None
    target: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.standard is None or self.twin is None or self.standard.median == 0:
            return None
        return self.twin.median / self.standard.median

    @property
    def met(self) -> bool | None:
        ratio = self.ratio
        if self.target is None or ratio is None:
            return None
        return ratio <= self.target


@dataclass
class Settings:
    """What every measurement shares."""

    device: torch.device
    dtype: torch.dtype
    warmup: int
    iters: int
    time_budget: float = math.inf
    seed: int = 0
    batch_sizes: tuple[int, ...] | None = None
    extra: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- measuring

def _train_step(model: nn.Module, x: Tensor, y: Tensor,
                optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    def step() -> None:
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def batch_sizes_for(key: str, settings: Settings) -> tuple[int, ...]:
    """Batch sizes measured for model ``key``: the user's, else its defaults."""
    if settings.batch_sizes:
        return tuple(sorted(set(settings.batch_sizes)))
    return DEFAULT_BATCH_SIZES.get(key, CIFAR_BATCH_SIZES)


def latency_target(key: str, batch_size: int, batch_sizes: Sequence[int]) -> float | None:
    """Issue 6's latency target for this batch size, if any."""
    if batch_size == 1:
        return BATCH1_TARGET
    if batch_size == max(batch_sizes):
        return LARGE_BATCH_TARGETS.get(key)
    return None


def build_pair(spec: ModelSpec, settings: Settings) -> tuple[nn.Module, nn.Module]:
    """Standard network under the seed, and its twin with the same weights, eval mode."""
    torch.manual_seed(settings.seed)
    standard = spec.standard().to(device=settings.device, dtype=settings.dtype).eval()
    twin = to_gnn(standard).eval()
    return standard, twin


def analyse_model(key: str, spec: ModelSpec, settings: Settings) -> list[Row]:
    """All figures of one model pair; one 'unavailable' row if the twin fails."""
    def row(figure: str, **kwargs: object) -> Row:
        return Row(key, spec.name, figure, **kwargs)  # type: ignore[arg-type]

    try:
        standard, twin = build_pair(spec, settings)
    except Exception as exc:  # a missing twin must not stop the other models
        return [row(UNAVAILABLE, note=f"twin cannot be built: {type(exc).__name__}: {exc}")]
    try:
        return _measure(row, key, spec, standard, twin, settings)
    except Exception as exc:
        return [row(UNAVAILABLE, note=f"measurement failed: {type(exc).__name__}: {exc}")]


def _measure(row: Callable[..., Row], key: str, spec: ModelSpec, standard: nn.Module,
             twin: nn.Module, settings: Settings) -> list[Row]:
    device, dtype = settings.device, settings.dtype
    sizes = batch_sizes_for(key, settings)
    largest = max(sizes)
    gen = torch.Generator().manual_seed(settings.seed + 1)

    def inputs(batch: int) -> Tensor:
        return torch.randn(batch, *spec.input_shape, generator=gen, dtype=dtype).to(device)

    rows = [row("parameters", unit="count",
                standard=Stats.of([parameter_count(standard)]),
                twin=Stats.of([parameter_count(twin)]))]

    # Memory first: the twin's first call builds its graph caches, measured here.
    x = inputs(largest)
    input_bytes = x.numel() * x.element_size()
    persistent, transient, outputs = {}, {}, {}
    with torch.no_grad():
        for name, model in (("standard", standard), ("twin", twin)):
            cache = memory_use(lambda m=model: m(x), device).net
            persistent[name] = state_bytes(model) + max(cache, 0)
            transient[name] = memory_use(lambda m=model: m(x), device).peak
            outputs[name] = model(x)
    diff = (outputs["twin"] - outputs["standard"]).abs().max().item()
    rows.append(row("max |twin - standard| logits", batch_size=largest, unit="abs",
                    twin=Stats.of([diff]), note="same weights, eval mode"))
    rows.append(row("peak inference memory", batch_size=largest, unit="MiB",
                    standard=Stats.of([(persistent["standard"] + input_bytes
                                        + transient["standard"]) / MIB]),
                    twin=Stats.of([(persistent["twin"] + input_bytes
                                    + transient["twin"]) / MIB]),
                    target=MEMORY_TARGET, note="state + input + transient"))
    rows.append(row("transient inference memory", batch_size=largest, unit="MiB",
                    standard=Stats.of([transient["standard"] / MIB]),
                    twin=Stats.of([transient["twin"] / MIB]),
                    note="peak above the level at call entry"))
    rows.append(row("model state memory", unit="MiB",
                    standard=Stats.of([persistent["standard"] / MIB]),
                    twin=Stats.of([persistent["twin"] / MIB]),
                    note="parameters, buffers, cached graphs"))

    for batch in sizes:
        xb = inputs(batch)
        with torch.no_grad():
            t_std, t_twin = time_interleaved(lambda xb=xb: standard(xb),
                                             lambda xb=xb: twin(xb), device,
                                             settings.warmup, settings.iters,
                                             settings.time_budget)
        rows.append(row("inference latency", batch_size=batch, unit="ms",
                        standard=Stats.of([1e3 * t for t in t_std]),
                        twin=Stats.of([1e3 * t for t in t_twin]),
                        target=latency_target(key, batch, sizes),
                        note=f"{len(t_std)} timed runs each"))

    y = torch.randint(spec.num_classes, (largest,), generator=gen).to(device)
    steps = {}
    for name, model in (("standard", standard), ("twin", twin)):
        model.train()
        steps[name] = _train_step(model, x, y, torch.optim.SGD(model.parameters(), lr=1e-3))
    try:  # the standard network itself may not train at this batch size
        steps["standard"]()
    except Exception as exc:  # e.g. BatchNorm at batch 1 on a 1x1 map: figure, not model
        note = f"not measurable at batch {largest}: {type(exc).__name__}: {exc}"
        return rows + [row(figure, batch_size=largest, unit="ms" if i == 0 else "MiB",
                           note=note)
                       for i, figure in enumerate(("training step", "peak training memory"))]
    t_std, t_twin = time_interleaved(steps["standard"], steps["twin"], device,
                                     settings.warmup, settings.iters, settings.time_budget)
    rows.append(row("training step", batch_size=largest, unit="ms",
                    standard=Stats.of([1e3 * t for t in t_std]),
                    twin=Stats.of([1e3 * t for t in t_twin]), target=TRAIN_TARGET,
                    note=f"{len(t_std)} timed runs each; SGD, cross-entropy"))
    train_peak = {name: memory_use(steps[name], device).peak for name in steps}
    rows.append(row("peak training memory", batch_size=largest, unit="MiB",
                    standard=Stats.of([(persistent["standard"] + input_bytes
                                        + train_peak["standard"]) / MIB]),
                    twin=Stats.of([(persistent["twin"] + input_bytes
                                    + train_peak["twin"]) / MIB]),
                    note="state + input + transient of one step"))
    return rows


def run_analysis(keys: Sequence[str], settings: Settings, progress: bool = True) -> list[Row]:
    """Rows of every model in ``keys``, with a progress bar over the models."""
    rows: list[Row] = []
    bar = tqdm(keys, desc="models", unit="model", disable=not progress, file=sys.stderr)
    for key in bar:
        bar.set_postfix_str(key)
        rows.extend(analyse_model(key, MODELS[key], settings))
    return rows


def profile_twin(key: str, settings: Settings, batch_size: int, train: bool = False,
                 memory: bool = False, top: int = 15) -> str:
    """torch.profiler table of the twin's inference (or training step) over a few calls,
    sorted by self CPU time, or by self CPU memory when ``memory``."""
    spec = MODELS[key]
    _, twin = build_pair(spec, settings)
    gen = torch.Generator().manual_seed(settings.seed + 1)
    x = torch.randn(batch_size, *spec.input_shape, generator=gen,
                    dtype=settings.dtype).to(settings.device)
    if train:
        twin.train()
        y = torch.randint(spec.num_classes, (batch_size,), generator=gen).to(settings.device)
        fn = _train_step(twin, x, y, torch.optim.SGD(twin.parameters(), lr=1e-3))
    else:
        fn = lambda: twin(x)  # noqa: E731
    with torch.set_grad_enabled(train):
        for _ in range(max(settings.warmup, 1)):
            fn()
        prof = profiled(lambda: [fn() for _ in range(MIN_ITERS)], profile_memory=memory)
    sort_by = "self_cpu_memory_usage" if memory else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort_by, row_limit=top)


def profile_missed(rows: Sequence[Row], settings: Settings) -> str:
    """Profiles of the twin behind every missed target: the call that the figure times."""
    parts = []
    for r in rows:
        if r.met is not False:
            continue
        train, memory = r.figure == "training step", r.figure == "peak inference memory"
        what = "training step" if train else "inference"
        parts.append(f"== {r.model} twin, {what} at batch {r.batch_size} "
                     f"({r.figure}: {r.ratio:.2f}x > {r.target:g}x), {MIN_ITERS} calls ==\n"
                     + profile_twin(r.model_key, settings, r.batch_size or 1, train, memory))
    return "\n".join(parts)


# --------------------------------------------------------------------------- reporting

def _fmt_num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"


def _fmt_stats(stats: Stats | None, unit: str) -> str:
    if stats is None:
        return "-"
    if unit == "count":
        return f"{int(stats.median):,}"
    if stats.std == 0:
        return _fmt_num(stats.median)
    return f"{_fmt_num(stats.mean)} ± {_fmt_num(stats.std)} (med {_fmt_num(stats.median)})"


def _status(row: Row) -> str:
    if row.met is None:
        return ""
    return "met" if row.met else "NOT MET"


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


TABLE_HEADER = ("model", "figure", "batch", "unit", "standard", "twin", "twin/std",
                "target", "status", "note")


def table_cells(rows: Sequence[Row]) -> list[tuple[str, ...]]:
    """The printed table's cells, one tuple per row."""
    cells = []
    for r in rows:
        cells.append((r.model, r.figure, "" if r.batch_size is None else str(r.batch_size),
                      r.unit, _fmt_stats(r.standard, r.unit), _fmt_stats(r.twin, r.unit),
                      format_ratio(r.ratio),
                      "" if r.target is None else f"<= {r.target:g}x", _status(r), r.note))
    return cells


def format_text_table(rows: Sequence[Row], max_note: int = 100) -> str:
    """Fixed-width text table; notes cut to ``max_note`` characters (full in the files)."""
    cells = [c[:-1] + (_shorten(c[-1], max_note),) for c in table_cells(rows)]
    return format_table(TABLE_HEADER, cells)


def format_markdown(rows: Sequence[Row], settings: Settings) -> str:
    """Markdown report: settings, the table, the summary of targets."""
    out = ["# Memory and inference analysis: standard networks vs message-passing twins", ""]
    out += [f"- {k}: {v}" for k, v in settings.extra.items()]
    out += ["", "| " + " | ".join(TABLE_HEADER) + " |",
            "|" + "---|" * len(TABLE_HEADER)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in cell) + " |"
            for cell in table_cells(rows)]
    judged = [r for r in rows if r.met is not None]
    missed = [r for r in judged if not r.met]
    out += ["", f"Targets met: {len(judged) - len(missed)} of {len(judged)}."]
    out += [f"- not met: {r.model}, {r.figure}"
            + (f" (batch {r.batch_size})" if r.batch_size else "")
            + f": {r.ratio:.2f}x > {r.target:g}x" for r in missed]
    return "\n".join(out) + "\n"


def format_csv(rows: Sequence[Row]) -> str:
    """CSV, one line per row, raw numbers."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in rows:
        s, t = r.standard, r.twin
        writer.writerow([
            r.model_key, r.model, r.figure, r.batch_size if r.batch_size else "", r.unit,
            *(("", "", "") if s is None else (repr(s.mean), repr(s.std), repr(s.median))),
            *(("", "", "") if t is None else (repr(t.mean), repr(t.std), repr(t.median))),
            "" if r.ratio is None else repr(r.ratio),
            "" if r.target is None else repr(r.target),
            "" if r.met is None else str(r.met).lower(), r.note])
    return buf.getvalue()


CHART_FIGURES = ("inference latency", "training step", "peak inference memory")


def ratio_figure(rows: Sequence[Row]):  # -> matplotlib.figure.Figure (imported lazily)
    """Bar chart of the twin/standard ratios on a log axis, the targets as black bars.

    The y ticks sit at 1, 2 and 5 times powers of ten and read as plain numbers (no
    offset or scientific notation); the legend stands outside the axes, so it hides no bar.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    from matplotlib.lines import Line2D

    bars = [r for r in rows if r.figure in CHART_FIGURES and r.ratio is not None]
    models = list(dict.fromkeys(r.model for r in rows))

    def label(r: Row) -> str:
        # The batch sizes differ between models: small (1) and large (> 1) batch.
        if r.figure == "inference latency":
            return f"latency, batch {'1' if r.batch_size == 1 else '>1'}"
        return r.figure

    order = sorted(dict.fromkeys((CHART_FIGURES.index(r.figure), r.batch_size != 1, label(r))
                                 for r in bars))
    names = list(dict.fromkeys(name for *_, name in order))
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(models) + 2) + 2.2, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, name in enumerate(names):
        xs, ys, targets = [], [], []
        for i, model in enumerate(models):
            for r in bars:
                if r.model == model and label(r) == name:
                    xs.append(i + (j - (len(names) - 1) / 2) * width)
                    ys.append(r.ratio)
                    targets.append(r.target)
        ax.bar(xs, ys, width=width, label=name, color=colors[j % len(colors)])
        for x, target in zip(xs, targets):
            if target is not None:
                ax.hlines(target, x - width / 2, x + width / 2, colors="black", linewidth=2)
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_yscale("log")
    values = [r.ratio for r in bars] + [r.target for r in bars if r.target is not None] + [1.0]
    ax.set_ylim(min(values) / 1.5, max(values) * 1.5)
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlim(-0.5, len(models) - 0.5)
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels(models, rotation=15)
    ax.set_ylabel("twin / standard")
    ax.set_title("Message-passing twin vs standard network")
    for i, model in enumerate(models):
        if not any(r.model == model for r in bars):
            ax.text(i, 1.0, UNAVAILABLE, ha="center", va="bottom", fontsize=8)
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="black", linewidth=2, label="target"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              borderaxespad=0.0)
    fig.tight_layout()
    return fig


def plot_ratios(rows: Sequence[Row], path: Path) -> None:
    """Write :func:`ratio_figure` of ``rows`` to ``path`` as PNG, atomically."""
    import matplotlib.pyplot as plt

    fig = ratio_figure(rows)
    try:
        with atomic_write(path) as f:
            fig.savefig(f, format="png", dpi=120)
    finally:
        plt.close(fig)


def write_outputs(rows: Sequence[Row], settings: Settings, out: Path) -> list[Path]:
    """Write analysis.md, analysis.csv and ratios.png into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "analysis.md", out / "analysis.csv", out / "ratios.png"]
    write_text_atomic(paths[0], format_markdown(rows, settings))
    write_text_atomic(paths[1], format_csv(rows))
    plot_ratios(rows, paths[2])
    return paths


# --------------------------------------------------------------------------- entry point

def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``python -m Memory_Inference_Analysis``."""
    parser = argparse.ArgumentParser(
        prog="python -m Memory_Inference_Analysis",
        description="Compare every standard network with its message-passing twin: "
        "parameters, inference latency, training-step time, peak memory; print a table "
        "with twin/standard ratios and the issue's targets, and write analysis.md, "
        "analysis.csv and ratios.png.",
        epilog="Exit status 0, or 1 when a model's twin cannot be built or measured (its "
        "row says why; the other models are still measured and the files written). A "
        "figure the standard network cannot give at the batch size (ResNet-18's training "
        "step at batch 1) is reported as not measurable, with the reason. "
        "Each timed figure stops after --time-budget seconds (3 runs at least).",
        formatter_class=HelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS),
                        metavar="MODEL", help=f"models to analyse, from {sorted(MODELS)}")
    parser.add_argument("--batch-size", nargs="+", type=positive_int, default=None,
                        help="batch sizes for every model (default: 1 128 for mlp and "
                        "cwru, 1 32 for the CIFAR-100 networks); memory and training "
                        "step use the largest")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="parameter and input dtype")
    parser.add_argument("--warmup", type=non_negative_int, default=3,
                        help="warm-up calls of each model")
    parser.add_argument("--iters", type=positive_int, default=50,
                        help="timed calls of each model, per figure")
    parser.add_argument("--time-budget", type=non_negative_float, default=20.0,
                        help="seconds after which a figure stops timing (at least "
                        f"{MIN_ITERS} runs are kept)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and inputs")
    parser.add_argument("--profile", action="store_true",
                        help="after the table, print a torch.profiler table (self CPU "
                        "time) of the twin's call behind each missed target")
    parser.add_argument("--out", type=Path, default=Path("log/analysis"),
                        help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):
        return "n/a"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the analysis, print the table, write the outputs; 0 on success, 1 when a
    model's twin is unavailable."""
    parser = build_parser()
    args = parser.parse_args(argv)
    device = checked_device(parser, args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # no page faults for the tensors each timed step reallocates
    dtype = getattr(torch, args.dtype)
    settings = Settings(device=device, dtype=dtype, warmup=args.warmup, iters=args.iters,
                        time_budget=args.time_budget, seed=args.seed,
                        batch_sizes=tuple(args.batch_size) if args.batch_size else None)
    hardware = (torch.cuda.get_device_name(device) if device.type == "cuda"
                else platform.processor() or platform.machine())
    settings.extra = {
        "command": "python -m Memory_Inference_Analysis "
                   + " ".join(sys.argv[1:] if argv is None else argv),
        "date (UTC)": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "device": f"{device} ({hardware})",
        "torch": torch.__version__, "threads": str(torch.get_num_threads()),
        "allocator": allocator_setting(),
        "dtype": args.dtype, "warm-up / timed runs": f"{args.warmup} / <= {args.iters} "
        f"(time budget {args.time_budget:g} s per figure)",
        "ratio": "twin median / standard median; targets from issue 6",
    }
    models = list(dict.fromkeys(args.models))
    load_start = _load_average()
    rows = run_analysis(models, settings, progress=not args.no_progress)
    # Other processes on the machine skew timings: the load says how much.
    settings.extra["load average (1 min), start / end"] = f"{load_start} / {_load_average()}"
    print(format_text_table(rows))
    paths = write_outputs(rows, settings, args.out)
    print("wrote " + ", ".join(str(p) for p in paths))
    if args.profile:
        print("\n" + profile_missed(rows, settings))
    unavailable = [r.model for r in rows if r.figure == UNAVAILABLE]
    if unavailable:
        print(f"unavailable: {', '.join(unavailable)}", file=sys.stderr)
        return 1
    return 0
