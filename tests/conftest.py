"""Shared fixtures and session rules of the test suite.

- ``shared_data``: the real data folder beside the checkout (``../shared/data``), read only;
  ``shared_cwru``: a data folder in the session's temporary directory that links the real
  CWRU recordings, so the window file built from them lands there and not beside them.
- The session fails if anything under the shared data folder was created, changed or
  removed while it ran: tests read shared data and write only to their temporary folders.
  A read-only data folder's CWRU windows go to ``$CWRU_WINDOWS_CACHE``, set here to a
  session temporary folder (not this repository's ``data/``).
- One intra-op thread per test process: ``python -m pytest`` runs one xdist worker per
  core, and OpenMP threads waiting on each other on a loaded machine cost a lot (three
  ViT training steps: 8 s with two threads, 0.1 s with one, on the 2-core CI box).
- Every test starts from ``torch.manual_seed(0)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from utils.DataLoader_GNN import CWRU_WINDOWS_CACHE_ENV

REPO = Path(__file__).resolve().parents[1]
# ../shared/data from the repository root; a checkout may also carry shared/ inside it.
SHARED_DATA = next(
    (p for p in (REPO.parent / "shared" / "data", REPO / "shared" / "data") if p.is_dir()),
    REPO.parent / "shared" / "data",
)
TEST_THREADS = 1

Snapshot = dict[str, tuple[str, int, int]]


def snapshot(folder: Path) -> Snapshot:
    """Every entry under ``folder`` (followed by no link): relative path -> (kind, size,
    mtime in ns). Empty when ``folder`` does not exist."""
    if not folder.is_dir():
        return {}
    entries: Snapshot = {}
    for path in sorted(folder.rglob("*")):
        stat = path.lstat()
        kind = "dir" if path.is_dir() and not path.is_symlink() else "file"
        entries[str(path.relative_to(folder))] = (kind, stat.st_size if kind == "file" else 0,
                                                  stat.st_mtime_ns)
    return entries


def snapshot_changes(before: Snapshot, after: Snapshot) -> list[str]:
    """Human-readable differences between two :func:`snapshot` results."""
    changes = [f"created {p}" for p in sorted(after.keys() - before.keys())]
    changes += [f"removed {p}" for p in sorted(before.keys() - after.keys())]
    changes += [f"modified {p}" for p in sorted(before.keys() & after.keys())
                if before[p] != after[p]]
    return changes


@pytest.fixture(scope="session", autouse=True)
def _session_rules(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)
    cache = tmp_path_factory.mktemp("cwru_windows_cache")
    previous_cache = os.environ.get(CWRU_WINDOWS_CACHE_ENV)
    os.environ[CWRU_WINDOWS_CACHE_ENV] = str(cache)
    before = snapshot(SHARED_DATA)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if previous_cache is None:
            os.environ.pop(CWRU_WINDOWS_CACHE_ENV, None)
        else:
            os.environ[CWRU_WINDOWS_CACHE_ENV] = previous_cache
    changes = snapshot_changes(before, snapshot(SHARED_DATA))
    if changes:
        pytest.fail(f"the tests wrote into {SHARED_DATA}, which they must only read: "
                    + "; ".join(changes[:10]), pytrace=False)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def shared_data() -> Path:
    """The real data folder (read it, never write into it); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} absent: the real data lives in ../shared/data beside "
                    "the checkout, which a fresh clone does not have")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_cwru(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder whose ``CWRU/raw`` links the real recordings: loaders build and keep
    the window file in it (session temporary folder). Skips when the recordings are absent."""
    raw_real = SHARED_DATA / "CWRU" / "raw"
    if not raw_real.is_dir():
        pytest.skip(f"{raw_real} absent: the real CWRU recordings live in ../shared/data "
                    "beside the checkout, which a fresh clone does not have")
    data = tmp_path_factory.mktemp("shared_cwru")
    raw = data / "CWRU" / "raw"
    raw.mkdir(parents=True)
    for src in raw_real.iterdir():
        (raw / src.name).symlink_to(src)
    return data
