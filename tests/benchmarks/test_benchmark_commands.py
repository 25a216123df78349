"""Smoke tests of the benchmark commands on their smallest settings."""

from __future__ import annotations

import pytest

from benchmarks import attention, components


def test_components_prints_the_ratio_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert components.main(["--only", "Linear 784->250", "--iters", "1", "--warmup", "0",
                            "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["component", "torch.nn", "twin", "twin/torch.nn", "target",
                                "met"]
    forward = next(line for line in lines if "Linear 784->250, batch 128, forward" in line)
    assert forward.split()[-3:-1] == ["<=", "1.5x"] and forward.split()[-1] in ("yes", "NO")
    assert any("Linear 784->250, batch 128, fwd+bwd" in line for line in lines)
    assert lines[-1].endswith("target(s) missed")


def test_components_refuses_an_unknown_case(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        components.main(["--only", "no such layer"])
    assert info.value.code == 2
    assert "no case name contains 'no such layer'" in capsys.readouterr().err


def test_attention_prints_time_and_memory(capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    small = attention._mha(2, 5, 8, 2, need_weights=False)
    monkeypatch.setattr(attention, "cases", lambda: [small])
    status = attention.main(["--iters", "1", "--warmup", "0", "--rounds", "1",
                             "--no-progress"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith(small.name)]
    assert [row.split()[len(small.name.split())] for row in rows] == ["forward", "fwd+bwd"]
    assert all("MiB" in row and row.split()[-1] in ("ok", "MISSED") for row in rows)
    assert status == int(rows[0].split()[-1] == "MISSED")


def test_encoders_job_sizes_build_what_the_classification_job_trains() -> None:
    import MNIST_INR_Classification_Train as classify
    from benchmarks import encoders

    builders = encoders.job_sizes()
    assert set(builders) == set(classify.ENCODER_DEFAULTS)
    for side, probes in (("ngnn", 128), ("ngt", 128), ("dng", 256)):
        model = builders[side](10)
        assert model.embed.probes.num_probes == classify.ENCODER_DEFAULTS[side].probes == probes
