"""benchmarks.zoo_encoders: every family's networks become graphs the encoders read."""

from __future__ import annotations

import pytest

from benchmarks import zoo_encoders


@pytest.mark.parametrize("family", ["small", "wild", "vit"])
def test_each_family_is_measured(family: str, capsys: pytest.CaptureFixture) -> None:
    graphs = zoo_encoders.family_graphs(family, 3)
    assert len(graphs) == 3
    assert tuple(graphs[0].kernel_shape) == zoo_encoders.KERNELS[family]
    assert zoo_encoders.main(["--family", family, "--batch-size", "3", "--encoders",
                              "statnn", "dng"]) == 0
    out = capsys.readouterr().out
    assert f"3 {family} networks" in out and "peak MiB" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("statnn", "dng"))]
    assert [row[0] for row in rows] == ["statnn", "dng"]
    assert all(float(row[3].replace(",", "")) >= 0 for row in rows)
