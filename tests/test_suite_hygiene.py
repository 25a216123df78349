"""Rules of the test suite itself: which `tests` package is imported, what the session may
write, how many threads it runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tests
from tests import conftest
from utils import DataLoader_GNN as dl

REPO = Path(__file__).resolve().parents[1]


def test_tests_package_is_this_repository() -> None:
    """The nfn wheel installs a top-level ``tests`` package; inside pytest, and from the
    repository root, ``tests`` must be this folder."""
    assert tests.__file__ is not None, f"tests is a namespace package: {list(tests.__path__)}"
    assert Path(tests.__file__).resolve() == REPO / "tests" / "__init__.py"
    assert Path(conftest.__file__).resolve() == REPO / "tests" / "conftest.py"
    found = subprocess.run([sys.executable, "-c", "import tests; print(tests.__file__)"],
                           cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    assert Path(found.stdout.strip()).resolve() == REPO / "tests" / "__init__.py"


def test_snapshot_sees_created_modified_and_removed_entries(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.mat").write_bytes(b"abc")
    (tmp_path / "raw" / "b.mat").write_bytes(b"def")
    before = conftest.snapshot(tmp_path)
    assert conftest.snapshot_changes(before, conftest.snapshot(tmp_path)) == []
    (tmp_path / "raw" / "a.mat").write_bytes(b"abcd")
    (tmp_path / "raw" / "b.mat").unlink()
    (tmp_path / "windows.npz").write_bytes(b"PK")
    assert conftest.snapshot_changes(before, conftest.snapshot(tmp_path)) == [
        "created windows.npz", "removed raw/b.mat", "modified raw", "modified raw/a.mat"]
    assert conftest.snapshot(tmp_path / "absent") == {}


def test_session_guards_are_active(request: pytest.FixtureRequest,
                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    assert "_session_rules" in request.fixturenames
    cache = Path(os.environ[dl.CWRU_WINDOWS_CACHE_ENV])
    assert cache.is_relative_to(tmp_path_factory.getbasetemp())
    # The windows of the read-only shared folder would land in the session's cache.
    assert dl._fallback_array_file(conftest.SHARED_DATA).parent == cache
    assert torch.get_num_threads() == conftest.TEST_THREADS
