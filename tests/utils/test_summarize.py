"""Tests of utils.summarize on generated training logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from utils import summarize


def write_run(log_dir: Path, script: str, side: str, seed: int, accs: list[float],
              seconds: float, loss_offset: float = 0.0) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for epoch, acc in enumerate(accs, 1):
        lines.append(json.dumps({
            "script": script, "run": f"{script}_{side}_seed{seed}", "model": side,
            "seed": seed, "epoch": epoch, "epochs": len(accs),
            "train_loss": 1.0 / epoch + loss_offset, "train_acc": acc, "val_loss": 0.5,
            "val_acc": acc, "best_val_acc": max(accs[:epoch]), "lr": 0.1,
            "epoch_time": seconds, "val_time": 0.1}))
    (log_dir / f"{script}_{side}_seed{seed}.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture
def logs(tmp_path) -> Path:
    log_dir = tmp_path / "log"
    write_run(log_dir, "CWRU_1DCNN_Train", "standard", 0, [50.0, 90.0, 80.0], 2.0)
    write_run(log_dir, "CWRU_1DCNN_Train", "standard", 1, [60.0, 94.0], 4.0)
    write_run(log_dir, "CWRU_1DCNN_Train", "gnn", 0, [50.0, 90.0, 80.0], 6.0, 1e-6)
    write_run(log_dir, "CWRU_1DCNN_Train", "gnn", 1, [60.0, 94.0], 12.0)
    write_run(log_dir, "CIFAR100_ViT_Train", "standard", 0, [10.0, 20.0], 1.0)
    return log_dir


def test_table_values(logs):
    runs = summarize.read_logs(logs)
    assert set(runs) == {"CWRU_1DCNN_Train", "CIFAR100_ViT_Train"}
    std = summarize.side_stats(runs["CWRU_1DCNN_Train"]["standard"])
    assert std.best_acc == [90.0, 94.0]
    assert std.acc_mean == pytest.approx(92.0)
    assert std.acc_std == pytest.approx(2 ** 0.5 * 2)  # sample std of 90, 94
    assert std.epoch_time == pytest.approx((2 * 3 + 4 * 2) / 5)
    gap = summarize.loss_gap(runs["CWRU_1DCNN_Train"]["standard"],
                             runs["CWRU_1DCNN_Train"]["gnn"])
    assert gap == pytest.approx(1e-6)
    table = summarize.summary_table(runs)
    row = next(line for line in table.splitlines() if line.startswith("| CWRU"))
    assert "92.00 ± 2.83 (n=2)" in row and "3.00x" in row and "1.00e-06" in row
    vit = next(line for line in table.splitlines() if line.startswith("| CIFAR100_ViT"))
    assert "20.00 (n=1)" in vit and vit.count("| - ") >= 3


def test_command_line_writes_markdown_and_png(logs, tmp_path, capsys):
    out = tmp_path / "summary"
    assert summarize.main(["--log-dir", str(logs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| script |" in printed and "CWRU_1DCNN_Train" in printed
    assert "| CWRU_1DCNN_Train |" in (out / "summary.md").read_text()
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_default_out_and_empty_dir(logs, tmp_path, capsys):
    assert summarize.main(["--log-dir", str(logs)]) == 0
    assert (logs / "summary" / "summary.md").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert summarize.main(["--log-dir", str(empty)]) == 1
    assert "no training logs" in capsys.readouterr().err


def test_bad_line_is_named(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"script": "s"}\n')
    with pytest.raises(ValueError, match=r"x\.jsonl:1"):
        summarize.read_logs(tmp_path)


def write_encoder_run(log_dir: Path, script: str, side: str, seed: int, val_accs: list[float],
                      final: dict[str, float]) -> None:
    """Per-epoch records then the final record, as utils.Train_Test writes a job's runs."""
    log_dir.mkdir(parents=True, exist_ok=True)
    base = {"script": script, "run": f"{script}_{side}_seed{seed}", "model": side,
            "seed": seed, "epochs": len(val_accs), "best_metric": "val_acc"}
    lines = [json.dumps({**base, "epoch": e, "train_loss": 1.0 / e, "val_loss": 0.5,
                         "val_acc": acc, "best_val_acc": max(val_accs[:e]), "lr": 1e-3,
                         "epoch_time": 3.0, "val_time": 0.5})
             for e, acc in enumerate(val_accs, 1)]
    lines.append(json.dumps({**base, "epoch": len(val_accs), "final": True,
                             "best_epoch": 1, "final_metrics": list(final), **final}))
    (log_dir / f"{script}_{side}_seed{seed}.jsonl").write_text("\n".join(lines) + "\n")


