"""Tests of the shared training loop (utils.Train_Test) and the five training scripts."""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import re
import signal
import socket
import sys
import tarfile
import time
import traceback
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

import CIFAR100_ResNet18_Train
import CIFAR100_VGG11_Train
import CIFAR100_ViT_Train
import CWRU_1DCNN_Train
import MNIST_MLP_Train
from jobs.twins import build_twin
from utils import DataLoader_GNN as dl
from utils import Train_Test as tt

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SCRIPTS = [MNIST_MLP_Train, CWRU_1DCNN_Train, CIFAR100_VGG11_Train, CIFAR100_ResNet18_Train,
           CIFAR100_ViT_Train]
METRICS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "best_val_acc", "lr")


# --------------------------------------------------------------------------- fixtures


def write_cwru(data_dir: Path, n: int = 200, seed: int = 0) -> Path:
    """A tiny CWRU window file (class-dependent tones plus noise) in the loader's layout."""
    rng = np.random.default_rng(seed)
    t = np.arange(2048, dtype=np.float32)
    label = np.arange(n) % 10
    x = np.sin(t * 0.01 * (label[:, None] + 1) + np.arange(n)[:, None])
    x = x + 0.3 * rng.standard_normal((n, 2048))
    y, recording, start = label, label, (np.arange(n) // 10) * 240
    path = data_dir / "CWRU" / "CWRU_48k_DE_windows.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=np.asarray(x, dtype=np.float32), y=np.asarray(y, dtype=np.int64),
             recording=np.asarray(recording, dtype=np.int64),
             start=np.asarray(start, dtype=np.int64))
    return data_dir


def write_idx_gz(path: Path, array: np.ndarray) -> None:
    import gzip
    import struct

    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_mnist(data_dir: Path, monkeypatch: pytest.MonkeyPatch, n: int = 120) -> Path:
    """Tiny t10k IDX files; the loader's md5 table is patched to accept them."""
    rng = np.random.default_rng(2)
    raw = data_dir / "MNIST" / "raw"
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
    images[np.arange(n), labels * 2 + 3, 3:25] = 255  # a class-dependent stroke
    write_idx_gz(raw / "t10k-images-idx3-ubyte.gz", images)
    write_idx_gz(raw / "t10k-labels-idx1-ubyte.gz", labels)
    sums = {p.name: dl.md5sum(p) for p in raw.iterdir()}
    monkeypatch.setattr("utils.images.MNIST_MD5", {**dl.MNIST_MD5, **sums})
    monkeypatch.setattr(dl, "MNIST_TEST_SPLIT_TRAIN", 90)
    return data_dir


