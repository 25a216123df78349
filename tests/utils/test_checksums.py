"""The one file-checksum helper agrees with hashlib over whole contents, chunk sizes
included."""

from __future__ import annotations

import hashlib

import pytest

from utils.checksums import file_hexdigest


@pytest.mark.parametrize("size", [0, 1, (1 << 20) + 7])
@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_file_hexdigest_matches_hashlib(tmp_path, size, algorithm):
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert file_hexdigest(path, algorithm) == hashlib.new(algorithm, data).hexdigest()
    assert file_hexdigest(str(path)) == hashlib.sha256(data).hexdigest()
