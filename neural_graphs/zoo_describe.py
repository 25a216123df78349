"""What a model zoo holds: its accuracies per checkpoint epoch, and how many sit at chance.

``python -m CNN_Zoo_Generate --describe DIR`` prints, per checkpoint epoch, the number of
members, the fraction within :data:`NEAR_CHANCE` (2 points) of chance (``1 / classes``),
the 10th / 50th / 90th percentiles of test accuracy and a histogram in 10-point bins; at
the last epoch it breaks the near-chance members down by optimizer, activation, train
fraction and (CNNs) BatchNorm; and it draws the histograms in ``DIR/describe.png``. It
reads ``manifest.json`` only (no weights), so it also describes an interrupted zoo (the
shards done so far).

A member within 2 points of chance has, on the balanced 10-class image sets of the zoo,
collapsed onto (nearly) one class: its accuracy says which class, not how well it learned,
and no predictor can order such members by their weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from utils import store
from utils.atomic import atomic_write

__all__ = ["NEAR_CHANCE", "PNG_NAME", "describe_zoo", "format_description",
           "plot_description"]

#: a member whose test accuracy is within this of chance (1 / classes) is "near chance"
NEAR_CHANCE = 0.02
PNG_NAME = "describe.png"
_BINS = np.linspace(0.0, 1.0, 11)  # the text histogram: 10-point bins, the last closed


def _percentiles(values: Sequence[float]) -> tuple[float, float, float]:
    if not len(values):
        return (float("nan"),) * 3
    q = np.percentile(np.asarray(values, dtype=np.float64), [10, 50, 90])
    return float(q[0]), float(q[1]), float(q[2])


def _near(values: np.ndarray, chance: float) -> np.ndarray:
    return np.abs(values - chance) <= NEAR_CHANCE + 1e-12


def _batch_norm(network: dict[str, Any]) -> bool | None:
    """Whether a CNN member's convolutions carry BatchNorm (one choice per skeleton);
    None for networks without convolution layers."""
    layers = network.get("arch", {}).get("layers")
    return bool(layers[0].get("batch_norm")) if layers else None


def describe_zoo(out: str | Path) -> dict[str, Any]:
    """The zoo in ``out`` summarised from its manifest (see the module docstring).

    Raises:
        FileNotFoundError: ``out`` holds no manifest (not a zoo, or not started).
        StoreError: the manifest is unreadable, of another kind of set, or not a zoo's.
    """
    out = Path(out)
    manifest = store.read_manifest(out, "cnn-zoo")
    try:
        config = manifest["config"]
        epochs = [int(e) for e in config["epochs"]]
        chance = 1.0 / int(config["num_classes"])
        shards = manifest["shards"]
        networks = {n["network"]: n for s in shards for n in s["networks"]}
        members = [(int(m["epoch"]), float(m["test_acc"]), m["network"])
                   for s in shards for m in s["members"]]
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
        raise store.StoreError(f"{out / store.MANIFEST} is not a readable CNN zoo manifest "
                               f"({type(err).__name__}: {err})") from None
    per_epoch = []
    for epoch in epochs:
        acc = np.asarray([a for e, a, _ in members if e == epoch], dtype=np.float64)
        counts, _ = np.histogram(acc, bins=_BINS)
        p10, median, p90 = _percentiles(acc)
        per_epoch.append({"epoch": epoch, "members": int(len(acc)),
                          "near_chance": float(_near(acc, chance).mean()) if len(acc) else
                          float("nan"),
                          "p10": p10, "median": median, "p90": p90,
                          "counts": counts.tolist(), "test_acc": acc.tolist()})
    last = max(epochs)
    final = {nid: a for e, a, nid in members if e == last}
    factors: dict[str, Callable[[dict[str, Any]], Any]] = {
        key: (lambda n, key=key: n["hparams"].get(key))
        for key in ("optimizer", "activation", "train_fraction")}
    if all(_batch_norm(n) is not None for n in networks.values()):  # ViTs: no convolutions
        factors["batch_norm"] = _batch_norm
    breakdown: dict[str, dict[str, list[int]]] = {}
    for key, factor in factors.items():
        table: dict[str, list[int]] = {}
        for nid, acc_final in final.items():
            cell = table.setdefault(str(factor(networks[nid])), [0, 0])
            cell[0] += bool(_near(np.asarray([acc_final]), chance)[0])
            cell[1] += 1
        breakdown[key] = dict(sorted(table.items()))
    return {"folder": str(out), "complete": bool(manifest.get("complete")),
            "shards_done": manifest.get("shards_done"), "groups": manifest.get("groups"),
            "family": config.get("family"), "dataset": config.get("dataset"),
            "networks": len(networks), "members": len(members),
            "diverged": sum(n.get("diverged_epoch") is not None for n in networks.values()),
            "chance": chance, "near_chance_band": NEAR_CHANCE, "last_epoch": last,
            "epochs": per_epoch, "final_near_chance_by": breakdown}


def _pct(x: float) -> str:
    return "  n/a" if x != x else f"{100 * x:5.1f}"


def format_description(desc: dict[str, Any]) -> str:
    """:func:`describe_zoo`'s summary as text (a table, one row per checkpoint epoch)."""
    state = "complete" if desc["complete"] else (
        f"INCOMPLETE, {desc['shards_done']} of {desc['groups']} shards")
    lines = [
        f"{desc['folder']}: model zoo ({state}), family {desc['family']}, {desc['dataset']}, "
        f"{desc['networks']} networks ({desc['diverged']} diverged), {desc['members']} "
        "members",
        f"test accuracy (%) per checkpoint epoch; chance {100 * desc['chance']:.1f}%, near "
        f"chance = within {100 * desc['near_chance_band']:.0f} points of it",
        "",
        "epoch members near-chance   p10 median   p90 | members per 10-point bin: "
        "0-10 10-20 ... 90-100",
    ]
    for row in desc["epochs"]:
        counts = " ".join(f"{c:5d}" for c in row["counts"])
        lines.append(f"{row['epoch']:5d} {row['members']:7d} {_pct(row['near_chance']):>10}% "
                     f"{_pct(row['p10'])} {_pct(row['median']):>6} {_pct(row['p90'])} |"
                     f"{counts}")
    lines.append("")
    parts = []
    for key, table in desc["final_near_chance_by"].items():
        cells = ", ".join(f"{value} {near}/{n}" for value, (near, n) in table.items())
        parts.append(f"  {key}: {cells}")
    lines.append(f"near chance at the last epoch ({desc['last_epoch']}), members near "
                 "chance / members:")
    lines += parts
    return "\n".join(lines)


