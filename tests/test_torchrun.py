"""utils.torchrun: the process's place in a torchrun job, read from the environment."""

from __future__ import annotations

import pytest

from utils.torchrun import TorchrunPlace, torchrun_place

VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@pytest.fixture(autouse=True)
def no_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_a_plain_run_is_rank_zero_of_one() -> None:
    place = torchrun_place()
    assert place == TorchrunPlace(0, 1, 0, 1)
    assert not place.enabled


def test_the_variables_torchrun_sets_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    place = torchrun_place()
    assert place == TorchrunPlace(3, 4, 1, 2)
    assert place.enabled


def test_local_world_size_defaults_to_the_world_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert torchrun_place().local_world_size == 2


@pytest.mark.parametrize("name, value, message", [
    ("WORLD_SIZE", "two", "WORLD_SIZE must be an integer"),
    ("RANK", "5", r"RANK must be in \[0, WORLD_SIZE=1\)"),
])
def test_malformed_variables_are_named(monkeypatch: pytest.MonkeyPatch, name: str,
                                       value: str, message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        torchrun_place()
