"""Shared fixtures: the real data folder beside the checkout, and deterministic threads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} absent: the real data lives in ../shared/data beside "
                    "the checkout, which a fresh clone does not have")
    return SHARED_DATA
