"""Tests of benchmarks.common: timing, memory, parameter counts, tables."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from benchmarks import common

MIB = 1024 ** 2
CPU = torch.device("cpu")


def test_cpu_peak_sees_a_known_allocation() -> None:
    def allocate_8mib() -> torch.Tensor:
        return torch.ones(2 * MIB, dtype=torch.float32)  # 8 MiB, freed on return

    use = common.memory_use(allocate_8mib, CPU)
    assert 8 * MIB <= use.peak <= 8 * MIB + 64 * 1024
    assert abs(use.net) <= 64 * 1024
    assert common.peak_memory(allocate_8mib, CPU) == use.peak


def test_cpu_peak_counts_the_peak_not_the_sum() -> None:
    def two_in_turn() -> None:
        a = torch.ones(MIB, dtype=torch.float32)  # 4 MiB
        del a
        b = torch.ones(2 * MIB, dtype=torch.float32)  # 8 MiB
        del b

    assert 8 * MIB <= common.peak_memory(two_in_turn, CPU) <= 8 * MIB + 64 * 1024


def test_cpu_peak_of_nothing_is_zero() -> None:
    use = common.memory_use(lambda: None, CPU)
    assert use.peak <= 1024 and use.net == 0


def test_cpu_net_counts_what_stays_allocated() -> None:
    kept = []
    use = common.memory_use(lambda: kept.append(torch.zeros(MIB // 4)), CPU)
    assert use.net == use.peak == MIB


def test_memory_on_an_unsupported_device_is_refused() -> None:
    with pytest.raises(ValueError, match="'cpu' or 'cuda'.*meta"):
        common.memory_use(lambda: None, torch.device("meta"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_sees_a_known_allocation() -> None:
    device = torch.device("cuda")
    use = common.memory_use(lambda: torch.ones(2 * MIB, device=device), device)
    assert 8 * MIB <= use.peak <= 8 * MIB + 64 * 1024 and use.net == 0


def test_time_call_warms_up_then_times() -> None:
    calls = []

    def sleep_2ms() -> None:
        calls.append(None)
        time.sleep(0.002)

    mean, std = common.time_call(sleep_2ms, warmup=2, iters=5, device=CPU)
    assert len(calls) == 7
    assert 0.002 <= mean < 0.05 and 0.0 <= std < 0.05
    with pytest.raises(ValueError, match="iters >= 1"):
        common.time_call(sleep_2ms, warmup=0, iters=0, device=CPU)


def test_time_samples_respects_the_budget() -> None:
    times = common.time_samples(lambda: None, warmup=0, iters=1000, device=CPU,
                                time_budget=0.0)
    assert len(times) == common.MIN_ITERS


def test_time_interleaved_alternates_and_respects_budget() -> None:
    calls: list[str] = []
    t_a, t_b = common.time_interleaved(lambda: calls.append("a"), lambda: calls.append("b"),
                                       CPU, warmup=1, iters=4)
    assert len(t_a) == len(t_b) == 4
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    t_a, _ = common.time_interleaved(lambda: None, lambda: None, CPU, warmup=0, iters=1000,
                                     time_budget=0.0)
    assert len(t_a) == common.MIN_ITERS


def test_parameter_count_and_state_bytes() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    model[1].weight = model[0].bias  # shared: counted once
    assert common.parameter_count(model) == 3 * 4 + 4 + 4
    # parameters (20 floats) + running mean and var (8 floats) + num_batches_tracked (int64)
    assert common.state_bytes(model) == 20 * 4 + 8 * 4 + 8


def test_stats_of_values() -> None:
    stats = common.Stats.of([1.0, 2.0, 6.0])
    assert (stats.mean, stats.median) == (3.0, 2.0)
    assert stats.std == pytest.approx(2.6457513110645906)
    assert common.Stats.of([5.0]).std == 0.0
    with pytest.raises(ValueError, match="at least one value"):
        common.Stats.of([])


def test_ratio_table() -> None:
    rows = [common.Comparison("Linear, forward", 2.0, 3.0, target=1.3),
            common.Comparison("Linear, fwd+bwd", 4.0, 4.0),
            common.Comparison("Conv, forward", 1.0, 2.5, unit="MiB", target=3.0)]
    assert [r.met for r in rows] == [False, None, True]
    lines = common.format_ratio_table(rows, title="component").splitlines()
    assert lines[0].split() == ["component", "torch.nn", "twin", "twin/torch.nn", "target",
                                "met"]
    assert set(lines[1]) == {"-", " "}
    assert lines[2].startswith("Linear, forward") and "2 ms" in lines[2]
    assert lines[2].split()[-4:] == ["1.50x", "<=", "1.3x", "NO"]
    assert lines[3].split()[-1] == "1.00x"
    assert lines[4].split() == ["Conv,", "forward", "1", "MiB", "2.5", "MiB", "2.50x", "<=",
                                "3x", "yes"]
    assert len({len(line) for line in lines[:2]}) == 1  # header and rule align


def test_format_table_checks_row_lengths() -> None:
    with pytest.raises(ValueError, match="row 1 has 1 cells, expected 2"):
        common.format_table(("a", "b"), [("1", "2"), ("3",)])
    assert common.format_table(("n", "v"), [("x", "1"), ("yy", "10")],
                               right=(False, True)).splitlines() == [
        "n    v", "--  --", "x    1", "yy  10"]
