"""The MNIST INR set of the neural-graphs experiments: one SIREN fitted per image (of MNIST,
Fashion-MNIST or CIFAR-10, :attr:`FitConfig.dataset`; colour images get one SIREN output
per channel, :attr:`FitConfig.out_features`).

:func:`run_fit` (driven by ``python -m MNIST_INR_Fit``) fits the INRs of a
:class:`FitConfig` with the batched core :func:`~neural_graphs.siren_fit.fit_sirens` and
keeps them in the store of :mod:`utils.store`: the INRs are cut into shards, each written
atomically with a metadata file that holds its sha256; a run that is killed continues with
the shards it has not finished (a damaged shard is fitted again), ``torchrun`` ranks take
every ``world_size``-th shard, and whichever process finds every shard done writes
``manifest.json`` (kind ``inr-set``) and ``renders.png``. :func:`load_inr_set` reads a
finished set back, every shard checked against its sha256 and every INR for finite weights.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from neural_graphs.inr import render, siren_from_params
from neural_graphs.inr_splits import (
    SPLITS,
    InrPlan,
    limit_counts,
    stratified_limit,
    stratified_split,
)
from neural_graphs.siren_fit import (
    FitResult,
    fit_sirens,
    init_siren_params,
    inr_seed,
    psnr_from_mse,
)
from utils import store
from utils.atomic import atomic_write
from utils.memory import keep_freed_memory  # public here since the first release
from utils.store import ConfigMismatchError, StoreError

__all__ = [
    "ConfigMismatchError",
    "DEFAULT_DATASET",
    "IMPLIED_FIELDS",
    "FitConfig",
    "FitResult",
    "InrPlan",
    "RECIPES",
    "ReusedInrs",
    "SPLITS",
    "StoreError",
    "check_config",
    "fit_dataset",
    "fit_image_shape",
    "fit_sirens",
    "images_digest",
    "keep_freed_memory",
    "init_siren_params",
    "inr_seed",
    "limit_counts",
    "load_inr_set",
    "parameter_statistics",
    "psnr_from_mse",
    "render",
    "require_grey",
    "run_fit",
    "siren_from_params",
    "stratified_limit",
    "stratified_split",
]

# recipe -> (first-layer init of SIREN, Adam learning rate, steps)
RECIPES: dict[str, dict[str, Any]] = {
    "published": {"first_layer_init": "reference", "lr": 1e-3, "steps": 2000},
    "fast": {"first_layer_init": "siren", "lr": 1e-3, "steps": 300},
}

DEFAULT_DATASET = "mnist"  # the image set of a configuration that records none
#: Fields a configuration records only when they differ from these values, so that a set
#: written before the field existed keeps its configuration and digest (and still resumes
#: and loads), and a configuration without the field reads as this value.
IMPLIED_FIELDS: dict[str, Any] = {"dataset": DEFAULT_DATASET, "out_features": 1,
                                  "image_height": 28, "image_width": 28}
CONFIG_FILE = "fit_config.json"
RENDERS = "renders.png"
RENDER_LABEL_WIDTH = 80  # pixels left of the grid of renders.png for the row labels
RENDER_TEXT_HEIGHT = 16  # pixels above (split names) and below (PSNRs) the grid

# --------------------------------------------------------------------------- the data set


@dataclass(frozen=True)
class FitConfig:
    """Everything that decides the fitted INRs of a run (what ``--out`` must agree on).

    Attributes:
        recipe: ``"published"`` or ``"fast"`` (:data:`RECIPES`).
        first_layer_init: ``SIREN(first_layer_init=...)`` of the recipe.
        steps, lr: Adam steps per INR and learning rate.
        seed: seeds the split and every INR's initialisation (:func:`inr_seed`).
        source: where the images come from (``"train"``, ``"test-split"``, ...).
        limit: the stratified subset size, or None for every image.
        copies: extra INRs per training image, from other initialisations.
        batch_inrs: INRs fitted together; shard_size: INRs per shard file.
        stop_psnr: per-INR early stop (dB) or None; check_every: steps between checks.
        dtype: ``"float32"`` or ``"float64"``.
        images_sha256: sha256 of the selected images and labels.
        omega_0, out_offset, hidden_features, hidden_layers: the SIREN.
        dataset: the image set (``"mnist"``, ``"fashion-mnist"``: a name of
            :data:`utils.images.IDX_DATASETS`; ``"cifar10"``; or another source's name).
        out_features: the SIREN's outputs, one per image channel (1 grey, 3 colour).
        image_height, image_width: the pixel grid the INRs were fitted on
            (:func:`~neural_graphs.inr.make_coordinates`).

    ``dataset``, ``out_features`` and the image size are recorded (in :meth:`to_dict`, so
    in ``fit_config.json``, the manifest and :meth:`digest`) only when they differ from
    :data:`IMPLIED_FIELDS` (MNIST, one output, 28x28): an MNIST set written before the
    fields existed keeps its configuration and digest, so it still resumes and loads.
    """

    recipe: str
    first_layer_init: str
    steps: int
    lr: float
    seed: int
    source: str
    limit: int | None
    copies: int
    batch_inrs: int
    shard_size: int
    stop_psnr: float | None
    check_every: int
    dtype: str
    images_sha256: str
    omega_0: float = 30.0
    out_offset: float = 0.5
    hidden_features: int = 32
    hidden_layers: int = 2
    dataset: str = DEFAULT_DATASET
    out_features: int = 1
    image_height: int = 28
    image_width: int = 28

    def to_dict(self) -> dict[str, Any]:
        """The configuration as recorded (fields at their :data:`IMPLIED_FIELDS` value left
        out)."""
        record = asdict(self)
        for key, value in IMPLIED_FIELDS.items():
            if record[key] == value:
                del record[key]
        return record

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def fit_dataset(config: dict[str, Any]) -> str:
    """The image set a recorded configuration (``fit_config.json``, a manifest's
    ``config``) was fitted to: its ``dataset``, ``"mnist"`` when it records none."""
    return str(config.get("dataset", DEFAULT_DATASET))


def fit_image_shape(config: dict[str, Any]) -> tuple[int, int, int]:
    """``(height, width, channels)`` of the images a recorded configuration was fitted to
    (28, 28, 1 for a configuration that records none)."""
    return tuple(int(config.get(key, IMPLIED_FIELDS[key]))  # type: ignore[return-value]
                 for key in ("image_height", "image_width", "out_features"))


def require_grey(config: dict[str, Any], job: str) -> None:
    """Refuse, naming ``job``, an INR set of colour images (more than one SIREN output):
    the jobs that compare renders with grey 28x28 images read only grey sets."""
    height, width, channels = fit_image_shape(config)
    if channels != 1:
        raise ValueError(f"{job} reads INR sets of grey images (one SIREN output); this set "
                         f"was fitted to {fit_dataset(config)} images of {height}x{width} "
                         f"pixels and {channels} channels")


def images_digest(images: np.ndarray, labels: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


def check_config(out: Path, config: FitConfig) -> None:
    """Record ``config`` in ``out``, or raise :class:`ConfigMismatchError` when ``out``
    already holds INRs of another configuration (nothing is changed then)."""
    store.check_config(out, config.to_dict(), CONFIG_FILE, "INRs")


def _shard_done(out: Path, shard: int, digest: str) -> dict[str, Any] | None:
    return store.shard_done(out, shard, digest, log=tqdm.write,
                            redo="fitting this shard again")


@dataclass
class ReusedInrs:
    """The INRs of a finished set, found by ``(image index, copy)``: a run given them
    (``run_fit(reuse=...)``, ``MNIST_INR_Fit --reuse DIR``) takes each INR it plans from
    there instead of fitting it again. An INR is a function of the configuration, its image
    and its seed ``(seed, image index, copy)`` alone (a fit does not depend on which INRs
    share its group), so a taken INR is the one the run would have fitted."""

    folder: Path
    params: dict[str, Tensor]
    psnr: Tensor
    steps: Tensor
    labels: Tensor
    row: dict[tuple[int, int], int]

    #: configuration fields the reused set may have otherwise: they decide which INRs a
    #: set holds and how it is cut, not what an INR is
    FREE_FIELDS = ("copies", "limit", "images_sha256", "batch_inrs", "shard_size")

    @classmethod
    def read(cls, folder: str | Path, config: FitConfig) -> ReusedInrs:
        """The INRs in ``folder``, checked against ``config``.

        Raises:
            FileNotFoundError: ``folder`` holds no finished INR set.
            ConfigMismatchError: its INRs were fitted another way (the message names the
                fields), so they are not the INRs ``config`` asks for.
        """
        folder = Path(folder)
        manifest = store.read_manifest(folder, "inr-set")
        theirs, ours = manifest["config"], config.to_dict()
        differ = sorted(key for key in set(theirs) | set(ours)
                        if key not in cls.FREE_FIELDS and theirs.get(key) != ours.get(key))
        if differ:
            raise ConfigMismatchError(
                f"--reuse {folder}: its INRs were fitted another way (" + "; ".join(
                    f"{key}: there {theirs.get(key)!r}, here {ours.get(key)!r}"
                    for key in differ) + f"); only {', '.join(cls.FREE_FIELDS)} may differ")
        parts = _read_shards(folder, manifest)
        inrs = manifest["inrs"]
        params = {key: torch.cat([s["params"][key] for s in parts]) for key in parts[0]["params"]}
        return cls(folder, params, torch.cat([s["psnr"] for s in parts]),
                   torch.cat([s["steps"] for s in parts]),
                   torch.cat([s["labels"] for s in parts]),
                   {(int(i), int(c)): r for r, (i, c)
                    in enumerate(zip(inrs["image_index"], inrs["copy"]))})

    def find(self, plan: InrPlan, rows: np.ndarray, labels: np.ndarray) -> dict[int, int]:
        """``{plan row: row here}`` for the planned INRs this set holds.

        Raises:
            ConfigMismatchError: one of them has another label here than in the plan (the
                sets were fitted to different images).
        """
        found = {int(r): self.row[key] for r in rows
                 if (key := (int(plan.image_index[r]), int(plan.copy[r]))) in self.row}
        for planned, here in found.items():
            if int(self.labels[here]) != int(labels[plan.image_index[planned]]):
                raise ConfigMismatchError(
                    f"--reuse {self.folder}: its INR of image {plan.image_index[planned]} has "
                    f"label {int(self.labels[here])}, the image here has "
                    f"{int(labels[plan.image_index[planned]])}: fitted to other images")
        return found


def _fit_shard(out: Path, shard: int, rows: np.ndarray, plan: InrPlan, images: np.ndarray,
               labels: np.ndarray, config: FitConfig, device: torch.device,
               bar: tqdm, fitted_psnr: list[float], reuse: ReusedInrs | None = None
               ) -> dict[str, Any]:
    dtype = getattr(torch, config.dtype)
    start = time.perf_counter()
    taken = reuse.find(plan, rows, labels) if reuse is not None else {}
    fit_rows = np.asarray([r for r in rows if int(r) not in taken], dtype=np.int64)
    bar.update(len(taken))
    pieces: list[FitResult] = []
    for group_start in range(0, len(fit_rows), config.batch_inrs):
        group = fit_rows[group_start:group_start + config.batch_inrs]
        seeds = [inr_seed(config.seed, plan.image_index[r], plan.copy[r]) for r in group]
        params = init_siren_params(seeds, config.first_layer_init, dtype, device,
                                   hidden_features=config.hidden_features,
                                   hidden_layers=config.hidden_layers,
                                   out_features=config.out_features,
                                   omega_0=config.omega_0, out_offset=config.out_offset)
        targets = torch.from_numpy(images[plan.image_index[group]]).to(device, dtype) / 255.0

        def show(step: int, psnr: Tensor, size: int = len(group)) -> None:
            bar.set_postfix_str(f"shard {shard} step {step}/{config.steps}: "
                                f"{psnr.mean().item():.2f} dB over {psnr.numel()}/{size}"
                                f" active; done {np.mean(fitted_psnr) if fitted_psnr else 0:.2f}"
                                " dB")

        result = fit_sirens(params, targets, config.steps, config.lr,
                            omega_0=config.omega_0, out_offset=config.out_offset,
                            stop_psnr=config.stop_psnr, check_every=config.check_every,
                            on_check=show)
        pieces.append(result)
        fitted_psnr.extend(result.psnr.tolist())
        bar.update(len(group))
        if bar.disable:
            print(f"shard {shard}: {group_start + len(group)}/{len(fit_rows)} INRs fitted, "
                  f"group {result.psnr.mean().item():.2f} dB, running mean "
                  f"{np.mean(fitted_psnr):.2f} dB, {time.perf_counter() - start:.1f} s",
                  flush=True)
    fitted = {key: torch.cat([getattr(p, key) if key in ("psnr", "steps") else p.params[key]
                              for p in pieces]).cpu()
              for key in ([*pieces[0].params, "psnr", "steps"] if pieces else [])}
    whole = _in_row_order(rows, fit_rows, fitted, taken, reuse)
    params, psnr = {key: whole[key] for key in whole if key not in ("psnr", "steps")}, whole["psnr"]
    content = {"params": params,
               "labels": torch.from_numpy(labels[plan.image_index[rows]]),
               "image_index": torch.from_numpy(plan.image_index[rows]),
               "copy": torch.from_numpy(plan.copy[rows]),
               "split": [plan.split[r] for r in rows],
               "psnr": psnr,
               "steps": whole["steps"]}
    return store.write_shard(out, shard, content, {
        "shard": shard, "count": len(rows), "first_inr": int(rows[0]), "reused": len(taken),
        "config_sha256": config.digest(), "seconds": round(time.perf_counter() - start, 3),
        "psnr_mean": float(psnr.double().mean())}, indent=2)


def _in_row_order(rows: np.ndarray, fit_rows: np.ndarray, fitted: dict[str, Tensor],
                  taken: dict[int, int], reuse: ReusedInrs | None) -> dict[str, Tensor]:
    """A shard's parameters, ``psnr`` and ``steps`` in ``rows`` order, from the INRs fitted
    (``fitted``, of ``fit_rows``) and those taken from ``reuse`` (``taken``)."""
    if not taken:
        return fitted
    at = {int(r): i for i, r in enumerate(rows)}
    mine = torch.as_tensor([at[int(r)] for r in fit_rows], dtype=torch.long)
    theirs = torch.as_tensor([at[r] for r in taken], dtype=torch.long)
    source = torch.as_tensor(list(taken.values()), dtype=torch.long)
    whole = {}
    for key, reused in {**reuse.params, "psnr": reuse.psnr, "steps": reuse.steps}.items():
        whole[key] = reused.new_empty((len(rows), *reused.shape[1:]))
        whole[key][theirs] = reused[source]
        if key in fitted:
            whole[key][mine] = fitted[key].to(reused.dtype)
    return whole


PUBLISHED_STATISTICS: dict[str, dict[str, float]] = {
    # std (and the output-bias mean) of the published MNIST INR set, mnist_statistics.pth
    # of neural-graphs (../shared/SPEC.md 4.1); other means are ~0
    "net.0.weight": {"std": 0.066}, "net.2.weight": {"std": 0.018},
    "net.4.weight": {"std": 0.118}, "net.0.bias": {"std": 0.021},
    "net.2.bias": {"std": 0.011}, "net.4.bias": {"std": 0.10, "mean": -0.012},
}


def parameter_statistics(params: dict[str, Tensor]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of every element of each stacked parameter tensor (all
    INRs together), as the published set's statistics are computed."""
    return {key: {"mean": float(value.double().mean()), "std": float(value.double().std())}
            for key, value in params.items()}


def _psnr_summary(psnr: np.ndarray) -> dict[str, float]:
    if psnr.size == 0:
        return {"count": 0}
    quantiles = np.percentile(psnr, [5, 25, 50, 75, 95])
    return {"count": int(psnr.size), "mean": float(psnr.mean()), "std": float(psnr.std()),
            "min": float(psnr.min()), "p5": float(quantiles[0]), "p25": float(quantiles[1]),
            "median": float(quantiles[2]), "p75": float(quantiles[3]),
            "p95": float(quantiles[4]), "max": float(psnr.max())}


def _write_renders(path: Path, params: dict[str, Tensor], psnr: np.ndarray,
                   images: np.ndarray, plan: InrPlan, config: FitConfig, per_split: int = 6,
                   zoom: int = 3) -> None:
    """A labelled PNG grid: one column per INR (the first ``per_split`` of each split, in
    :data:`SPLITS` order, the split named above its first column), the image in the row
    ``original``, the INR's render (clipped to [0, 1]) in the row ``INR render``, and the
    INR's PSNR (dB, of the raw output: the manifest's) under each render."""
    import cv2

    picks = [row for name in SPLITS
             for row in [r for r in range(len(plan)) if plan.split[r] == name][:per_split]]
    chosen = {key: value[picks].double() for key, value in params.items()}
    height, width = images.shape[1:3]
    renders = render(chosen, (height, width), omega_0=config.omega_0,
                     out_offset=config.out_offset).clamp(0, 1).mul(255).round()
    gap = 2
    tiles = np.full((2 * height + 3 * gap, len(picks) * (width + gap) + gap,
                     *images.shape[3:]), 128, np.uint8)
    for column, row in enumerate(picks):
        left = gap + column * (width + gap)
        tiles[gap:gap + height, left:left + width] = images[plan.image_index[row]]
        tiles[2 * gap + height:2 * gap + 2 * height, left:left + width] = (
            renders[column].numpy().astype(np.uint8))
    tiles = cv2.resize(tiles, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
    if tiles.ndim == 3:
        tiles = np.ascontiguousarray(tiles[..., ::-1])  # RGB images, BGR for cv2
    margin, strip = RENDER_LABEL_WIDTH, RENDER_TEXT_HEIGHT
    canvas = np.full((tiles.shape[0] + 2 * strip, tiles.shape[1] + margin, *tiles.shape[2:]),
                     255, np.uint8)
    canvas[strip:strip + tiles.shape[0], margin:] = tiles
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4

    def text(words: str, x: int, y: int) -> None:
        cv2.putText(canvas, words, (x, y), font, scale, 0, 1, cv2.LINE_AA)

    for label, tile_row in (("original", 0), ("INR render", 1)):
        text(label, 4, strip + zoom * (gap + tile_row * (height + gap) + height // 2))
    step = zoom * (width + gap)
    for column, row in enumerate(picks):
        left = margin + zoom * gap + column * step
        if column == 0 or plan.split[picks[column - 1]] != plan.split[row]:
            text(plan.split[row], left, strip - 5)
        text(f"{psnr[row]:.1f} dB", left, canvas.shape[0] - 5)
    ok, encoded = cv2.imencode(".png", canvas)
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    with atomic_write(path) as f:
        f.write(encoded.tobytes())


def _assemble_manifest(out: Path, config: FitConfig, plan: InrPlan, images: np.ndarray,
                       metas: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    # Every shard was checked against its sha256 by _shard_done just before.
    shards = [store.read_shard(out, meta, "inr-set", verify=False) for meta in metas]
    params = {key: torch.cat([s["params"][key] for s in shards]) for key in shards[0]["params"]}
    psnr = torch.cat([s["psnr"] for s in shards]).double().numpy()
    steps = torch.cat([s["steps"] for s in shards]).numpy()
    labels = torch.cat([s["labels"] for s in shards]).numpy()
    splits = [name for s in shards for name in s["split"]]
    train = [i for i, name in enumerate(splits) if name == "train"]
    height, width = images.shape[1:3]
    manifest = {
        "config": config.to_dict(),
        "config_sha256": config.digest(),
        "coordinates": f"make_coordinates({height}, {width}): pixel (row r, column c) is "
                       f"point {width} r + c at (x, y) = (linspace(-1, 1, {width})[c], "
                       f"linspace(-1, 1, {height})[r])",
        "psnr_definition": "10 log10(1 / MSE) of the raw INR output against pixels / 255"
                           + ("" if config.out_features == 1 else
                              f", the MSE averaged over the {config.out_features} channels"),
        "count": len(plan),
        "split_sizes": {name: splits.count(name) for name in SPLITS},
        "split_label_counts": {name: np.bincount(labels[[i for i, s in enumerate(splits)
                                                         if s == name]],
                                                 minlength=10).tolist() for name in SPLITS},
        "shards": [{"file": meta["file"], "sha256": meta["sha256"], "count": meta["count"],
                    "seconds": meta["seconds"]} for meta in metas],
        "fit_seconds_total": round(sum(meta["seconds"] for meta in metas), 3),
        "reused_inrs": sum(meta.get("reused", 0) for meta in metas),
        "psnr_mean": float(psnr.mean()),
        "psnr_summary": {"all": _psnr_summary(psnr),
                         **{name: _psnr_summary(psnr[[s == name for s in splits]])
                            for name in SPLITS}},
        "steps_mean": float(steps.mean()),
        "statistics": parameter_statistics(params),
        "statistics_train": parameter_statistics({k: v[train] for k, v in params.items()}),
        "published_statistics": PUBLISHED_STATISTICS,
        "renders": {"file": RENDERS, "layout": "one column per INR: the first 6 of train, "
                    "val and test; top row the image, bottom row the INR render, its PSNR "
                    "below it"},
        **extra,
        "inrs": {"image_index": plan.image_index.tolist(), "copy": plan.copy.tolist(),
                 "label": labels.tolist(), "split": splits,
                 "psnr": [round(float(v), 4) for v in psnr], "steps": steps.tolist()},
    }
    _write_renders(out / RENDERS, params, psnr, images, plan, config)
    return store.write_manifest(out, "inr-set", manifest)


def run_fit(images: np.ndarray, labels: np.ndarray, splits: dict[str, np.ndarray],
            config: FitConfig, out: str | Path, device: torch.device | str = "cpu",
            rank: int = 0, world_size: int = 1, extra: dict[str, Any] | None = None,
            progress: bool | None = None, reuse: str | Path | None = None
            ) -> dict[str, Any] | None:
    """Fit (or finish fitting) the INR set of ``config`` into ``out``.

    This process fits every ``world_size``-th shard from ``rank`` that is not already
    finished (a finished shard has a metadata file whose sha256 matches the shard file);
    whichever process then finds every shard finished writes ``manifest.json`` and the
    render grid, and gets the manifest back (the others get None).

    Args:
        images (np.ndarray): uint8 images ``[N, H, W]`` (``[N, H, W, C]``, channels last,
            with ``config.out_features`` C), indexed by ``splits``.
        labels (np.ndarray): their labels ``[N]``.
        splits (dict): image indices per split name (:data:`SPLITS`).
        config (FitConfig): the run's configuration (checked against ``out``).
        out (path): output folder.
        device: where to fit.
        rank, world_size: this process among ``torchrun``'s.
        extra (dict, optional): more entries for the manifest.
        progress (bool, optional): a live bar (default: when stderr is a terminal);
            otherwise one printed line per fitted group.
        reuse (path, optional): a finished set whose INRs this run takes instead of
            fitting them again (:class:`ReusedInrs`; e.g. the set without ``copies``).
    """
    out = Path(out)
    channels = () if config.out_features == 1 else (config.out_features,)
    shape = f"[N, H, W{''.join(f', {c}' for c in channels)}]"
    if (images.ndim != 3 + len(channels) or images.shape[3:] != channels
            or images.dtype != np.uint8 or labels.shape != (images.shape[0],)):
        raise ValueError(f"images must be uint8 {shape} (out_features "
                         f"{config.out_features}) with labels [N], got {images.dtype} "
                         f"{images.shape} and {labels.shape}")
    if images.shape[1:3] != (config.image_height, config.image_width):
        raise ValueError(f"the configuration says {config.image_height}x{config.image_width} "
                         f"images, got {images.shape[1]}x{images.shape[2]}")
    if config.recipe not in RECIPES or config.dtype not in ("float32", "float64"):
        raise ValueError(f"unknown recipe {config.recipe!r} or dtype {config.dtype!r}")
    if config.batch_inrs < 1 or config.shard_size < 1:
        raise ValueError("batch_inrs and shard_size must be positive")
    check_config(out, config)
    plan = InrPlan.build(splits, config.copies)
    if len(plan) == 0:
        raise ValueError("no images selected: nothing to fit")
    shard_count = math.ceil(len(plan) / config.shard_size)
    digest = config.digest()
    mine = [s for s in range(shard_count) if s % world_size == rank]
    todo = [s for s in mine if _shard_done(out, s, digest) is None]
    total = sum(min(config.shard_size, len(plan) - s * config.shard_size) for s in todo)
    if progress is None:
        progress = sys.stderr.isatty()
    if len(todo) < len(mine):
        print(f"rank {rank}: {len(mine) - len(todo)} of {len(mine)} shards already fitted "
              "(checksums verified), continuing", flush=True)
    reused = ReusedInrs.read(reuse, config) if reuse is not None and todo else None
    fitted_psnr: list[float] = []
    with tqdm(total=total, desc=f"INRs (rank {rank})", unit="INR", disable=not progress,
              dynamic_ncols=True) as bar:
        for shard in todo:
            rows = np.arange(shard * config.shard_size,
                             min((shard + 1) * config.shard_size, len(plan)))
            _fit_shard(out, shard, rows, plan, images, labels, config, torch.device(device),
                       bar, fitted_psnr, reused)
    metas = [_shard_done(out, s, digest) for s in range(shard_count)]
    if any(meta is None for meta in metas):
        missing = sum(meta is None for meta in metas)
        print(f"rank {rank}: done; {missing} shard(s) still being fitted by other ranks, the "
              "last to finish writes the manifest", flush=True)
        return None
    return _assemble_manifest(out, config, plan, images, metas, extra or {})


def load_inr_set(out_dir: str | Path, manifest: dict[str, Any] | None = None
                 ) -> tuple[dict[str, Tensor], Tensor, list[str], dict[str, Any]]:
    """Read a finished INR set (every shard checked against its sha256 in the manifest).
    ``manifest``: the set's manifest when the caller has read it already.

    Returns:
        ``(params, labels, splits, manifest)``: stacked SIREN parameters
        ``{"net.0.weight": [n, 32, 2], ...}`` (:func:`siren_from_params` and
        :func:`render` take them), labels ``[n]``, the split name of each INR, and the
        manifest (configuration, per-INR image index, copy, PSNR and steps, statistics).

    Raises:
        FileNotFoundError: no manifest (the fit has not finished).
        StoreError: the folder is another kind of set (a CNN zoo), a shard is missing or
            damaged (re-running the fit command repairs it), or an INR holds weights that
            are not finite (the message names its shard and index).
    """
    out = Path(out_dir)
    if manifest is None:
        manifest = store.read_manifest(out, "inr-set")
    parts = _read_shards(out, manifest)
    params = {key: torch.cat([s["params"][key] for s in parts]) for key in parts[0]["params"]}
    labels = torch.cat([s["labels"] for s in parts])
    splits = [name for s in parts for name in s["split"]]
    return params, labels, splits, manifest


def _read_shards(out: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every shard of a finished set, checked against its sha256 and for finite weights."""
    parts, first = [], 0
    for entry in manifest["shards"]:
        shard = store.read_shard(out, entry, "inr-set")
        _check_finite(out / entry["file"], shard["params"], first, manifest)
        first += len(shard["split"])
        parts.append(shard)
    return parts

def _check_finite(path: Path, params: dict[str, Tensor], first: int,
                  manifest: dict[str, Any]) -> None:
    """Raise :class:`StoreError` naming the first INR of a shard whose weights are not
    all finite."""
    for key, value in params.items():
        bad = (~value.reshape(value.shape[0], -1).isfinite().all(1)).nonzero().flatten()
        if bad.numel():
            index = int(bad[0])
            images = manifest.get("inrs", {}).get("image_index")
            image = images[first + index] if images else None
            raise StoreError(
                f"INR {index} of shard {path} (INR {first + index} of the set, image "
                f"{image}) holds weights that are not finite (NaN or inf) in "
                f"{key}, as do {bad.numel() - 1} other INR(s) of that shard: the set cannot "
                "be used as it is; fit a new set (e.g. with a lower --lr) into another --out")