def write_cifar(data_dir: Path, monkeypatch: pytest.MonkeyPatch, n_train: int = 48,
                n_test: int = 12) -> Path:
    """A tiny CIFAR-100 tarball in the real format, extracted by the loader itself."""
    rng = np.random.default_rng(1)
    tarball = data_dir / "cifar-100-python.tar.gz"
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "w:gz") as tar:
        for name, n in (("train", n_train), ("test", n_test)):
            labels = [int(v) for v in rng.integers(0, 100, size=n)]
            entry = {b"batch_label": name.encode(), b"fine_labels": labels,
                     b"coarse_labels": [lab // 5 for lab in labels],
                     b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                     b"filenames": [b"x.png"] * n}
            payload = pickle.dumps(entry, protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        payload = pickle.dumps({b"fine_label_names": [b"c"] * 100}, protocol=2)
        info = tarfile.TarInfo("cifar-100-python/meta")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    monkeypatch.setattr("utils.images.CIFAR100_MD5", dl.md5sum(tarball))
    dl.load_cifar100(data_dir, download=False)  # extracts cifar-100-python/
    return data_dir


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def dirs(root: Path, data_dir: Path) -> list[str]:
    return ["--data-dir", str(data_dir), "--log-dir", str(root / "log"),
            "--checkpoint-dir", str(root / "ckpt"), "--device", "cpu"]


def train(script, argv: list[str]) -> int:
    with redirect_stdout(io.StringIO()):
        return tt.main(script.SETUP, argv)


def records(log_dir: Path, run: str) -> list[dict]:
    return [json.loads(line) for line in (log_dir / f"{run}.jsonl").read_text().splitlines()]


def metrics(log_dir: Path, run: str) -> list[tuple]:
    return [tuple(r[k] for k in METRICS) for r in records(log_dir, run)]


def same_checkpoint(a: Path, b: Path) -> None:
    ca, cb = (torch.load(p, weights_only=False) for p in (a, b))
    assert ca["epoch"] == cb["epoch"] and ca["best_value"] == cb["best_value"]
    for key in ca["model"]:
        assert torch.equal(ca["model"][key], cb["model"][key]), key
    sa, sb = ca["optimizer"]["state"], cb["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for key, value in sa[i].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(sb[i][key]))
    assert torch.equal(ca["rng"][0]["torch"], cb["rng"][0]["torch"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- flags


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda m: m.__name__)
def test_help_lists_the_flags(script, capsys):
    with pytest.raises(SystemExit) as stop:
        tt.main(script.SETUP, ["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--model", "--seeds", "--epochs", "--batch-size", "--lr", "--device",
                 "--data-dir", "--log-dir", "--checkpoint-dir", "--num-workers", "--resume",
                 "--max-train-batches", "--amp"):
        assert flag in text, flag
    assert ("--mnist-source" in text) == (script is MNIST_MLP_Train)
    assert ("--split" in text) == (script is CWRU_1DCNN_Train)
    assert f"(default: {script.SETUP.epochs})" in text


def test_defaults_reproduce_the_original():
    parse = tt.build_parser
    expect = {MNIST_MLP_Train: (100, 128, 1e-3), CWRU_1DCNN_Train: (1000, 128, 5e-5),
              CIFAR100_VGG11_Train: (100, 16, 0.01), CIFAR100_ResNet18_Train: (100, 128, 0.01),
              CIFAR100_ViT_Train: (300, 128, 1e-4)}
    for script, (epochs, batch, lr) in expect.items():
        args = parse(script.SETUP).parse_args([])
        assert (args.epochs, args.batch_size, args.lr) == (epochs, batch, lr)
        assert args.seeds == list(range(10)) and args.model == "both"
    sgd = CIFAR100_VGG11_Train.SETUP.optimizer([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    assert sgd.defaults["momentum"] == 0.9 and sgd.defaults["weight_decay"] == 5e-4
    sched = CIFAR100_ResNet18_Train.SETUP.scheduler(sgd)
    assert sorted(sched.milestones) == [60, 120, 160] and sched.gamma == 0.2
    adamw = CIFAR100_ViT_Train.SETUP.optimizer([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    assert adamw.defaults["weight_decay"] == 0.05


def test_amp_on_cpu_is_an_error(capsys):
    with pytest.raises(SystemExit) as stop:
        tt.main(CWRU_1DCNN_Train.SETUP, ["--amp", "--device", "cpu"])
    assert stop.value.code == 2 and "--amp needs a CUDA device" in capsys.readouterr().err


# --------------------------------------------------------------------------- (a) twins


@pytest.mark.parametrize("dataset", ["cwru", "mnist"])
def test_twin_trains_like_the_standard_network(dataset, tmp_path, monkeypatch, one_thread):
    if dataset == "cwru":
        script, data, extra = CWRU_1DCNN_Train, write_cwru(tmp_path / "data"), []
    else:
        script, data = MNIST_MLP_Train, write_mnist(tmp_path / "data", monkeypatch)
        extra = ["--mnist-source", "test-split"]
    argv = dirs(tmp_path, data) + ["--epochs", "2", "--seeds", "3", "--batch-size", "16",
                                   "--lr", "1e-2", *extra]
    assert train(script, argv) == 0
    std = records(tmp_path / "log", tt.run_name(script.SETUP.script, "standard", 3))
    gnn = records(tmp_path / "log", tt.run_name(script.SETUP.script, "gnn", 3))
    assert [r["epoch"] for r in std] == [r["epoch"] for r in gnn] == [1, 2]
    for a, b in zip(std, gnn):
        assert (a["model"], b["model"], a["seed"]) == ("standard", "gnn", 3)
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
        assert 0 < a["data_time"] < a["epoch_time"]  # the epoch's time split: data, compute
    assert std[1]["train_loss"] < std[0]["train_loss"]  # it does learn
    text = (tmp_path / "log" / f"{std[0]['run']}.txt").read_text()
    assert "Epoch 1/2 | train loss " in text and "| val loss " in text and "| time " in text
    assert re.search(r"\| time [0-9.]+s \(data [0-9.]+s, val [0-9.]+s\)", text)
    for side in ("standard", "gnn"):
        run = tt.run_name(script.SETUP.script, side, 3)
        assert (tmp_path / "ckpt" / f"{run}_last.pt").is_file()
        assert (tmp_path / "ckpt" / f"{run}_best.pt").is_file()
    assert not [p for p in (tmp_path / "ckpt").iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- (b) crash


def test_resume_after_a_crash_mid_epoch(tmp_path, monkeypatch, one_thread):
    data = write_cwru(tmp_path / "data")
    argv = ["--epochs", "3", "--seeds", "1", "--batch-size", "16", "--lr", "1e-3",
            "--model", "gnn"]
    run = tt.run_name("CWRU_1DCNN_Train", "gnn", 1)
    assert train(CWRU_1DCNN_Train, dirs(tmp_path / "a", data) + argv) == 0

    calls = {"n": 0}
    original = dl.SignalDataset.__getitem__

    def crash_in_epoch_2(self, index):
        calls["n"] += 1
        if calls["n"] > 160 + 40 + 50:  # epoch 1 (train + val) and part of epoch 2
            raise RuntimeError("simulated crash")
        return original(self, index)

    monkeypatch.setattr(dl.SignalDataset, "__getitem__", crash_in_epoch_2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(CWRU_1DCNN_Train, dirs(tmp_path / "b", data) + argv)
    monkeypatch.setattr(dl.SignalDataset, "__getitem__", original)
    assert [r["epoch"] for r in records(tmp_path / "b" / "log", run)] == [1]
    # As if killed while writing epoch 2's log lines: resume must drop the fragments.
    with open(tmp_path / "b" / "log" / f"{run}.jsonl", "a") as f:
        f.write('{"script": "CWRU_1DCNN_Train", "ep')
    with open(tmp_path / "b" / "log" / f"{run}.txt", "a") as f:
        f.write("Epoch 2/3 | train lo")

    assert train(CWRU_1DCNN_Train, dirs(tmp_path / "b", data) + argv + ["--resume"]) == 0
    assert metrics(tmp_path / "a" / "log", run) == metrics(tmp_path / "b" / "log", run)
    for kind in ("last", "best"):
        same_checkpoint(tmp_path / "a" / "ckpt" / f"{run}_{kind}.pt",
                        tmp_path / "b" / "ckpt" / f"{run}_{kind}.pt")
    text = (tmp_path / "b" / "log" / f"{run}.txt").read_text()
    assert [line.split(" |")[0] for line in text.splitlines() if line.startswith("Epoch")] \
        == ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]
    assert "# resumed from" in text

    # A finished run is skipped, its logs untouched.
    before = (tmp_path / "b" / "log" / f"{run}.jsonl").read_text()
    out = io.StringIO()
    with redirect_stdout(out):
        assert tt.main(CWRU_1DCNN_Train.SETUP,
                       dirs(tmp_path / "b", data) + argv + ["--resume"]) == 0
    assert "skipped" in out.getvalue()
    assert (tmp_path / "b" / "log" / f"{run}.jsonl").read_text() == before


def test_resume_with_other_batch_size_is_refused(tmp_path, one_thread):
    data = write_cwru(tmp_path / "data", n=40)
    argv = dirs(tmp_path, data) + ["--epochs", "1", "--seeds", "0", "--model", "standard",
                                   "--batch-size", "8"]
    assert train(CWRU_1DCNN_Train, argv) == 0
    with pytest.raises(SystemExit, match="--batch-size"):
        train(CWRU_1DCNN_Train, argv[:-1] + ["16", "--epochs", "2", "--resume"])


# --------------------------------------------------------------------------- issue 9


def test_a_fresh_run_starts_its_logs_anew(tmp_path, one_thread):
    data = write_cwru(tmp_path / "data", n=40)
    argv = dirs(tmp_path, data) + ["--epochs", "2", "--seeds", "0", "--model", "standard",
                                   "--batch-size", "8"]
    run = tt.run_name("CWRU_1DCNN_Train", "standard", 0)
    assert train(CWRU_1DCNN_Train, argv) == 0
    first = metrics(tmp_path / "log", run)
    assert train(CWRU_1DCNN_Train, argv) == 0  # no --resume: the same run from scratch
    assert metrics(tmp_path / "log", run) == first
    text = (tmp_path / "log" / f"{run}.txt").read_text()
    assert text.startswith(f"# {run}: ") and text.count(f"# {run}: ") == 1
    assert text.count("Epoch 1/2 |") == 1


def test_resume_keeps_finished_epochs_despite_leftover_temporary_files(tmp_path, one_thread):
    data = write_cwru(tmp_path / "data", n=40)
    argv = dirs(tmp_path, data) + ["--seeds", "0", "--model", "standard", "--batch-size", "8"]
    run = tt.run_name("CWRU_1DCNN_Train", "standard", 0)
    assert train(CWRU_1DCNN_Train, argv + ["--epochs", "3"]) == 0
    reference = metrics(tmp_path / "log", run)
    assert train(CWRU_1DCNN_Train, argv + ["--epochs", "2"]) == 0
    # What a SIGKILL during a checkpoint save leaves behind.
    leftover = tmp_path / "ckpt" / f".{run}_last.pt.k2j4x.tmp"
    leftover.write_bytes(b"partial")
    assert train(CWRU_1DCNN_Train, argv + ["--epochs", "3", "--resume"]) == 0
    assert metrics(tmp_path / "log", run) == reference
    text = (tmp_path / "log" / f"{run}.txt").read_text()
    assert text.startswith(f"# {run}: ") and "# resumed from" in text
    assert [line[:9] for line in text.splitlines() if line.startswith("Epoch")] == [
        "Epoch 1/2", "Epoch 2/2", "Epoch 3/3"]
    assert not leftover.exists()


@pytest.mark.parametrize("lr", ["nan", "inf", "-inf", "0"])
def test_lr_must_be_positive_and_finite(lr, capsys):
    with pytest.raises(SystemExit) as stop:
        tt.main(CWRU_1DCNN_Train.SETUP, [f"--lr={lr}", "--device", "cpu"])
    assert stop.value.code == 2
    assert "--lr must be a positive finite number" in capsys.readouterr().err


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
        tmp_path, monkeypatch, one_thread, capsys):
    data = write_cwru(tmp_path / "data", n=40)  # 32 train windows: 4 steps of 8
    argv = dirs(tmp_path, data) + ["--epochs", "3", "--seeds", "0", "--model", "standard",
                                   "--batch-size", "8"]
    run = tt.run_name("CWRU_1DCNN_Train", "standard", 0)
    calls = {"n": 0}
    original = dl.SignalDataset.__getitem__

    def nan_in_epoch_2_step_3(self, index):
        calls["n"] += 1
        x, y = original(self, index)
        if 40 + 16 < calls["n"] <= 40 + 24:  # epoch 1 (32 + 8), then steps 1-2 of epoch 2
            x = torch.full_like(x, float("nan"))
        return x, y

    monkeypatch.setattr(dl.SignalDataset, "__getitem__", nan_in_epoch_2_step_3)
    assert tt.main(CWRU_1DCNN_Train.SETUP, argv) == tt.NON_FINITE
    err = capsys.readouterr().err
    assert "stopped" in err and "CWRU_1DCNN_Train_standard_seed0 2/3 train" in err
    assert "non-finite loss at step 3" in err and "keeps epoch 1" in err
    assert [r["epoch"] for r in records(tmp_path / "log", run)] == [1]
    for kind in ("last", "best"):
        ckpt = torch.load(tmp_path / "ckpt" / f"{run}_{kind}.pt", weights_only=False)
        assert ckpt["epoch"] == 1 and math.isfinite(ckpt["best_value"])
        assert all(torch.isfinite(t).all() for t in ckpt["model"].values())
    assert "stopped" in (tmp_path / "log" / f"{run}.txt").read_text()


def test_progress_is_one_line_per_epoch_when_redirected(tmp_path, one_thread, capsys):
    data = write_cwru(tmp_path / "data", n=40)
    argv = dirs(tmp_path, data) + ["--epochs", "2", "--seeds", "0", "--batch-size", "8"]
    assert tt.main(CWRU_1DCNN_Train.SETUP, argv) == 0
    out, err = capsys.readouterr()
    assert "\r" not in out + err and "it/s" not in err
    lines = [line for line in out.splitlines() if "| train loss" in line]
    assert [line.split(" |")[0] for line in lines] == [
        "CWRU_1DCNN_Train_standard_seed0 Epoch 1/2", "CWRU_1DCNN_Train_standard_seed0 Epoch 2/2",
        "CWRU_1DCNN_Train_gnn_seed0 Epoch 1/2", "CWRU_1DCNN_Train_gnn_seed0 Epoch 2/2"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda m: m.__name__)
def test_help_texts_are_complete(script):
    parser = tt.build_parser(script.SETUP)
    for action in parser._actions:
        if action.dest == "help":
            continue
        text = action.help or ""
        assert text.strip(), action.dest
        # ArgumentDefaultsHelpFormatter adds "(default: X)"; the text must not say it too.
        assert "default" not in text.lower(), (action.dest, text)
        assert not re.search(r"\b(and|or|the|a|an|of|to|with|for|,)$", text.strip()), text
    rendered = " ".join(parser.format_help().split())
    assert rendered.count(f"(default: {script.SETUP.epochs})") == 1
    for noise in (") (default:", "(default: None)", "(default: False)"):
        assert noise not in rendered
    assert parser.description.rstrip().endswith(".")


# --------------------------------------------------------------------------- (c) signals


# ViT: dropout and AdamW make the RNG and optimizer states matter. 8 batches per epoch.
SIGNAL_ARGS = ["--epochs", "3", "--seeds", "0", "--batch-size", "4", "--model", "standard"]
SIGNAL_RUN = tt.run_name("CIFAR100_ViT_Train", "standard", 0)
SIGNAL_TRAIN, SIGNAL_VAL = 32, 8


def wait_or_kill(pid: int, seconds: float) -> int:
    """The exit status of child ``pid``; a child still running after ``seconds`` is
    killed and the test fails instead of hanging."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the child {pid} did not stop within {seconds} s of the signal")


def fork_pausing_run(argv: list[str], marker: Path, pause_after: int, err: Path) -> int:
    """Fork a child that trains like ``python -m CIFAR100_ViT_Train ARGV`` (forked, it
    needs no second start-up) but, after ``pause_after`` samples, touches ``marker`` and
    waits inside the data loader, so that a signal sent then lands mid-epoch. Its stderr
    goes to ``err``; returns its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        # A shell starting a background job ignores SIGINT in it, and Python then installs
        # no handler: restore the interactive default so that the SIGINT below lands.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.stderr = open(err, "w", buffering=1)  # the child ends with os._exit below
        sys.stdout = open(os.devnull, "w")
        original, calls = dl.ImageDataset.__getitem__, [0]

        def pausing(self, index):
            calls[0] += 1
            if calls[0] > pause_after:
                marker.touch()
                while True:
                    time.sleep(0.01)
            return original(self, index)

        dl.ImageDataset.__getitem__ = pausing
        code = tt.main(CIFAR100_ViT_Train.SETUP, argv)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


@pytest.fixture(scope="module")
def cifar_reference(tmp_path_factory):
    """An uninterrupted 3-epoch ViT run on the tiny CIFAR fixture."""
    root = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as mp:
        data = write_cifar(root / "data", mp, n_train=SIGNAL_TRAIN, n_test=SIGNAL_VAL)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train(CIFAR100_ViT_Train, dirs(root, data) + SIGNAL_ARGS) == 0
    finally:
        torch.set_num_threads(threads)
    return root, data


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_signal_mid_epoch_then_resume(sig, cifar_reference, tmp_path, one_thread):
    ref, data = cifar_reference
    argv = dirs(tmp_path, data) + SIGNAL_ARGS
    marker, err_path = tmp_path / "in-epoch-2", tmp_path / "stderr.txt"
    pause_after = SIGNAL_TRAIN + SIGNAL_VAL + 10  # epoch 1, then 10 samples of epoch 2
    pid = fork_pausing_run(argv, marker, pause_after, err_path)
    deadline = time.monotonic() + 120
    while not marker.exists():
        done, _ = os.waitpid(pid, os.WNOHANG)
        assert not done, err_path.read_text()[-2000:]
        assert time.monotonic() < deadline, "the child never reached epoch 2"
        time.sleep(0.01)
    os.kill(pid, sig)
    status = wait_or_kill(pid, 120)
    err = err_path.read_text()
    if sig == signal.SIGINT:
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == tt.INTERRUPTED, err
        assert "Interrupted during epoch 2 of" in err
        assert "python -m CIFAR100_ViT_Train" in err and "--resume" in err
        assert "Traceback" not in err
    else:
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert [r["epoch"] for r in records(tmp_path / "log", SIGNAL_RUN)] == [1]

    assert train(CIFAR100_ViT_Train, argv + ["--resume"]) == 0
    assert metrics(ref / "log", SIGNAL_RUN) == metrics(tmp_path / "log", SIGNAL_RUN)
    same_checkpoint(ref / "ckpt" / f"{SIGNAL_RUN}_last.pt",
                    tmp_path / "ckpt" / f"{SIGNAL_RUN}_last.pt")
    assert not [p for p in (tmp_path / "ckpt").iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- (d) CIFAR


@pytest.mark.parametrize("script", [CIFAR100_VGG11_Train, CIFAR100_ResNet18_Train,
                                    CIFAR100_ViT_Train], ids=lambda m: m.__name__)
def test_cifar_smoke_and_resume(script, tmp_path, monkeypatch, one_thread, capsys):
    data = write_cifar(tmp_path / "data", monkeypatch)
    argv = dirs(tmp_path, data) + ["--seeds", "0", "--batch-size", "2",
                                   "--max-train-batches", "1", "--max-val-batches", "1"]
    assert tt.main(script.SETUP, argv + ["--epochs", "1"]) == 0
    assert tt.main(script.SETUP, argv + ["--epochs", "2", "--resume"]) == 0
    sides = ["standard", "gnn"]
    assert {p.stem for p in (tmp_path / "log").glob("*.jsonl")} == {
        tt.run_name(script.SETUP.script, side, 0) for side in sides}
    for side in sides:
        got = records(tmp_path / "log", tt.run_name(script.SETUP.script, side, 0))
        assert [r["epoch"] for r in got] == [1, 2]
        assert all(np.isfinite(r["train_loss"]) for r in got)
        assert got[0]["lr"] == script.SETUP.lr


# --------------------------------------------------------------------------- (e) DDP


def fork_ranks(script, argv: list[str], world_size: int,
               out: Path) -> list[tuple[int, str, str]]:
    """Run ``script`` as a ``world_size``-process job, one forked process per rank with the
    environment torchrun would give it (forked: no start-up per process). Returns each
    rank's (exit status, stdout, stderr)."""
    out.mkdir(parents=True)
    port, pids = free_port(), []
    for rank in range(world_size):
        pid = os.fork()
        if pid:
            pids.append(pid)
            continue
        code = 1
        try:
            os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                              LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1",
                              MASTER_PORT=str(port))
            sys.stdout = open(out / f"{rank}.out", "w", buffering=1)  # ends with os._exit
            sys.stderr = open(out / f"{rank}.err", "w", buffering=1)
            code = tt.main(script.SETUP, argv)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline, codes = time.monotonic() + 120, {}
    while len(codes) < len(pids):
        for rank, pid in enumerate(pids):
            if rank not in codes:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes[rank] = os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            for rank, pid in enumerate(pids):
                if rank not in codes:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
            pytest.fail("the ranks did not finish within 120 s")
        time.sleep(0.01)
    return [(codes[r], (out / f"{r}.out").read_text(), (out / f"{r}.err").read_text())
            for r in range(world_size)]


def test_ddp_gloo_two_processes(tmp_path, one_thread):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    data = write_cwru(tmp_path / "data", n=115)  # 23 val windows: one rank gets padding
    argv = dirs(tmp_path, data) + ["--epochs", "2", "--seeds", "0", "--batch-size", "8",
                                   "--lr", "1e-3", "--model", "both"]
    outputs = fork_ranks(CWRU_1DCNN_Train, argv, 2, tmp_path / "ranks")
    for code, _, err in outputs:
        assert code == 0, err[-3000:]
    assert outputs[0][1].count("Epoch 2/2") == 2  # once per side: rank 0 alone reports
    assert "Epoch" not in outputs[1][1]
    std = records(tmp_path / "log", "CWRU_1DCNN_Train_standard_seed0")
    gnn = records(tmp_path / "log", "CWRU_1DCNN_Train_gnn_seed0")
    assert [r["epoch"] for r in std] == [r["epoch"] for r in gnn] == [1, 2]
    assert all(r["world_size"] == 2 for r in std + gnn)
    for a, b in zip(std, gnn):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)

    # The all-reduced val metrics are those of the whole val set, counted once.
    ckpt = torch.load(tmp_path / "ckpt" / "CWRU_1DCNN_Train_standard_seed0_last.pt",
                      weights_only=False)
    assert len(ckpt["rng"]) == 2
    model = build_twin("cwru", None, 0, "standard")
    model.load_state_dict(ckpt["model"])
    model.eval()
    _, val = dl.get_dataloaders_CWRU(data, batch_size=64, seed=0)
    x, y = next(iter(val))
    with torch.no_grad():
        logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits, y).item()
    acc = 100.0 * (logits.argmax(1) == y).double().mean().item()
    assert len(y) == 23
    assert std[-1]["val_loss"] == pytest.approx(loss, abs=1e-5)
    assert std[-1]["val_acc"] == pytest.approx(acc, abs=1e-9)


# --------------------------------------------------------------------------- real data


def test_real_cwru_short_run(tmp_path, one_thread, shared_cwru):
    argv = dirs(tmp_path, shared_cwru) + ["--epochs", "1", "--seeds", "0",
                                          "--max-train-batches", "5"]
    assert train(CWRU_1DCNN_Train, argv) == 0
    std = records(tmp_path / "log", "CWRU_1DCNN_Train_standard_seed0")
    gnn = records(tmp_path / "log", "CWRU_1DCNN_Train_gnn_seed0")
    assert std[0]["train_loss"] == pytest.approx(gnn[0]["train_loss"], abs=1e-5)
    assert std[0]["val_loss"] == pytest.approx(gnn[0]["val_loss"], abs=1e-5)
