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
    assert "20.00 ± 0.00 (n=1)" in vit and vit.count("| - ") >= 3


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
