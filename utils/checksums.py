"""File checksums: hex digests read in chunks (``hashlib.file_digest``), one helper for
shards, downloads and raw recordings alike."""

from __future__ import annotations

import hashlib
import os

__all__ = ["file_hexdigest"]


def file_hexdigest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of the file at ``path`` by ``algorithm`` (any :mod:`hashlib` name)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()
