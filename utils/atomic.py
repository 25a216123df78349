"""Atomic file writes: a failed or interrupted write never leaves a partial file."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO


def default_file_mode() -> int:
    """Permission bits a newly created file gets under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None,
                 also: Sequence[str | os.PathLike] = ()) -> Iterator[IO]:
    """Write through a temporary file beside ``path`` that replaces it only on success.

    The file is flushed and fsynced, then renamed over ``path`` (after putting the same
    content at each path of ``also``, in order, each atomically too). On any exception,
    KeyboardInterrupt included, the temporary files are deleted and every destination is
    left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    extras = [f"{tmp}.{i}" for i in range(len(also))]
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())  # mkstemp creates files private (0600)
        for extra, dest in zip(extras, also):
            try:
                os.link(tmp, extra)
            except OSError:  # no hard links on this file system
                shutil.copyfile(tmp, extra)
            os.replace(extra, dest)
        os.replace(tmp, path)
    except BaseException:
        for leftover in (tmp, *extras):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)
