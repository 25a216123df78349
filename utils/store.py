"""The on-disk store for sets of trained networks (INR sets, CNN zoos).

A set lives in one folder::

    OUT/<config file>        the configuration the set was made with (JSON)
    OUT/shard_NNNNN.pt       one shard: a ``torch.save`` payload, written atomically
    OUT/shard_NNNNN.json     the shard's metadata, with the payload's sha256
    OUT/manifest.json        written once every shard is done; its ``kind`` names the set

A shard counts as finished when its metadata exists and the payload matches the sha256 in
it, so a killed run (or a damaged shard) redoes exactly the shards that are not finished.
Everything here knows only files, JSON and ``torch.save`` payloads: no network code.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from utils.atomic import atomic_write, write_text_atomic
from utils.checksums import file_hexdigest

__all__ = [
    "KINDS",
    "MANIFEST",
    "ConfigMismatchError",
    "StoreError",
    "check_config",
    "check_kind",
    "manifest_kind",
    "read_manifest",
    "read_shard",
    "require_complete",
    "shard_done",
    "shard_paths",
    "write_manifest",
    "write_shard",
]

MANIFEST = "manifest.json"

# kind -> (what it is called, with its article, the flag that takes it, the command that
# writes it)
KINDS: dict[str, tuple[str, str, str, str]] = {
    "inr-set": ("INR set", "an INR set", "--inr-dir", "python -m MNIST_INR_Fit"),
    "cnn-zoo": ("CNN zoo", "a CNN zoo", "--zoo-dir", "python -m CNN_Zoo_Generate"),
}


class StoreError(ValueError):
    """A folder that cannot be read as the set asked for: unreadable, incomplete, damaged
    (a shard that does not match its checksum) or of another kind."""


class ConfigMismatchError(StoreError):
    """The output folder holds a set made with another configuration."""


def shard_paths(out: str | Path, index: int) -> tuple[Path, Path]:
    """``(OUT/shard_NNNNN.pt, OUT/shard_NNNNN.json)`` of shard ``index``."""
    out = Path(out)
    return out / f"shard_{index:05d}.pt", out / f"shard_{index:05d}.json"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise StoreError(f"{path} is unreadable ({type(err).__name__}: {err})") from None


def check_config(out: str | Path, config: dict[str, Any], file_name: str, what: str) -> None:
    """Record ``config`` in ``OUT/file_name``, or raise :class:`ConfigMismatchError` when
    ``out`` already holds a set of another configuration (nothing is changed then).

    Args:
        out: the set's folder (created when absent).
        config: the configuration, JSON-serialisable.
        file_name: the configuration file (``fit_config.json``, ``config.json``).
        what: the set in words, for messages (``"INRs"``, ``"a zoo"``).
    """
    out = Path(out)
    path = out / file_name
    wanted = json.loads(json.dumps(config))
    if path.is_file():
        saved = _read_json(path)
        if not isinstance(saved, dict):
            raise StoreError(f"{path} does not hold a configuration")
        differ = sorted(key for key in set(saved) | set(wanted)
                        if saved.get(key) != wanted.get(key))
        if differ:
            detail = "; ".join(f"{key}: saved {saved.get(key)!r}, now {wanted.get(key)!r}"
                               for key in differ)
            raise ConfigMismatchError(
                f"{out} holds {what} of another configuration ({detail}). Nothing was "
                "changed: give another --out, or rerun with the recorded settings to "
                "continue that run.")
        return
    if out.is_dir() and (any(out.glob("shard_*")) or (out / MANIFEST).exists()):
        raise ConfigMismatchError(f"{out} holds shards but no {file_name}: it was not "
                                  "written by this program; give another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(wanted, indent=1) + "\n")


def shard_done(out: str | Path, index: int, config_digest: str | None = None,
               log: Callable[[str], None] | None = None,
               redo: str = "making it again", verify: bool = True) -> dict[str, Any] | None:
    """The metadata of shard ``index`` when it is finished (its payload matches the sha256
    in its metadata), else None (``log`` says why when a payload is damaged). With
    ``verify=False`` the payload is not hashed (for shards checked or written just before).

    Raises:
        ConfigMismatchError: ``config_digest`` is given and the metadata records another.
    """
    data_path, meta_path = shard_paths(out, index)
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        meta = None
    if not isinstance(meta, dict) or "sha256" not in meta:
        if log is not None:
            log(f"{meta_path}: unreadable metadata; {redo}")
        return None
    if config_digest is not None and meta.get("config_sha256") != config_digest:
        raise ConfigMismatchError(f"{meta_path} belongs to another configuration (its "
                                  f"config_sha256 differs from the folder's)")
    if not data_path.is_file() or (verify and file_hexdigest(data_path) != meta["sha256"]):
        if log is not None:
            log(f"{data_path}: missing or not matching the sha256 in {meta_path.name}; "
                f"{redo}")
        return None
    return meta


def write_shard(out: str | Path, index: int, content: dict[str, Any],
                meta: dict[str, Any], indent: int = 1) -> dict[str, Any]:
    """Write shard ``index``: ``content`` by ``torch.save``, then its metadata
    (``{"file", "sha256", **meta}``), each atomically; the metadata goes last, so a shard
    with metadata is whole. Returns the metadata."""
    buffer = io.BytesIO()
    torch.save(content, buffer)
    payload = buffer.getvalue()
    data_path, meta_path = shard_paths(out, index)
    with atomic_write(data_path) as f:
        f.write(payload)
    record = {"file": data_path.name, "sha256": hashlib.sha256(payload).hexdigest(), **meta}
    write_text_atomic(meta_path, json.dumps(record, indent=indent) + "\n")
    return record


def write_manifest(out: str | Path, kind: str, manifest: dict[str, Any],
                   indent: int = 1) -> dict[str, Any]:
    """Write ``OUT/manifest.json`` atomically, its ``kind`` first; returns what was written."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    record = {"kind": kind, **{k: v for k, v in manifest.items() if k != "kind"}}
    write_text_atomic(Path(out) / MANIFEST, json.dumps(record, indent=indent) + "\n")
    return record