def plot_description(desc: dict[str, Any], path: str | Path) -> Path:
    """Histograms of test accuracy, one panel per checkpoint epoch, chance band shaded;
    written as a PNG at ``path`` (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = desc["epochs"]
    cols = min(len(rows), 3)
    nrows = -(-len(rows) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 2.9 * nrows), squeeze=False,
                             sharex=True)
    chance, band = desc["chance"], desc["near_chance_band"]
    for ax, row in zip(axes.flat, rows):
        ax.axvspan(100 * (chance - band), 100 * (chance + band), color="tab:red", alpha=0.15,
                   lw=0)
        ax.hist(100 * np.asarray(row["test_acc"]), bins=np.linspace(0, 100, 51),
                color="tab:blue")
        ax.set_title(f"epoch {row['epoch']}: {row['members']} members, "
                     f"{_pct(row['near_chance']).strip()}% near chance\n"
                     f"p10 {_pct(row['p10']).strip()}, median {_pct(row['median']).strip()}, "
                     f"p90 {_pct(row['p90']).strip()}", fontsize=9)
        ax.set_xlim(0, 100)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes.flat[len(rows):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("test accuracy (%)")
    for ax in axes[:, 0]:
        ax.set_ylabel("members")
    fig.suptitle(f"{desc['folder']}: {desc['networks']} networks (shaded: within "
                 f"{100 * band:.0f} points of chance)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return path