def test_encoder_table_has_a_row_per_side_with_final_test_metrics(logs, tmp_path, capsys):
    script = "MNIST_INR_Classification_Train"
    write_encoder_run(logs, script, "ngnn", 0, [80.0, 90.0], {"test_acc": 91.0})
    write_encoder_run(logs, script, "ngnn", 1, [85.0, 88.0], {"test_acc": 93.0})
    write_encoder_run(logs, script, "ngt", 0, [70.0, 75.0], {"test_acc": 76.5})
    write_encoder_run(logs, "CNN_Generalization_Train", "dng", 0, [0.0], {
        "kendall_tau": 0.912345, "r2": 0.5, "test_mse": 0.0123})
    runs, finals = summarize.read_logs(logs), summarize.read_finals(logs)
    assert sorted(runs[script]["ngnn"][0]) == [1, 2]  # the final record is no epoch
    assert runs[script]["ngnn"][0][2]["val_acc"] == 90.0
    assert finals[script]["ngt"][0]["test_acc"] == 76.5
    twins = summarize.summary_table(runs)
    assert script not in twins and "| CWRU_1DCNN_Train |" in twins
    tables = summarize.side_tables(runs, finals)
    rows = {line.split(" | ")[0]: line for line in tables.splitlines()
            if line.startswith("| ng")}
    assert "92.00 ± 1.41 (n=2)" in rows["| ngnn"]  # test_acc of 91 and 93
    assert "89.00 ± 1.41 (n=2)" in rows["| ngnn"]  # best val acc of 90 and 88
    assert "76.50 (n=1)" in rows["| ngt"]
    assert "| side | best val_acc | test_acc | s/epoch |" in tables
    assert "| side | best val_acc | kendall_tau | r2 | test_mse | s/epoch |" in tables
    assert "0.9123 (n=1)" in tables
    assert summarize.main(["--log-dir", str(logs), "--out", str(tmp_path / "s")]) == 0
    assert "**MNIST_INR_Classification_Train**" in (tmp_path / "s" / "summary.md").read_text()


def test_curves_have_whole_epoch_ticks_no_offset_and_legends_off_the_data(tmp_path):
    import matplotlib.pyplot as plt

    log_dir = tmp_path / "log"
    # Losses 1e-9 apart: an offset axis would draw them as far apart as 1 and 2.
    write_run(log_dir, "CWRU_1DCNN_Train", "standard", 0, [50.0, 90.0, 80.0], 2.0)
    write_run(log_dir, "CWRU_1DCNN_Train", "gnn", 0, [50.0, 90.0, 80.0], 2.0, 1e-9)
    write_encoder_run(log_dir, "MNIST_INR_Classification_Train", "ngnn", 0, [80.0, 90.0],
                      {"test_acc": 91.0})
    flat = [{"script": "Flat_Train", "model": "standard", "seed": 0, "epoch": e,
             "train_loss": 0.25 + e * 1e-9, "val_acc": 50.0, "epoch_time": 1.0}
            for e in (1, 2, 3)]
    (log_dir / "flat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in flat))
    fig = summarize.draw_curves(summarize.read_logs(log_dir))
    try:
        fig.canvas.draw()
        for ax in fig.axes:
            low, high = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if low <= t <= high]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
            assert ax.yaxis.get_major_formatter().get_offset() == ""
            assert ax.xaxis.get_major_formatter().get_offset() == ""
            box = ax.get_window_extent()
            for legend in [a.get_legend() for a in fig.axes if a.get_legend()]:
                assert not legend.get_window_extent().overlaps(box)
        assert sum(a.get_legend() is not None for a in fig.axes) == 3  # one per script
    finally:
        plt.close(fig)


