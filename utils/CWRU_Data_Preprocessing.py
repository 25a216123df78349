"""Cut the ten CWRU 48 kHz drive-end recordings into labelled windows.

Usage::

    python -m utils.CWRU_Data_Preprocessing [--data-dir DIR] [--out FILE]

Reads ``DIR/CWRU/raw/*.mat`` and writes one file, ``DIR/CWRU/CWRU_48k_DE_windows.npz``, with

* ``x``         float32 [N, 2048]  the windows of the drive-end signal,
* ``y``         int64 [N]          the class label (0-9, order of ``CLASS_FRAGMENTS``),
* ``recording`` int64 [N]          index of the source recording (same order),
* ``start``     int64 [N]          first sample of the window in its recording.

Windows are 2048 samples long and start every 240 samples; the ten real recordings give
9,372 windows.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.io
from tqdm import tqdm

from utils.atomic import atomic_write
from utils.checksums import file_hexdigest

WINDOW = 2048
STRIDE = 240
EXPECTED_WINDOWS = 9372
ARRAY_FILE_NAME = "CWRU_48k_DE_windows.npz"
# One recording per class, in label order; matched against the .mat file names.
CLASS_FRAGMENTS: tuple[str, ...] = (
    "B007",
    "B014",
    "B021",
    "IR007",
    "IR014",
    "IR021",
    "OR007@6",
    "OR014@6",
    "OR021@6",
    "normal",
)
EXPECTED_FILES = (
    "48k_Drive_End_B007_0_122.mat, 48k_Drive_End_B014_0_189.mat, 48k_Drive_End_B021_0_226.mat, "
    "48k_Drive_End_IR007_0_109.mat, 48k_Drive_End_IR014_0_174.mat, "
    "48k_Drive_End_IR021_0_213.mat, 48k_Drive_End_OR007@6_0_135.mat, "
    "48k_Drive_End_OR014@6_0_201.mat, 48k_Drive_End_OR021@6_0_238.mat, normal_0_97.mat"
)


def raw_dir_of(data_dir: str | Path) -> Path:
    """Folder holding the raw .mat recordings for a data directory."""
    return Path(data_dir) / "CWRU" / "raw"


def default_array_file(data_dir: str | Path) -> Path:
    """Default location of the preprocessed window file for a data directory."""
    return Path(data_dir) / "CWRU" / ARRAY_FILE_NAME


def find_recordings(raw_dir: str | Path) -> list[Path]:
    """Return the ten recordings of ``raw_dir`` in label order.

    Raises FileNotFoundError naming the class whose file is missing, ValueError when a
    class fragment matches more than one file.
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise FileNotFoundError(
            f"CWRU raw folder {raw_dir} does not exist: place the ten 48 kHz drive-end "
            f"recordings ({EXPECTED_FILES}) there."
        )
    mat_files = sorted(p for p in raw_dir.iterdir() if p.suffix.lower() == ".mat")
    found = []
    for fragment in CLASS_FRAGMENTS:
        matches = [p for p in mat_files if fragment.lower() in p.name.lower()]
        if not matches:
            raise FileNotFoundError(
                f"CWRU recording for class {fragment!r} is missing: no .mat file in {raw_dir} "
                f"has {fragment!r} in its name. Expected files: {EXPECTED_FILES}."
            )
        if len(matches) > 1:
            names = ", ".join(p.name for p in matches)
            raise ValueError(
                f"CWRU class {fragment!r} matches several files in {raw_dir}: {names}; "
                "keep exactly one recording per class."
            )
        found.append(matches[0])
    return found


