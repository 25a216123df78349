"""Tests of ``python -m Memory_Inference_Analysis`` (benchmarks.model_pairs): targets,
unavailable twins, the chart, and an end-to-end run. The measurement helpers themselves
are tested in tests/benchmarks."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib
import pytest
import torch

import Memory_Inference_Analysis as mia
from benchmarks import model_pairs as pairs
from benchmarks.common import Stats

matplotlib.use("Agg")

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[1]


def test_command_is_the_model_pairs_benchmark() -> None:
    assert mia.main is pairs.main and mia.build_parser is pairs.build_parser


def test_targets() -> None:
    assert pairs.latency_target("mlp", 128, (1, 128)) == 1.3
    assert pairs.latency_target("vgg11", 32, (1, 32)) == 3.0
    assert pairs.latency_target("vit", 1, (1, 32)) == 3.0
    assert pairs.latency_target("cwru", 8, (1, 8, 128)) is None
    row = pairs.Row("k", "m", "f", standard=Stats.of([2.0]), twin=Stats.of([5.0]),
                    target=2.0)
    assert row.ratio == 2.5 and row.met is False


def _broken_to_gnn(model: torch.nn.Module) -> torch.nn.Module:
    raise TypeError("no twin for this layer")


def test_unbuildable_twin_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pairs, "to_gnn", _broken_to_gnn)
    settings = pairs.Settings(device=CPU, dtype=torch.float32, warmup=0, iters=1,
                              time_budget=0.0)
    rows = pairs.analyse_model("mlp", pairs.MODELS["mlp"], settings)
    assert [r.figure for r in rows] == ["unavailable"]
    assert "no twin for this layer" in rows[0].note


def test_unavailable_twin_makes_the_command_fail(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(pairs, "to_gnn", _broken_to_gnn)
    out = tmp_path / "analysis"
    assert mia.main(["--models", "mlp", "--out", str(out), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "unavailable: MNIST MLP" in captured.err
    assert "twin cannot be built: TypeError: no twin for this layer" in captured.out
    assert (out / "ratios.png").is_file()


@pytest.mark.parametrize("flag", ["--warmup=-1", "--iters=0", "--time-budget=-1",
                                  "--batch-size=0", "--threads=0"])
def test_bad_flag_values_are_refused(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        mia.main([flag])
    assert info.value.code == 2
    assert "must be >=" in capsys.readouterr().err


def _chart_rows() -> list[pairs.Row]:
    rows = []
    for key, name, scale in (("mlp", "MNIST MLP", 1.0), ("vgg11", "CIFAR-100 VGG11", 2.6)):
        for figure, batch, ratio, target in (("inference latency", 1, 1.4, 3.0),
                                             ("inference latency", 32, 1.2, 1.3),
                                             ("training step", 32, 1.05, 3.0),
                                             ("peak inference memory", 32, 0.9, 2.0)):
            rows.append(pairs.Row(key, name, figure, batch_size=batch,
                                  standard=Stats.of([1.0]), twin=Stats.of([ratio * scale]),
                                  target=target))
    rows.append(pairs.Row("vit", "CIFAR-100 ViT", "unavailable", note="no twin"))
    return rows


def test_chart_legend_covers_no_data_and_ticks_are_plain() -> None:
    import matplotlib.pyplot as plt

    fig = pairs.ratio_figure(_chart_rows())
    try:
        fig.canvas.draw()
        ax = fig.axes[0]
        legend = ax.get_legend()
        assert [t.get_text() for t in legend.get_texts()] == [
            "latency, batch 1", "latency, batch >1", "training step",
            "peak inference memory", "target"]
        renderer = fig.canvas.get_renderer()
        legend_box = legend.get_window_extent(renderer)
        assert not legend_box.overlaps(ax.get_window_extent(renderer)), \
            "the legend lies over the plotted data"
        assert ax.yaxis.get_offset_text().get_text() == ""
        lo, hi = ax.get_ylim()
        labels = {t.get_text() for t in ax.get_yticklabels()
                  if t.get_text() and lo <= t.get_position()[1] <= hi}
        assert labels and labels <= {"0.5", "1", "2", "5", "10"}, labels
        assert all(t.get_text() == "" for t in ax.yaxis.get_minorticklabels())
        assert lo < 0.9 and hi > 2.6 * 1.4  # every bar and target inside the axes
    finally:
        plt.close(fig)


def test_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "analysis"
    assert mia.main(["--models", "mlp", "cwru", "--iters", "2", "--warmup", "1",
                     "--batch-size", "1", "4", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for name in ("MNIST MLP", "CWRU 1D-CNN", "twin/std", "target"):
        assert name in printed

    assert {p.name for p in out.iterdir()} == {"analysis.md", "analysis.csv", "ratios.png"}
    assert (out / "ratios.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with (out / "analysis.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == pairs.CSV_FIELDS
    assert {r["model_key"] for r in rows} == {"mlp", "cwru"}
    for key in ("mlp", "cwru"):
        mine = {(r["figure"], r["batch_size"]): r for r in rows if r["model_key"] == key}
        assert set(mine) == {
            ("parameters", ""), ("max |twin - standard| logits", "4"),
            ("peak inference memory", "4"), ("transient inference memory", "4"),
            ("model state memory", ""), ("inference latency", "1"),
            ("inference latency", "4"), ("training step", "4"),
            ("peak training memory", "4")}
        params = mine[("parameters", "")]
        assert params["standard_median"] == params["twin_median"]
        assert float(mine[("max |twin - standard| logits", "4")]["twin_median"]) < 1e-5
        for figure in (("inference latency", "1"), ("inference latency", "4"),
                       ("training step", "4"), ("peak inference memory", "4")):
            r = mine[figure]
            assert float(r["standard_median"]) > 0 and float(r["twin_median"]) > 0
            assert float(r["ratio"]) == pytest.approx(
                float(r["twin_median"]) / float(r["standard_median"]))
            assert r["target"] and r["met"] in ("true", "false")

    markdown = (out / "analysis.md").read_text()
    assert "| model | figure | batch |" in markdown
    assert markdown.count("| MNIST MLP |") == 9 and markdown.count("| CWRU 1D-CNN |") == 9
    assert "Targets met:" in markdown


def test_profile_missed_profiles_the_call_behind_each_miss() -> None:
    settings = pairs.Settings(device=CPU, dtype=torch.float32, warmup=1, iters=1,
                              time_budget=0.0)
    missed = [pairs.Row("mlp", "MNIST MLP", figure, batch_size=2, standard=Stats.of([1.0]),
                        twin=Stats.of([9.0]), target=2.0)
              for figure in ("inference latency", "training step")]
    text = pairs.profile_missed(missed, settings)
    assert "inference at batch 2" in text and "training step at batch 2" in text
    assert "aten::addmm" in text or "aten::mm" in text


def _option_strings(parser) -> list[str]:
    return [s for action in parser._actions for s in action.option_strings
            if s.startswith("--") and s != "--help"]


def test_readme_lists_every_flag_of_the_measurement_commands() -> None:
    from benchmarks import attention, components

    readme = (REPO / "README.md").read_text()
    for command, parser in (("Memory_Inference_Analysis", mia.build_parser()),
                            ("benchmarks.components", components.build_parser()),
                            ("benchmarks.attention", attention.build_parser())):
        assert f"python -m {command}" in readme
        missing = [flag for flag in _option_strings(parser) if f"`{flag}" not in readme]
        assert not missing, f"README lacks {command}'s flags {missing}"


def test_figure_not_measurable_at_batch_1_is_reported_and_the_run_succeeds(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The original's latency protocol, ``--batch-size 1``: ResNet-18's training step
    cannot run BatchNorm on its 1x1 map at batch 1. That figure (and its memory) is
    reported as not measurable with the reason, every other figure is measured, exit 0."""
    out = tmp_path / "analysis"
    assert mia.main(["--models", "resnet18", "--batch-size", "1", "--warmup", "0",
                     "--iters", "1", "--time-budget", "0", "--out", str(out),
                     "--no-progress"]) == 0
    rows = {row["figure"]: row for row in csv.DictReader((out / "analysis.csv").open())}
    assert "unavailable" not in rows
    for figure in ("training step", "peak training memory"):
        assert rows[figure]["note"].startswith("not measurable at batch 1: ValueError: ")
        assert "Expected more than 1 value per channel" in rows[figure]["note"]
        assert rows[figure]["standard_median"] == rows[figure]["twin_median"] == ""
    for figure in ("parameters", "peak inference memory", "inference latency"):
        assert rows[figure]["standard_median"] and rows[figure]["twin_median"], figure
    assert rows["inference latency"]["batch_size"] == "1"
    assert "not measurable at batch 1" in capsys.readouterr().out
