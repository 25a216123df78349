"""Tests of utils.CWRU_Data_Preprocessing and the CWRU loaders of utils.DataLoader_GNN."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from utils import CWRU_Data_Preprocessing as prep
from utils import DataLoader_GNN as dl
from utils.atomic import default_file_mode

REPO = Path(__file__).resolve().parents[2]

# (file name, key number) in label order; IR014_0_174 holds X173 as in the real data.
FIXTURE_FILES = [
    ("48k_Drive_End_B007_0_122.mat", "122"),
    ("48k_Drive_End_B014_0_189.mat", "189"),
    ("48k_Drive_End_B021_0_226.mat", "226"),
    ("48k_Drive_End_IR007_0_109.mat", "109"),
    ("48k_Drive_End_IR014_0_174.mat", "173"),
    ("48k_Drive_End_IR021_0_213.mat", "213"),
    ("48k_Drive_End_OR007@6_0_135.mat", "135"),
    ("48k_Drive_End_OR014@6_0_201.mat", "201"),
    ("48k_Drive_End_OR021@6_0_238.mat", "238"),
    ("normal_0_97.mat", "097"),
]
WINDOWS_PER_FILE = 60
FIXTURE_LENGTH = prep.WINDOW + prep.STRIDE * (WINDOWS_PER_FILE - 1) + 17


def fixture_signal(label: int) -> np.ndarray:
    return label + np.sin(np.arange(FIXTURE_LENGTH) * 0.01 * (label + 1))


@pytest.fixture
def cwru_dir(tmp_path) -> Path:
    """data_dir with ten tiny recordings in the real .mat layout."""
    raw = tmp_path / "CWRU" / "raw"
    raw.mkdir(parents=True)
    for label, (name, number) in enumerate(FIXTURE_FILES):
        signal = fixture_signal(label)[:, None]
        scipy.io.savemat(raw / name, {f"X{number}_DE_time": signal,
                                      f"X{number}_FE_time": -signal,
                                      f"X{number}RPM": np.array([[1796]], dtype=np.uint16)})
    return tmp_path


def dot_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- fixtures


def test_windows_of_fixture(cwru_dir):
    out = prep.preprocess_cwru(cwru_dir, progress=False)
    assert out == cwru_dir / "CWRU" / "CWRU_48k_DE_windows.npz"
    with np.load(out) as f:
        assert sorted(f.files) == ["recording", "start", "x", "y"]
        x, y, rec, start = f["x"], f["y"], f["recording"], f["start"]
    n = 10 * WINDOWS_PER_FILE
    assert x.shape == (n, 2048) and x.dtype == np.float32
    assert y.dtype == rec.dtype == start.dtype == np.int64
    np.testing.assert_array_equal(y, np.repeat(np.arange(10), WINDOWS_PER_FILE))
    np.testing.assert_array_equal(rec, y)
    np.testing.assert_array_equal(start, np.tile(np.arange(WINDOWS_PER_FILE) * 240, 10))
    for k in (0, 47, n - 1):
        signal = fixture_signal(int(y[k])).astype(np.float32)
        np.testing.assert_array_equal(x[k], signal[start[k]:start[k] + 2048])
    assert dot_files(out.parent) == []
    assert oct(out.stat().st_mode & 0o777) == oct(default_file_mode())


def test_missing_file_is_named(cwru_dir):
    (cwru_dir / "CWRU" / "raw" / "48k_Drive_End_OR014@6_0_201.mat").unlink()
    with pytest.raises(FileNotFoundError, match="OR014@6"):
        prep.preprocess_cwru(cwru_dir, progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prep.preprocess_cwru(cwru_dir / "elsewhere", progress=False)


def test_corrupt_file_is_named(cwru_dir):
    (cwru_dir / "CWRU" / "raw" / "48k_Drive_End_B021_0_226.mat").write_bytes(b"not a mat file")
    with pytest.raises(ValueError, match="48k_Drive_End_B021_0_226.mat"):
        prep.preprocess_cwru(cwru_dir, progress=False)
    assert not (cwru_dir / "CWRU" / "CWRU_48k_DE_windows.npz").exists()


def test_bad_keys_and_ambiguous_names(cwru_dir):
    raw = cwru_dir / "CWRU" / "raw"
    scipy.io.savemat(raw / "48k_Drive_End_IR007_0_109.mat", {"X109_FE_time": np.ones((4096, 1))})
    with pytest.raises(ValueError, match="IR007_0_109.mat.*_DE_time"):
        prep.preprocess_cwru(cwru_dir, progress=False)
    scipy.io.savemat(raw / "48k_Drive_End_IR007_0_109.mat",
                     {"X109_DE_time": np.ones((4096, 1)), "X110_DE_time": np.ones((4096, 1))})
    with pytest.raises(ValueError, match="exactly one"):
        prep.preprocess_cwru(cwru_dir, progress=False)
    scipy.io.savemat(raw / "48k_Drive_End_IR007_0_109.mat", {"X109_DE_time": np.ones((100, 1))})
    with pytest.raises(ValueError, match="fewer than one window"):
        prep.preprocess_cwru(cwru_dir, progress=False)
    scipy.io.savemat(raw / "48k_Drive_End_IR007_0_109.mat", {"X109_DE_time": np.ones((4096, 1))})
    scipy.io.savemat(raw / "12k_Drive_End_B007_0_118.mat", {"X118_DE_time": np.ones((4096, 1))})
    with pytest.raises(ValueError, match="B007.*12k_Drive_End_B007_0_118.mat"):
        prep.preprocess_cwru(cwru_dir, progress=False)


def test_sha256sums_are_checked(cwru_dir):
    raw = cwru_dir / "CWRU" / "raw"
    lines = [f"{hashlib.sha256((raw / n).read_bytes()).hexdigest()}  {n}" for n, _ in FIXTURE_FILES]
    lines[3] = "0" * 64 + "  " + FIXTURE_FILES[3][0]
    (raw / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="IR007_0_109.mat is corrupt"):
        prep.preprocess_cwru(cwru_dir, progress=False)


def test_atomic_write(cwru_dir, monkeypatch):
    out = cwru_dir / "CWRU" / "CWRU_48k_DE_windows.npz"
    out.write_bytes(b"previous")

    def failing_savez(f, **arrays):
        f.write(b"PK partial")
        raise OSError("disk full")

    monkeypatch.setattr(prep.np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        prep.preprocess_cwru(cwru_dir, progress=False)
    assert out.read_bytes() == b"previous"
    out.unlink()
    with pytest.raises(OSError, match="disk full"):
        prep.preprocess_cwru(cwru_dir, out=cwru_dir / "new" / "w.npz", progress=False)
    assert list((cwru_dir / "new").iterdir()) == []
    assert dot_files(out.parent) == []


def test_command_line(cwru_dir, capsys):
    out = cwru_dir / "custom.npz"
    assert prep.main(["--data-dir", str(cwru_dir), "--out", str(out), "--no-progress"]) == 0
    assert "wrote 600 windows" in capsys.readouterr().out
    with np.load(out) as f:
        assert f["x"].shape == (600, 2048)
    with pytest.raises(SystemExit) as info:
        prep.main(["--help"])
    assert info.value.code == 0
    assert "--data-dir" in capsys.readouterr().out


def test_loader_builds_windows_and_splits(cwru_dir):
    train, val = dl.get_dataloaders_CWRU(cwru_dir, batch_size=16)
    assert (cwru_dir / "CWRU" / "CWRU_48k_DE_windows.npz").is_file()
    assert len(train.dataset) == 480 and len(val.dataset) == 120
    x, y = next(iter(train))
    assert x.shape == (16, 1, 2048) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert not set(train.dataset.indices) & set(val.dataset.indices)
    train_t, val_t = dl.get_dataloaders_CWRU(cwru_dir, batch_size=16, split="time")
    # Windowed span 2048 + 59 * 240 = 16,208 samples, boundary 12,966: windows starting at
    # 0..10,800 (46) end before it, those from 13,200 (5) start after it, 9 cross it.
    assert len(train_t.dataset) == 10 * 46 and len(val_t.dataset) == 10 * 5
    assert not set(train_t.dataset.indices) & set(val_t.dataset.indices)
    with pytest.raises(ValueError, match="split"):
        dl.get_dataloaders_CWRU(cwru_dir, split="bogus")
    with pytest.raises(ValueError, match="val_fraction"):
        dl.get_dataloaders_CWRU(cwru_dir, val_fraction=1.0)


def test_loader_determinism(cwru_dir):
    def run(seed, epoch):
        train, _ = dl.get_dataloaders_CWRU(cwru_dir, batch_size=16, seed=seed)
        dl.set_epoch(train, epoch)
        return [(x.clone(), y.clone()) for x, y in train]

    def equal(a, b):
        return all(torch.equal(p, q) and torch.equal(r, s) for (p, r), (q, s) in zip(a, b))

    assert equal(run(0, 2), run(0, 2))
    assert not equal(run(0, 2), run(0, 3))


def test_loader_read_only_data_dir(cwru_dir, tmp_path, monkeypatch):
    fallback = tmp_path / "cache" / "windows.npz"
    monkeypatch.setattr(dl, "_fallback_array_file", lambda data_dir: fallback)
    folder = cwru_dir / "CWRU"
    folder.chmod(0o555)
    try:
        train, _ = dl.get_dataloaders_CWRU(cwru_dir, batch_size=16)
    finally:
        folder.chmod(0o755)
    assert fallback.is_file() and not (folder / "CWRU_48k_DE_windows.npz").exists()
    assert len(train.dataset) == 480
    explicit = tmp_path / "explicit.npz"
    dl.get_dataloaders_CWRU(cwru_dir, array_file=explicit)
    assert explicit.is_file()


def test_read_only_data_dir_uses_the_windows_cache_variable(cwru_dir, tmp_path, monkeypatch):
    cache = tmp_path / "windows cache"
    monkeypatch.setenv(dl.CWRU_WINDOWS_CACHE_ENV, str(cache))
    folder = cwru_dir / "CWRU"
    folder.chmod(0o555)
    try:
        arrays = dl.load_cwru_arrays(cwru_dir)
    finally:
        folder.chmod(0o755)
    written = list(cache.iterdir())
    assert [p.suffix for p in written] == [".npz"], written
    assert written[0].name.startswith("CWRU_48k_DE_windows-")
    assert not (folder / "CWRU_48k_DE_windows.npz").exists()
    assert len(arrays["y"]) == 600
    monkeypatch.delenv(dl.CWRU_WINDOWS_CACHE_ENV)
    assert dl._fallback_array_file(cwru_dir).parent == REPO / "data" / "CWRU"


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real_cwru(shared_cwru) -> Path:
    """A data_dir linking to the real recordings (conftest's ``shared_cwru``), windows built:
    nothing is written beside the recordings."""
    dl.load_cwru_arrays(shared_cwru)
    return shared_cwru


def test_real_windows(real_cwru):
    arrays = dl.load_cwru_arrays(real_cwru)
    assert len(arrays["y"]) == prep.EXPECTED_WINDOWS == 9372
    assert arrays["x"].shape == (9372, 2048) and arrays["x"].dtype == np.float32
    assert set(arrays["y"].tolist()) == set(range(10))
    assert np.bincount(arrays["y"])[4] == 258  # IR014_0_174, which holds X173_DE_time
    recording = real_cwru / "CWRU" / "raw" / "48k_Drive_End_IR014_0_174.mat"
    signal = scipy.io.loadmat(recording)["X173_DE_time"].ravel()
    k = int(np.flatnonzero(arrays["y"] == 4)[5])
    start = int(arrays["start"][k])
    np.testing.assert_array_equal(arrays["x"][k], signal[start:start + 2048].astype(np.float32))


def test_real_splits(real_cwru):
    train, val = dl.get_dataloaders_CWRU(real_cwru, batch_size=256)
    assert (len(train.dataset), len(val.dataset)) == (7497, 1875)
    assert not set(train.dataset.indices) & set(val.dataset.indices)
    x, y = next(iter(val))
    assert x.shape == (256, 1, 2048) and y.dtype == torch.int64

    arrays = dl.load_cwru_arrays(real_cwru)
    train_t, val_t = dl.get_dataloaders_CWRU(real_cwru, split="time")
    ti, vi = train_t.dataset.indices, val_t.dataset.indices
    assert not set(ti) & set(vi)
    assert 0.15 < len(vi) / (len(ti) + len(vi)) < 0.25 and len(ti) + len(vi) < 9372
    for rec in range(10):
        t_start = arrays["start"][ti][arrays["recording"][ti] == rec]
        v_start = arrays["start"][vi][arrays["recording"][vi] == rec]
        assert len(t_start) and len(v_start)
        assert t_start.max() + 2048 <= v_start.min()  # no shared sample, train before val
