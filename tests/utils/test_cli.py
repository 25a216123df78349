"""utils.cli: the thread default of the many-small-networks commands."""

from __future__ import annotations

import pytest
import torch

from utils.cli import set_cpu_threads


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("device", [None, "cpu", torch.device("cpu")])
def test_cpu_jobs_default_to_one_thread(device, restore_threads):
    torch.set_num_threads(2)
    assert set_cpu_threads(None, device) == 1 == torch.get_num_threads()


def test_an_explicit_thread_count_wins(restore_threads):
    torch.set_num_threads(1)
    assert set_cpu_threads(2, "cpu") == 2 == torch.get_num_threads()


def test_gpu_jobs_keep_torchs_choice(restore_threads):
    torch.set_num_threads(2)
    assert set_cpu_threads(None, "cuda") == 2
