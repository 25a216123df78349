"""The on-disk store of sets of trained networks (utils.store)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from utils import store
from utils.checksums import file_hexdigest


def test_config_is_recorded_then_checked(tmp_path: Path) -> None:
    store.check_config(tmp_path / "set", {"a": 1, "b": (1, 2)}, "config.json", "a set")
    store.check_config(tmp_path / "set", {"a": 1, "b": [1, 2]}, "config.json", "a set")
    with pytest.raises(store.ConfigMismatchError, match=r"a: saved 1, now 2"):
        store.check_config(tmp_path / "set", {"a": 2, "b": [1, 2]}, "config.json", "a set")
    assert issubclass(store.ConfigMismatchError, store.StoreError)
    assert issubclass(store.StoreError, ValueError)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "shard_00000.pt").write_bytes(b"x")
    with pytest.raises(store.ConfigMismatchError, match="not written by this program"):
        store.check_config(foreign, {"a": 1}, "config.json", "a set")
    (tmp_path / "set" / "config.json").write_text("{")
    with pytest.raises(store.StoreError, match="unreadable"):
        store.check_config(tmp_path / "set", {"a": 1}, "config.json", "a set")


def test_shards_write_detect_and_read(tmp_path: Path) -> None:
    logged: list[str] = []
    assert store.shard_done(tmp_path, 0) is None
    meta = store.write_shard(tmp_path, 0, {"x": torch.arange(3)}, {"count": 3})
    data_path, meta_path = store.shard_paths(tmp_path, 0)
    assert meta == {"file": data_path.name, "sha256": file_hexdigest(data_path), "count": 3}
    assert json.loads(meta_path.read_text()) == meta
    assert store.shard_done(tmp_path, 0) == meta
    assert torch.equal(store.read_shard(tmp_path, meta, "inr-set")["x"], torch.arange(3))
    with pytest.raises(store.ConfigMismatchError, match="another configuration"):
        store.shard_done(tmp_path, 0, config_digest="other")
    data_path.write_bytes(data_path.read_bytes()[:10])
    assert store.shard_done(tmp_path, 0, log=logged.append, redo="redo it") is None
    assert "not matching the sha256" in logged[0] and logged[0].endswith("redo it")
    with pytest.raises(store.StoreError, match=r"shard_00000\.pt does not match its sha256"):
        store.read_shard(tmp_path, meta, "cnn-zoo")
    with pytest.raises(store.StoreError, match="cannot be read"):
        store.read_shard(tmp_path, meta, "cnn-zoo", verify=False)
    data_path.unlink()
    with pytest.raises(store.StoreError, match="unreadable.*python -m MNIST_INR_Fit"):
        store.read_shard(tmp_path, meta, "inr-set")
    meta_path.write_text("{")
    assert store.shard_done(tmp_path, 0, log=logged.append) is None


def test_manifest_kind_and_completeness(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a finished CNN zoo"):
        store.read_manifest(tmp_path, "cnn-zoo")
    written = store.write_manifest(tmp_path, "cnn-zoo", {"complete": False, "groups": 3,
                                                         "shards_done": 1})
    assert next(iter(written)) == "kind"
    manifest = store.read_manifest(tmp_path, "cnn-zoo")
    with pytest.raises(store.StoreError, match=r"incomplete \(1 of 3 shards\)"):
        store.require_complete(tmp_path, manifest, "cnn-zoo")
    with pytest.raises(store.StoreError, match="not an INR set; pass it as --zoo-dir"):
        store.read_manifest(tmp_path, "inr-set")
    assert store.manifest_kind({"inrs": {}, "shards": []}) == "inr-set"
    assert store.manifest_kind({"groups": 1, "members": 2}) == "cnn-zoo"
    assert store.manifest_kind({"other": 1}) is None
    with pytest.raises(store.StoreError, match="not the manifest of a CNN zoo"):
        store.check_kind(tmp_path, {"other": 1}, "cnn-zoo")
    with pytest.raises(ValueError, match="kind must be one of"):
        store.write_manifest(tmp_path, "zoo", {})