def test_one_epoch_run_has_whole_epoch_ticks_and_no_spread_for_one_seed(tmp_path, capsys):
    """A one-epoch run used to get ticks at 0.945, 0.960, ... and a ``± 0.00 (n=1)``."""
    import matplotlib.pyplot as plt

    log_dir = tmp_path / "log"
    write_encoder_run(log_dir, "MNIST_INR_Classification_Train", "dng", 0, [80.0],
                      {"test_acc": 81.0})
    fig = summarize.draw_curves(summarize.read_logs(log_dir))
    try:
        fig.canvas.draw()
        for ax in fig.axes:
            low, high = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if low <= t <= high]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
            assert 1.0 in ticks
    finally:
        plt.close(fig)
    assert summarize.main(["--log-dir", str(log_dir), "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "81.00 (n=1)" in out and "±" not in out.split("**")[-1].split("wrote")[0]


def test_several_folders_are_an_ablation_in_one_table_and_one_figure(tmp_path, capsys):
    import matplotlib.pyplot as plt

    script = "MNIST_INR_Classification_Train"
    base, augment = tmp_path / "base", tmp_path / "augment"
    write_encoder_run(base, script, "dng", 0, [60.0, 70.0], {"test_acc": 71.0})
    write_encoder_run(augment, script, "dng", 0, [20.0, 25.0], {"test_acc": 23.0})
    for folder, accs in ((base, [65.0, 80.0]), (augment, [15.0, 20.0])):
        path = folder / f"{script}_dng_seed0.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()]
        for record, acc in zip(records, accs):
            record["train_acc"] = acc
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    runs, finals = summarize.read_folders([base, augment])
    assert set(runs[script]) == set(finals[script]) == {"base/dng", "augment/dng"}
    fig = summarize.draw_curves(runs)
    try:
        titles = [ax.get_title() for ax in fig.axes]
        assert titles == [f"{script}: train loss", f"{script}: train acc",
                          f"{script}: val acc"]
        assert [len(ax.get_lines()) for ax in fig.axes] == [2, 2, 2]
    finally:
        plt.close(fig)
    out = tmp_path / "summary"
    assert summarize.main(["--log-dir", str(base), str(augment), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "base/dng" in printed and "augment/dng" in printed and "71.00" in printed
    assert (out / "curves.png").is_file()
    same = tmp_path / "other" / "base"
    write_encoder_run(same, script, "dng", 0, [1.0], {"test_acc": 1.0})
    with pytest.raises(SystemExit):
        summarize.main(["--log-dir", str(base), str(same)])


def test_loss_and_error_panels_zoom_on_the_settled_curves(tmp_path):
    """The first epochs' loss (ten times the later values) no longer flattens the late
    differences; accuracy panels keep their whole range."""
    import matplotlib.pyplot as plt

    log_dir = tmp_path / "log"
    script = "MNIST_INR_Dilation_Train"
    for side, late in (("dng", 0.030), ("ngnn", 0.032)):
        mse = [0.09, 0.06] + [late + 0.001 / e for e in range(3, 13)]
        records = [{"script": script, "model": side, "seed": 0, "epoch": e,
                    "train_loss": m, "val_mse": m + 0.001, "best_val_mse": min(mse[:e]),
                    "best_metric": "val_mse", "epoch_time": 1.0} for e, m in enumerate(mse, 1)]
        (log_dir / side).mkdir(parents=True, exist_ok=True)
        (log_dir / side / f"{script}_{side}_seed0.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in records))
    runs, _ = summarize.read_folders([log_dir / "dng", log_dir / "ngnn"])
    fig = summarize.draw_curves(runs)
    try:
        for ax in fig.axes:
            low, high = ax.get_ylim()
            settled = [y for line in ax.get_lines() for y in line.get_ydata()[3:]]
            assert low <= min(settled) and max(settled) <= high
            assert high < 0.06, (ax.get_title(), high)  # the first epochs run off the top
            assert high - low < 0.01
    finally:
        plt.close(fig)
    fig = summarize.draw_curves(summarize.read_logs(_accuracy_run(tmp_path)))
    try:
        accuracy = [ax for ax in fig.axes if ax.get_title().endswith("val acc")][0]
        low, high = accuracy.get_ylim()
        assert low <= 10.0 and high >= 90.0
    finally:
        plt.close(fig)


def _accuracy_run(tmp_path: Path) -> Path:
    log_dir = tmp_path / "accuracy"
    write_run(log_dir, "CWRU_1DCNN_Train", "standard", 0, [10.0] + [90.0] * 11, 2.0)
    return log_dir
