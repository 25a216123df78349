"""The two logs of a training run: ``<run>.txt`` (readable lines) and ``<run>.jsonl`` (one
JSON record per epoch, then a final test record), cut back exactly on ``--resume``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from utils.atomic import write_text_atomic

__all__ = ["RunLog"]


def _record_epoch(line: str) -> int | None:
    """The epoch of a complete per-epoch record (not a final one), else None."""
    try:
        record = json.loads(line)
        return None if record.get("final") else int(record["epoch"])
    except (ValueError, KeyError, TypeError, AttributeError):  # e.g. a line cut by SIGKILL
        return None


def _epoch_of(line: str) -> int | None:
    """The epoch of a complete ``Epoch k/E | ...`` line, else None."""
    if not line.startswith("Epoch ") or "|" not in line:
        return None
    try:
        return int(line[6:].split("/", 1)[0])
    except ValueError:
        return None


class RunLog:
    """The two logs of one run: ``<run>.txt`` (readable) and ``<run>.jsonl`` (records).

    A fresh run :meth:`start` s both anew; a resumed run :meth:`resume` s them, keeping
    every epoch up to the checkpoint's and dropping later or cut-off lines. Only rank 0
    writes (the loop calls nothing here on other ranks).
    """

    def __init__(self, log_dir: Path, name: str) -> None:
        self.name = name
        self.text = log_dir / f"{name}.txt"
        self.jsonl = log_dir / f"{name}.jsonl"

    def start(self, header: str) -> None:
        """Begin both logs from scratch: the header line, no records."""
        write_text_atomic(self.text, header + "\n")
        write_text_atomic(self.jsonl, "")

    def resume(self, epoch: int, note: str) -> None:
        """Cut both logs back to the end of ``epoch`` (later records, a final record and
        any line a crash left incomplete are dropped), then add ``note``."""
        if self.jsonl.is_file():
            kept = [line for line in self.jsonl.read_text(encoding="utf-8").splitlines()
                    if (e := _record_epoch(line)) is not None and e <= epoch]
            write_text_atomic(self.jsonl, "".join(line + "\n" for line in kept))
        if self.text.is_file():
            lines = self.text.read_text(encoding="utf-8").splitlines()
            ends = [i for i, line in enumerate(lines) if _epoch_of(line) == epoch]
            cut = ends[-1] + 1 if ends else len(lines)
            write_text_atomic(self.text, "".join(line + "\n" for line in lines[:cut]))
        self.note(note)

    def has_final(self) -> bool:
        """Whether the jsonl ends with a final (test) record."""
        if not self.jsonl.is_file():
            return False
        lines = self.jsonl.read_text(encoding="utf-8").splitlines()
        try:
            return bool(lines) and bool(json.loads(lines[-1]).get("final"))
        except (ValueError, AttributeError):
            return False

    def record(self, record: dict[str, Any], line: str) -> None:
        """Append ``record`` to the jsonl and ``line`` to the text log."""
        self._append(self.jsonl, json.dumps(record))
        self._append(self.text, line)

    def note(self, text: str) -> None:
        """Append a ``# text`` comment line to the text log."""
        self._append(self.text, f"# {text}")

    @staticmethod
    def _append(path: Path, line: str) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
