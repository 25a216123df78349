"""utils.atomic: a write either lands whole or leaves the destination as it was."""

from __future__ import annotations

import pytest

from utils.atomic import atomic_write, write_text_atomic


def test_success_replaces_and_leaves_no_temporary(tmp_path) -> None:
    target = tmp_path / "sub" / "file.bin"
    with atomic_write(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_failure_keeps_the_old_file(tmp_path, error: BaseException) -> None:
    target = tmp_path / "file.txt"
    target.write_text("old")
    with pytest.raises(type(error)), atomic_write(target, "w") as f:
        f.write("partial")
        raise error
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_same_content_at_several_paths(tmp_path) -> None:
    best, last = tmp_path / "best.pt", tmp_path / "last.pt"
    with atomic_write(last, also=[best]) as f:
        f.write(b"state")
    assert best.read_bytes() == last.read_bytes() == b"state"
    write_text_atomic(best, "text")
    assert best.read_text() == "text" and last.read_bytes() == b"state"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]