def _read_sha256sums(raw_dir: Path) -> dict[str, str]:
    sums_file = raw_dir / "SHA256SUMS"
    if not sums_file.is_file():
        return {}
    sums = {}
    for line in sums_file.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def load_drive_end_signal(path: str | Path) -> np.ndarray:
    """Load the drive-end signal (the single key ending in ``_DE_time``) as float64 [L].

    The key's number does not always match the file name (IR014_0_174 holds X173_DE_time),
    so the key is searched for rather than derived. Raises ValueError naming the file when
    it is unreadable or holds no usable signal.
    """
    path = Path(path)
    try:
        contents = scipy.io.loadmat(str(path))
    except Exception as err:  # scipy raises many types for malformed files
        raise ValueError(f"CWRU file {path} is corrupt or not a MATLAB file: {err}") from err
    keys = [k for k in contents if k.endswith("_DE_time")]
    if len(keys) != 1:
        raise ValueError(
            f"CWRU file {path} should hold exactly one key ending in '_DE_time', found {keys}."
        )
    signal = np.asarray(contents[keys[0]])
    if signal.dtype.kind not in "fiu" or signal.ndim > 2 or min(signal.shape, default=0) > 1:
        raise ValueError(
            f"CWRU file {path}: {keys[0]} is not a 1-D numeric signal "
            f"(shape {signal.shape}, dtype {signal.dtype})."
        )
    signal = signal.astype(np.float64).ravel()
    if signal.size < WINDOW:
        raise ValueError(
            f"CWRU file {path}: {keys[0]} has {signal.size} samples, fewer than one window "
            f"({WINDOW})."
        )
    if not np.all(np.isfinite(signal)):
        raise ValueError(f"CWRU file {path}: {keys[0]} contains NaN or infinite samples.")
    return signal


def window_starts(length: int, window: int = WINDOW, stride: int = STRIDE) -> np.ndarray:
    """First samples of all complete windows of a signal of ``length`` samples."""
    if length < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, length - window + 1, stride, dtype=np.int64)


def preprocess_cwru(
    data_dir: str | Path = "data", out: str | Path | None = None, progress: bool = True
) -> Path:
    """Window the ten CWRU recordings of ``data_dir/CWRU/raw`` and write them to ``out``.

    ``out`` defaults to ``data_dir/CWRU/CWRU_48k_DE_windows.npz``. The file is written to a
    temporary name in the same folder and renamed, so a failure leaves no partial output.
    Returns the path written.
    """
    raw_dir = raw_dir_of(data_dir)
    out = default_array_file(data_dir) if out is None else Path(out)
    recordings = find_recordings(raw_dir)
    sums = _read_sha256sums(raw_dir)

    xs, ys, recs, starts = [], [], [], []
    for label, path in enumerate(tqdm(recordings, desc="CWRU recordings", unit="file",
                                      disable=not progress)):
        expected = sums.get(path.name)
        if expected is not None and file_hexdigest(path) != expected:
            raise ValueError(
                f"CWRU file {path} is corrupt: its SHA-256 does not match {raw_dir / 'SHA256SUMS'}."
            )
        signal = load_drive_end_signal(path)
        s = window_starts(signal.size)
        windows = np.lib.stride_tricks.sliding_window_view(signal, WINDOW)[s]
        xs.append(windows.astype(np.float32))
        ys.append(np.full(s.size, label, dtype=np.int64))
        recs.append(np.full(s.size, label, dtype=np.int64))
        starts.append(s)

    # A file object keeps np.savez from appending ".npz" to the temporary name.
    with atomic_write(out) as f:
        np.savez(
            f,
            x=np.concatenate(xs),
            y=np.concatenate(ys),
            recording=np.concatenate(recs),
            start=np.concatenate(starts),
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m utils.CWRU_Data_Preprocessing",
        description="Cut the ten CWRU 48 kHz drive-end recordings (DIR/CWRU/raw/*.mat) into "
        f"{WINDOW}-sample windows every {STRIDE} samples and write them to one .npz file.",
    )
    parser.add_argument("--data-dir", default="data",
                        help="data folder holding CWRU/raw/*.mat (default: data)")
    parser.add_argument("--out", default=None,
                        help=f"output file (default: DIR/CWRU/{ARRAY_FILE_NAME})")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    out = preprocess_cwru(args.data_dir, args.out, progress=not args.no_progress)
    with np.load(out) as arrays:
        n = arrays["y"].shape[0]
    print(f"wrote {n} windows to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
