"""Tests of Memory_Inference_Analysis: the CPU memory measurement and an end-to-end run."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

import Memory_Inference_Analysis as mia

MIB = 1024 ** 2
CPU = torch.device("cpu")


def test_cpu_peak_sees_a_known_allocation() -> None:
    def allocate_8mib() -> torch.Tensor:
        return torch.ones(2 * MIB, dtype=torch.float32)  # 8 MiB, freed on return

    peak, net = mia.peak_memory(allocate_8mib, CPU)
    assert 8 * MIB <= peak <= 8 * MIB + 64 * 1024
    assert abs(net) <= 64 * 1024


def test_cpu_peak_counts_the_peak_not_the_sum() -> None:
    def two_in_turn() -> None:
        a = torch.ones(MIB, dtype=torch.float32)  # 4 MiB
        del a
        b = torch.ones(2 * MIB, dtype=torch.float32)  # 8 MiB
        del b

    peak, _ = mia.peak_memory(two_in_turn, CPU)
    assert 8 * MIB <= peak <= 8 * MIB + 64 * 1024


def test_cpu_peak_of_nothing_is_zero() -> None:
    peak, net = mia.peak_memory(lambda: None, CPU)
    assert peak <= 1024 and net == 0


def test_cpu_net_counts_what_stays_allocated() -> None:
    kept = []
    peak, net = mia.peak_memory(lambda: kept.append(torch.zeros(MIB // 4)), CPU)
    assert net == peak == MIB


def test_time_interleaved_alternates_and_respects_budget() -> None:
    calls: list[str] = []
    t_a, t_b = mia.time_interleaved(lambda: calls.append("a"), lambda: calls.append("b"),
                                    CPU, warmup=1, iters=4)
    assert len(t_a) == len(t_b) == 4
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    t_a, _ = mia.time_interleaved(lambda: None, lambda: None, CPU, warmup=0, iters=1000,
                                  time_budget=0.0)
    assert len(t_a) == mia.MIN_ITERS


def test_targets() -> None:
    assert mia.latency_target("mlp", 128, (1, 128)) == 1.3
    assert mia.latency_target("vgg11", 32, (1, 32)) == 3.0
    assert mia.latency_target("vit", 1, (1, 32)) == 3.0
    assert mia.latency_target("cwru", 8, (1, 8, 128)) is None
    row = mia.Row("k", "m", "f", standard=mia.Stats.of([2.0]), twin=mia.Stats.of([5.0]),
                  target=2.0)
    assert row.ratio == 2.5 and row.met is False


def test_unbuildable_twin_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(model: torch.nn.Module) -> torch.nn.Module:
        raise TypeError("no twin for this layer")

    monkeypatch.setattr(mia, "to_gnn", broken)
    settings = mia.Settings(device=CPU, dtype=torch.float32, warmup=0, iters=1,
                            time_budget=0.0)
    rows = mia.analyse_model("mlp", mia.MODELS["mlp"], settings)
    assert [r.figure for r in rows] == ["unavailable"]
    assert "no twin for this layer" in rows[0].note


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
    assert tuple(rows[0]) == mia.CSV_FIELDS
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_sees_a_known_allocation() -> None:
    device = torch.device("cuda")
    peak, net = mia.peak_memory(lambda: torch.ones(2 * MIB, device=device), device)
    assert 8 * MIB <= peak <= 8 * MIB + 64 * 1024 and net == 0


def test_profile_missed_profiles_the_call_behind_each_miss() -> None:
    settings = mia.Settings(device=CPU, dtype=torch.float32, warmup=1, iters=1,
                            time_budget=0.0)
    missed = [mia.Row("mlp", "MNIST MLP", figure, batch_size=2, standard=mia.Stats.of([1.0]),
                      twin=mia.Stats.of([9.0]), target=2.0)
              for figure in ("inference latency", "training step")]
    text = mia.profile_missed(missed, settings)
    assert "inference at batch 2" in text and "training step at batch 2" in text
    assert "aten::addmm" in text or "aten::mm" in text