def manifest_kind(manifest: Any) -> str | None:
    """The kind of set a manifest describes: its ``kind``, or for manifests written before
    it was recorded, what its keys say (``inrs``: an INR set; ``groups`` and ``members``: a
    CNN zoo); None when neither."""
    if not isinstance(manifest, dict):
        return None
    if manifest.get("kind") in KINDS:
        return manifest["kind"]
    if "inrs" in manifest and "shards" in manifest:
        return "inr-set"
    if "groups" in manifest and "members" in manifest:
        return "cnn-zoo"
    return None


def check_kind(out: str | Path, manifest: Any, kind: str) -> None:
    """Raise :class:`StoreError` saying what ``out`` is when its manifest is not of
    ``kind``."""
    _, name, flag, command = KINDS[kind]
    found = manifest_kind(manifest)
    if found == kind:
        return
    if found is None:
        raise StoreError(f"{Path(out) / MANIFEST} is not the manifest of {name} (no kind "
                         f"recorded and none recognisable); {flag} takes a folder written "
                         f"by {command}")
    _, other, other_flag, _ = KINDS[found]
    raise StoreError(f"{out} is {other} (manifest kind {found!r}), not {name}; pass it as "
                     f"{other_flag}")


def read_manifest(out: str | Path, kind: str) -> dict[str, Any]:
    """The manifest of the set of ``kind`` in ``out``.

    Raises:
        FileNotFoundError: no manifest.
        StoreError: an unreadable manifest, or one of another kind of set.
    """
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {out} is not a finished {KINDS[kind][0]} "
                                f"(run {KINDS[kind][3]}; the same --out finishes an "
                                "interrupted one)")
    manifest = _read_json(path)
    check_kind(out, manifest, kind)
    return manifest


def require_complete(out: str | Path, manifest: dict[str, Any], kind: str) -> None:
    """Raise :class:`StoreError` when the manifest says the set is not complete."""
    if manifest.get("complete", True):
        return
    name, _, _, command = KINDS[kind]
    raise StoreError(f"{out} is incomplete ({manifest.get('shards_done')} of "
                     f"{manifest.get('groups')} shards): "
                     f"run {command} again with the same flags to finish the {name}")


def read_shard(out: str | Path, entry: dict[str, Any], kind: str,
               verify: bool = True) -> dict[str, Any]:
    """The content of the shard a manifest lists (``{"file", "sha256", ...}``), checked
    against its sha256.

    Raises:
        StoreError: the shard is missing, does not match its sha256 or cannot be read; the
            message names it and says that re-running the command that wrote the set
            repairs it (only that shard is made again).
    """
    path = Path(out) / entry["file"]
    name, _, _, command = KINDS[kind]
    repair = (f"The {name} in {out} is damaged: run the same {command} command again "
              "(same --out) to repair it; only that shard is made again")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise StoreError(f"shard {path} is unreadable ({err.strerror or err}). {repair}") \
            from None
    if verify and hashlib.sha256(raw).hexdigest() != entry["sha256"]:
        raise StoreError(f"shard {path} does not match its sha256 {entry['sha256']} (its "
                         f"{len(raw)} bytes were truncated or changed). {repair}")
    try:
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad shard
        raise StoreError(f"shard {path} cannot be read ({type(err).__name__}: {err}). "
                         f"{repair}") from None
