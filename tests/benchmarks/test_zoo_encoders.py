"""benchmarks.zoo_encoders: every family's networks become graphs the encoders read, each
encoder with the probe images the zoo job gives it."""

from __future__ import annotations

import pytest

from benchmarks import zoo_encoders
from jobs.zoo_jobs import ZOO_ENCODER_DEFAULTS


def table_rows(out: str, encoders: tuple[str, ...]) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.startswith(encoders)]


@pytest.mark.parametrize("family", ["small", "wild", "vit"])
def test_each_family_is_measured(family: str, capsys: pytest.CaptureFixture) -> None:
    graphs = zoo_encoders.family_graphs(family, 3)
    assert len(graphs) == 3
    assert tuple(graphs[0].kernel_shape) == zoo_encoders.KERNELS[family]
    assert zoo_encoders.main(["--family", family, "--batch-size", "3", "--encoders",
                              "statnn", "dng"]) == 0
    out = capsys.readouterr().out
    assert f"3 {family} networks" in out and "peak MiB" in out
    rows = table_rows(out, ("statnn", "dng"))
    assert [row[0] for row in rows] == ["statnn", "dng"]
    # StatNN reads no activations; DNG gets the job's probe images on CNNs, none on ViTs.
    dng_probes = 0 if family == "vit" else ZOO_ENCODER_DEFAULTS["dng"].probes
    assert [int(row[1]) for row in rows] == [0, dng_probes]
    assert all(float(row[4].replace(",", "")) >= 0 for row in rows)


def test_probes_flag_sets_the_images_and_their_parameters(capsys: pytest.CaptureFixture) -> None:
    counts = {}
    for probes in ("0", "4"):
        assert zoo_encoders.main(["--family", "small", "--batch-size", "2", "--encoders",
                                  "dng", "--probes", probes]) == 0
        (row,) = table_rows(capsys.readouterr().out, ("dng",))
        assert row[1] == probes
        counts[probes] = int(row[2].replace(",", ""))
    assert counts["4"] > counts["0"]  # the images (4 x 28 x 28) and their feature layers
    with pytest.raises(SystemExit):
        zoo_encoders.main(["--probes", "-1"])
