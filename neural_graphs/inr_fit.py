"""Fit one SIREN per image, many at once: the MNIST INR set of the neural-graphs experiments.

The fitting core (:func:`fit_sirens`) trains ``n`` SIRENs of one architecture together,
held as stacked tensors (``{"net.0.weight": [n, 32, 2], ...}``, the SIREN state_dict keys
with a leading INR dimension). The forward and backward passes are written out by hand: each
layer is one batched matrix product (``torch.bmm``) with the bias folded in as an extra
column of the weight matrix; the first layer, on the pixel grid every INR shares, is
separable (its sines come from those of the grid's axis values), and its weight gradient is
one GEMM over all INRs. Adam runs on the stacked tensors. Each INR's loss is its own mean
squared error, and the losses are summed, not averaged, over INRs, so every INR gets exactly
the gradient and the Adam update it would get alone (``torch.optim.Adam`` on a single
``SIREN``; the tests hold this to 1e-10 in float64). INRs that reach ``stop_psnr`` leave the
batch (per-INR early stopping).

The data set around it (:func:`run_fit`, driven by ``python -m MNIST_INR_Fit``): the INRs are
cut into shards, each written atomically with a metadata file that holds its sha256; a run
that is killed continues with the shards it has not finished, ``torchrun`` ranks take every
``world_size``-th shard, and whichever process finds every shard done writes
``manifest.json``. :func:`load_inr_set` reads a finished set back.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from neural_graphs.inr import (
    SIREN,
    make_coordinates,
    render,
    siren_from_params,
    siren_layer_keys,
    stack_siren_params,
)
from utils.atomic import atomic_write, write_text_atomic
from utils.checksums import file_hexdigest

__all__ = [
    "ConfigMismatchError",
    "FitConfig",
    "FitResult",
    "InrPlan",
    "RECIPES",
    "SPLITS",
    "check_config",
    "fit_sirens",
    "init_siren_params",
    "inr_seed",
    "keep_freed_memory",
    "load_inr_set",
    "parameter_statistics",
    "psnr_from_mse",
    "render",
    "run_fit",
    "siren_from_params",
    "stratified_limit",
    "stratified_split",
]

SPLITS: tuple[str, ...] = ("train", "val", "test")

# recipe -> (first-layer init of SIREN, Adam learning rate, steps)
RECIPES: dict[str, dict[str, Any]] = {
    "published": {"first_layer_init": "reference", "lr": 1e-3, "steps": 2000},
    "fast": {"first_layer_init": "siren", "lr": 1e-3, "steps": 300},
}

MANIFEST = "manifest.json"
CONFIG_FILE = "fit_config.json"
RENDERS = "renders.png"


def keep_freed_memory(threshold_bytes: int = 1 << 30) -> bool:
    """Make glibc's malloc keep freed blocks (up to ``threshold_bytes``) for reuse instead
    of unmapping them: the fitting loop allocates the same few-MB tensors every step, and
    with glibc's defaults each of them is a fresh ``mmap`` whose pages fault in again,
    which costs as much system time as the computation itself on CPU. Process-wide, like
    ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``; returns False (and changes
    nothing) where the C library is not glibc."""
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, min(threshold_bytes, 1 << 25))
                and mallopt(m_trim_threshold, threshold_bytes))


def psnr_from_mse(mse: Tensor) -> Tensor:
    r"""Peak signal-to-noise ratio for pixel values in :math:`[0, 1]`:
    :math:`10 \log_{10}(1 / \text{MSE})` dB (the raw, unclipped INR output)."""
    return -10.0 * torch.log10(mse)


# --------------------------------------------------------------------------- initialisation


def inr_seed(seed: int, image_index: int, copy: int) -> int:
    """The seed of the initialisation of INR ``copy`` of image ``image_index``: a pure
    function of the three, so an INR starts the same whatever shard, rank or batch fits it."""
    state = np.random.SeedSequence([int(seed), int(image_index), int(copy)]).generate_state(2)
    return int(state[0]) << 32 | int(state[1])


def init_siren_params(seeds: Sequence[int], first_layer_init: str = "reference",
                      dtype: torch.dtype = torch.float32,
                      device: torch.device | str = "cpu", **siren_kwargs: Any
                      ) -> dict[str, Tensor]:
    """Stacked parameters of ``SIREN(first_layer_init=..., **siren_kwargs)`` built after
    ``torch.manual_seed(s)`` for each ``s`` of ``seeds`` (the global RNG is left as it was)."""
    nets = []
    with torch.random.fork_rng(devices=[]):
        for seed in seeds:
            torch.manual_seed(seed)
            nets.append(SIREN(first_layer_init=first_layer_init, **siren_kwargs))
    return {key: value.to(dtype=dtype, device=device)
            for key, value in stack_siren_params(nets).items()}


# --------------------------------------------------------------------------- fitting core


@dataclass
class FitResult:
    """What :func:`fit_sirens` returns.

    Attributes:
        params: fitted stacked parameters (the state_dict keys, leading INR dimension).
        mse: final mean squared error per INR, of the returned parameters.
        psnr: the same as PSNR in dB.
        steps: Adam steps each INR took (fewer than asked when it reached ``stop_psnr``).
    """

    params: dict[str, Tensor]
    mse: Tensor
    psnr: Tensor
    steps: Tensor


class _StackedSirens:
    r"""Stacked SIREN parameters in one flat buffer ``[n, D]``: per layer the augmented
    matrix :math:`[W_l \mid b_l]` of shape ``[out, in + 1]``, so that a ones row appended to
    each layer's input makes the bias part of the matrix product, forward and backward.

    The hand-written forward and backward (:meth:`loss_and_grad`) keep activations
    feature-major, ``[n, features, P]``. On a Cartesian grid (``axes`` given: the default
    grid of :func:`~neural_graphs.inr.make_coordinates`) the first layer is separable,
    :math:`z_{kp} = a_{k,c(p)} + b_{k,r(p)}` with :math:`a = \omega_0 (w_{k,x} x_c + b_k)`
    and :math:`b = \omega_0 w_{k,y} y_r`, so its sines and cosines come from those of the
    :math:`H + W` axis values by :math:`\sin(a + b) = \sin a \cos b + \cos a \sin b`
    and :math:`\cos(a + b) = \cos a \cos b - \sin a \sin b` instead of :math:`H W`
    evaluations; the same sums in another rounding, about 1e-7 relative in float32.
    """

    def __init__(self, params: dict[str, Tensor], omega_0: float, out_offset: float) -> None:
        self.layers = siren_layer_keys(params)
        self.shapes = [(params[w].shape[1], params[w].shape[2] + 1) for w, _ in self.layers]
        self.omega_0 = float(omega_0)
        self.out_offset = float(out_offset)
        count = params[self.layers[0][0]].shape[0]
        self.flat = torch.cat([torch.cat([params[w], params[b].unsqueeze(-1)], dim=2)
                               .reshape(count, -1) for w, b in self.layers], dim=1).contiguous()

    def augmented(self, flat: Tensor) -> list[Tensor]:
        """Views ``[n, out, in + 1]`` of each layer's ``[W | b]`` in ``flat``."""
        sizes = [rows * cols for rows, cols in self.shapes]
        return [part.view(flat.shape[0], *shape)
                for part, shape in zip(flat.split(sizes, dim=1), self.shapes)]

    def to_params(self, flat: Tensor) -> dict[str, Tensor]:
        """The state_dict-named stacked parameters held in ``flat``."""
        params = {}
        for (weight_key, bias_key), matrix in zip(self.layers, self.augmented(flat)):
            params[weight_key] = matrix[..., :-1].contiguous()
            params[bias_key] = matrix[..., -1].contiguous()
        return params

    def _first_layer(self, matrix: Tensor, grid: Tensor,
                     axes: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        """Sines (with a ones row appended) and cosines of the first layer."""
        count, width = matrix.shape[0], matrix.shape[1]
        points = grid.shape[1]
        hidden = torch.empty(count, width + 1, points, dtype=matrix.dtype, device=matrix.device)
        hidden[:, width] = 1.0
        if axes is None:
            z = torch.mm((matrix * self.omega_0).reshape(count * width, -1), grid)
            z = z.view(count, width, points)
            torch.sin(z, out=hidden[:, :width])
            return hidden, z.cos_()
        xs, ys = axes
        along_x = torch.addcmul(matrix[..., 2:3], matrix[..., 0:1], xs).mul_(self.omega_0)
        along_y = (matrix[..., 1:2] * ys).mul_(self.omega_0)
        sin_x, cos_x = torch.sin(along_x).unsqueeze(2), torch.cos(along_x).unsqueeze(2)
        sin_y, cos_y = torch.sin(along_y).unsqueeze(3), torch.cos(along_y).unsqueeze(3)
        grid_shape = (count, width, ys.shape[0], xs.shape[0])
        sines = hidden[:, :width].view(grid_shape)
        torch.mul(cos_y, sin_x, out=sines).addcmul_(sin_y, cos_x)
        cosines = torch.mul(cos_y, cos_x).addcmul_(sin_y, sin_x, value=-1.0)
        return hidden, cosines.view(count, width, points)

    def loss_and_grad(self, flat: Tensor, grid: Tensor, target: Tensor,
                      axes: tuple[Tensor, Tensor] | None = None,
                      with_grad: bool = True) -> tuple[Tensor, Tensor | None]:
        r"""Per-INR MSE of the stacked SIRENs ``flat`` against ``target``, and the gradient
        of the sum of those MSEs, flat like ``flat``.

        With :math:`u_l = W_l h_{l-1} + b_l`, :math:`h_l = \sin(\omega_0 u_l)`, output
        :math:`y = u_L + c` and :math:`E = \frac{1}{P}\sum_p (y_p - t_p)^2`:
        :math:`\delta_L = 2 (y - t) / P`, :math:`\delta_l = \omega_0 \cos(\omega_0 u_l)
        \odot W_{l+1}^T \delta_{l+1}`, :math:`\partial E / \partial [W_l \mid b_l] =
        \delta_l [h_{l-1}; 1]^T`.

        Shapes:
            - flat: :math:`(n, D)`; grid: :math:`(\text{in} + 1, P)` (coordinates, then a
              ones row); target: :math:`(n, \text{out}, P)`; axes: :math:`(W,)` and
              :math:`(H,)` with :math:`P = H W`, row-major
            - output: :math:`(n,)` and :math:`(n, D)`
        """
        matrices = self.augmented(flat)
        omega = self.omega_0
        hidden, cosine = self._first_layer(matrices[0], grid, axes)
        hiddens, cosines = [hidden], [cosine]
        for matrix in matrices[1:-1]:
            z = torch.bmm(matrix * omega, hiddens[-1])
            hidden = torch.empty(z.shape[0], z.shape[1] + 1, z.shape[2], dtype=z.dtype,
                                 device=z.device)
            hidden[:, -1] = 1.0
            torch.sin(z, out=hidden[:, :-1])
            hiddens.append(hidden)
            cosines.append(z.cos_())
        residual = torch.bmm(matrices[-1], hiddens[-1]).add_(self.out_offset).sub_(target)
        mse = residual.square().mean(dim=(1, 2))
        if not with_grad:
            return mse, None
        count = flat.shape[0]
        delta = residual.mul_(2.0 / (residual.shape[1] * residual.shape[2]))
        grads = [torch.bmm(delta, hiddens[-1].transpose(1, 2))]
        for depth in range(len(matrices) - 2, -1, -1):
            upper = matrices[depth + 1][..., :-1] * omega  # [n, out, in]
            if upper.shape[1] == 1:  # outer product: a broadcast, not a matrix product
                delta = cosines[depth].mul_(delta).mul_(upper.transpose(1, 2))
            else:
                delta = torch.bmm(upper.transpose(1, 2), delta).mul_(cosines[depth])
            if depth == 0:
                grad = torch.mm(delta.reshape(-1, delta.shape[2]), grid.t())
            else:
                grad = torch.bmm(delta, hiddens[depth - 1].transpose(1, 2))
            grads.append(grad)
        return mse, torch.cat([grad.reshape(count, -1) for grad in reversed(grads)], dim=1)


def fit_sirens(params: dict[str, Tensor], images: Tensor, steps: int, lr: float = 1e-3,
               betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
               omega_0: float = 30.0, out_offset: float = 0.5, stop_psnr: float | None = None,
               check_every: int = 25, coords: Tensor | None = None,
               on_check: Callable[[int, Tensor], None] | None = None) -> FitResult:
    r"""Fit stacked SIRENs, INR ``i`` to image ``i``, by Adam on the per-INR MSE.

    Every INR follows exactly the trajectory of ``torch.optim.Adam(siren.parameters(), lr,
    betas, eps)`` minimising ``((siren(coords) - image) ** 2).mean()`` alone: the loss
    summed over INRs has, for each INR's parameters, that INR's gradient, and Adam is
    elementwise.

    Args:
        params (dict): initial stacked SIREN parameters (not modified).
        images (Tensor): targets in :math:`[0, 1]`, row-major on the grid of
            :func:`~neural_graphs.inr.make_coordinates` (or of ``coords``).
        steps (int): Adam steps per INR.
        lr, betas, eps: Adam hyper-parameters (torch defaults but ``lr``).
        omega_0 (float): sine frequency of the SIRENs.
        out_offset (float): constant added to the SIREN output.
        stop_psnr (float, optional): an INR whose PSNR reaches this (checked every
            ``check_every`` steps, on the loss of the step's forward pass) stops there.
        check_every (int): steps between early-stopping checks and ``on_check`` calls.
        coords (Tensor, optional): :math:`(H W, \text{in})` coordinates instead of the
            default grid.
        on_check (callable, optional): ``on_check(step, psnr_of_active_inrs)``.

    Shapes:
        - images: :math:`(n, H, W)`
    """
    stacked = _StackedSirens(params, omega_0, out_offset)
    flat = stacked.flat
    count = flat.shape[0]
    if images.dim() != 3 or images.shape[0] != count:
        raise ValueError(f"images must be [{count}, H, W] (one per INR), got "
                         f"{tuple(images.shape)}")
    if steps < 0 or check_every < 1:
        raise ValueError(f"steps must be >= 0 and check_every >= 1, got {steps}, {check_every}")
    height, width = images.shape[1:]
    axes = None
    if coords is None:
        if stacked.shapes[0][1] != 3:
            raise ValueError("the default grid is 2-D; give coords for SIRENs with "
                             f"{stacked.shapes[0][1] - 1} input features")
        coords = make_coordinates(height, width, dtype=flat.dtype, device=flat.device)
        axes = (coords[:width, 0].contiguous(), coords[::width, 1].contiguous())
    if coords.shape != (height * width, stacked.shapes[0][1] - 1):
        raise ValueError(f"coords must be [{height * width}, {stacked.shapes[0][1] - 1}] for "
                         f"{height}x{width} images, got {tuple(coords.shape)}")
    coords = coords.to(dtype=flat.dtype, device=flat.device)
    grid = torch.cat([coords.t(), coords.new_ones(1, coords.shape[0])]).contiguous()
    target = images.to(dtype=flat.dtype, device=flat.device).reshape(count, 1, -1)
    beta1, beta2 = betas
    final_flat = flat.clone()
    final_mse = torch.full((count,), float("nan"), dtype=flat.dtype, device=flat.device)
    done_steps = torch.full((count,), steps, dtype=torch.long, device=flat.device)
    active = torch.arange(count, device=flat.device)
    exp_avg = torch.zeros_like(flat)
    exp_avg_sq = torch.zeros_like(flat)
    for step in range(1, steps + 1):
        mse, grad = stacked.loss_and_grad(flat, grid, target, axes)
        if (step - 1) % check_every == 0:
            psnr = psnr_from_mse(mse)
            if on_check is not None:
                on_check(step - 1, psnr)
            if stop_psnr is not None:
                finished = psnr >= stop_psnr
                if bool(finished.any()):
                    stopped = active[finished]
                    final_flat[stopped] = flat[finished]
                    final_mse[stopped] = mse[finished]
                    done_steps[stopped] = step - 1
                    keep = ~finished
                    active, flat, grad = active[keep], flat[keep], grad[keep]
                    exp_avg, exp_avg_sq, target = exp_avg[keep], exp_avg_sq[keep], target[keep]
                    if active.numel() == 0:
                        break
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** step
        bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        flat.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)
    if active.numel():
        mse, _ = stacked.loss_and_grad(flat, grid, target, axes, with_grad=False)
        final_flat[active] = flat
        final_mse[active] = mse
    return FitResult(params=stacked.to_params(final_flat), mse=final_mse,
                     psnr=psnr_from_mse(final_mse), steps=done_steps)


# --------------------------------------------------------------------------- splits


def _stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions ``0..n-1`` ordered so that every class is spread evenly along the order
    (class members shuffled, member ``j`` of a class of ``m`` placed at quantile
    ``(j + 0.5) / m``, ties broken at random): every prefix and every contiguous chunk of
    the order holds each class in proportion, to within one image."""
    labels = np.asarray(labels)
    quantile = np.empty(len(labels))
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        quantile[members] = (np.arange(len(members)) + 0.5) / len(members)
    return np.lexsort((rng.random(len(labels)), quantile))


def stratified_split(labels: np.ndarray, sizes: dict[str, int], seed: int
                     ) -> dict[str, np.ndarray]:
    """Split positions ``0..len(labels)-1`` into parts of the given ``sizes`` (in dict
    order; they must add up to ``len(labels)``), each stratified by label and seeded.
    Each part comes back in stratified order: any prefix of it is stratified too."""
    if sum(sizes.values()) != len(labels):
        raise ValueError(f"split sizes {sizes} add up to {sum(sizes.values())}, but there are "
                         f"{len(labels)} images")
    order = _stratified_order(labels, np.random.default_rng(seed))
    parts, start = {}, 0
    for name, size in sizes.items():
        chunk = order[start:start + size]
        parts[name] = chunk[_stratified_order(np.asarray(labels)[chunk],
                                              np.random.default_rng([seed, start]))]
        start += size
    return parts


def stratified_limit(splits: dict[str, np.ndarray], limit: int) -> dict[str, np.ndarray]:
    """The first images of each split (given in stratified order, as
    :func:`stratified_split` returns them), ``limit`` in all, shared between the splits in
    proportion to their sizes (largest remainders), so the subset keeps the split
    proportions and each part stays stratified."""
    total = sum(len(part) for part in splits.values())
    if not 1 <= limit <= total:
        raise ValueError(f"--limit must be between 1 and {total}, got {limit}")
    shares = {name: limit * len(part) / total for name, part in splits.items()}
    counts = {name: math.floor(share) for name, share in shares.items()}
    leftover = limit - sum(counts.values())
    for name in sorted(shares, key=lambda k: counts[k] - shares[k])[:leftover]:
        counts[name] += 1
    return {name: part[:counts[name]] for name, part in splits.items()}


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


class ConfigMismatchError(ValueError):
    """``--out`` holds INRs of another configuration."""


def images_digest(images: np.ndarray, labels: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


@dataclass
class InrPlan:
    """Which INR fits which image, in data-set order: splits in :data:`SPLITS` order, each
    split's images ascending, the copies of an image side by side."""

    image_index: np.ndarray
    copy: np.ndarray
    split: list[str]

    def __len__(self) -> int:
        return len(self.image_index)

    @classmethod
    def build(cls, splits: dict[str, np.ndarray], copies: int) -> InrPlan:
        if copies < 0:
            raise ValueError(f"--copies must be >= 0, got {copies}")
        image_index, copy, split = [], [], []
        for name in SPLITS:
            repeats = 1 + copies if name == "train" else 1
            for index in np.sort(splits.get(name, np.empty(0, dtype=np.int64))):
                image_index += [int(index)] * repeats
                copy += list(range(repeats))
                split += [name] * repeats
        return cls(np.asarray(image_index, dtype=np.int64), np.asarray(copy, dtype=np.int64),
                   split)


def _shard_paths(out: Path, shard: int) -> tuple[Path, Path]:
    return out / f"shard_{shard:05d}.pt", out / f"shard_{shard:05d}.json"


def _shard_done(out: Path, shard: int, config_digest: str) -> dict[str, Any] | None:
    """The metadata of a finished shard whose file matches its checksum, else None."""
    data_path, meta_path = _shard_paths(out, shard)
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("config_sha256") != config_digest:
        raise ConfigMismatchError(f"{meta_path} belongs to another configuration (its "
                                  f"config_sha256 differs from {out / CONFIG_FILE})")
    if not data_path.is_file() or file_hexdigest(data_path) != meta["sha256"]:
        tqdm.write(f"{data_path}: missing or not matching the sha256 in {meta_path.name}; "
                   "fitting this shard again")
        return None
    return meta


def check_config(out: Path, config: FitConfig) -> None:
    """Record ``config`` in ``out``, or raise :class:`ConfigMismatchError` when ``out``
    already holds INRs of another configuration (nothing is changed then)."""
    path = out / CONFIG_FILE
    wanted = config.to_dict()
    if path.is_file():
        saved = json.loads(path.read_text())
        differ = sorted(key for key in set(saved) | set(wanted)
                        if saved.get(key) != wanted.get(key))
        if differ:
            lines = ", ".join(f"{key}: {saved.get(key)!r} there, {wanted.get(key)!r} now"
                              for key in differ)
            raise ConfigMismatchError(
                f"{out} holds INRs fitted with another configuration ({lines}). Nothing was "
                "changed: give another --out, or rerun with the recorded settings to "
                "continue that run.")
        return
    if any(out.glob("shard_*")) or (out / MANIFEST).exists():
        raise ConfigMismatchError(f"{out} holds shards but no {CONFIG_FILE}: it was not "
                                  "written by this program; give another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(wanted, indent=2) + "\n")


def _fit_shard(out: Path, shard: int, rows: np.ndarray, plan: InrPlan, images: np.ndarray,
               labels: np.ndarray, config: FitConfig, device: torch.device,
               bar: tqdm, fitted_psnr: list[float]) -> dict[str, Any]:
    dtype = getattr(torch, config.dtype)
    start = time.perf_counter()
    pieces: list[FitResult] = []
    for group_start in range(0, len(rows), config.batch_inrs):
        group = rows[group_start:group_start + config.batch_inrs]
        seeds = [inr_seed(config.seed, plan.image_index[r], plan.copy[r]) for r in group]
        params = init_siren_params(seeds, config.first_layer_init, dtype, device,
                                   hidden_features=config.hidden_features,
                                   hidden_layers=config.hidden_layers,
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
            print(f"shard {shard}: {group_start + len(group)}/{len(rows)} INRs, group "
                  f"{result.psnr.mean().item():.2f} dB, running mean "
                  f"{np.mean(fitted_psnr):.2f} dB, {time.perf_counter() - start:.1f} s",
                  flush=True)
    params = {key: torch.cat([p.params[key] for p in pieces]).cpu() for key in pieces[0].params}
    psnr = torch.cat([p.psnr for p in pieces]).cpu()
    content = {"params": params,
               "labels": torch.from_numpy(labels[plan.image_index[rows]]),
               "image_index": torch.from_numpy(plan.image_index[rows]),
               "copy": torch.from_numpy(plan.copy[rows]),
               "split": [plan.split[r] for r in rows],
               "psnr": psnr,
               "steps": torch.cat([p.steps for p in pieces]).cpu()}
    buffer = io.BytesIO()
    torch.save(content, buffer)
    data_path, meta_path = _shard_paths(out, shard)
    with atomic_write(data_path) as f:
        f.write(buffer.getvalue())
    meta = {"shard": shard, "file": data_path.name,
            "sha256": hashlib.sha256(buffer.getvalue()).hexdigest(),
            "count": len(rows), "first_inr": int(rows[0]), "config_sha256": config.digest(),
            "seconds": round(time.perf_counter() - start, 3),
            "psnr_mean": float(psnr.double().mean())}
    write_text_atomic(meta_path, json.dumps(meta, indent=2) + "\n")
    return meta


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


def _write_renders(path: Path, params: dict[str, Tensor], images: np.ndarray,
                   plan: InrPlan, config: FitConfig, per_split: int = 6,
                   zoom: int = 3) -> None:
    """A PNG grid: one column per INR (the first ``per_split`` of each split, in
    :data:`SPLITS` order), the image on top, the INR's render (clipped to [0, 1]) below."""
    import cv2

    picks = [row for name in SPLITS
             for row in [r for r in range(len(plan)) if plan.split[r] == name][:per_split]]
    chosen = {key: value[picks].double() for key, value in params.items()}
    renders = render(chosen, images.shape[1:], omega_0=config.omega_0,
                     out_offset=config.out_offset).clamp(0, 1).mul(255).round()
    height, width = images.shape[1:]
    gap = 2
    canvas = np.full((2 * height + 3 * gap, len(picks) * (width + gap) + gap), 128, np.uint8)
    for column, row in enumerate(picks):
        left = gap + column * (width + gap)
        canvas[gap:gap + height, left:left + width] = images[plan.image_index[row]]
        canvas[2 * gap + height:2 * gap + 2 * height, left:left + width] = (
            renders[column].numpy().astype(np.uint8))
    canvas = cv2.resize(canvas, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
    ok, encoded = cv2.imencode(".png", canvas)
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    with atomic_write(path) as f:
        f.write(encoded.tobytes())


def _read_shard(path: Path, sha256: str) -> dict[str, Any]:
    raw = path.read_bytes() if path.is_file() else None
    if raw is None or hashlib.sha256(raw).hexdigest() != sha256:
        raise RuntimeError(f"{path} is missing or does not match its sha256 {sha256}")
    return torch.load(io.BytesIO(raw), weights_only=True)


def _assemble_manifest(out: Path, config: FitConfig, plan: InrPlan, images: np.ndarray,
                       metas: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    shards = [_read_shard(out / meta["file"], meta["sha256"]) for meta in metas]
    params = {key: torch.cat([s["params"][key] for s in shards]) for key in shards[0]["params"]}
    psnr = torch.cat([s["psnr"] for s in shards]).double().numpy()
    steps = torch.cat([s["steps"] for s in shards]).numpy()
    labels = torch.cat([s["labels"] for s in shards]).numpy()
    splits = [name for s in shards for name in s["split"]]
    train = [i for i, name in enumerate(splits) if name == "train"]
    manifest = {
        "config": config.to_dict(),
        "config_sha256": config.digest(),
        "coordinates": "make_coordinates(28, 28): pixel (row r, column c) is point 28 r + c at "
                       "(x, y) = (linspace(-1, 1, 28)[c], linspace(-1, 1, 28)[r])",
        "psnr_definition": "10 log10(1 / MSE) of the raw INR output against pixels / 255",
        "count": len(plan),
        "split_sizes": {name: splits.count(name) for name in SPLITS},
        "split_label_counts": {name: np.bincount(labels[[i for i, s in enumerate(splits)
                                                         if s == name]],
                                                 minlength=10).tolist() for name in SPLITS},
        "shards": [{"file": meta["file"], "sha256": meta["sha256"], "count": meta["count"],
                    "seconds": meta["seconds"]} for meta in metas],
        "fit_seconds_total": round(sum(meta["seconds"] for meta in metas), 3),
        "psnr_mean": float(psnr.mean()),
        "psnr_summary": {"all": _psnr_summary(psnr),
                         **{name: _psnr_summary(psnr[[s == name for s in splits]])
                            for name in SPLITS}},
        "steps_mean": float(steps.mean()),
        "statistics": parameter_statistics(params),
        "statistics_train": parameter_statistics({k: v[train] for k, v in params.items()}),
        "published_statistics": PUBLISHED_STATISTICS,
        "renders": {"file": RENDERS, "layout": "one column per INR: the first 6 of train, "
                    "val and test; top row the image, bottom row the INR render"},
        **extra,
        "inrs": {"image_index": plan.image_index.tolist(), "copy": plan.copy.tolist(),
                 "label": labels.tolist(), "split": splits,
                 "psnr": [round(float(v), 4) for v in psnr], "steps": steps.tolist()},
    }
    _write_renders(out / RENDERS, params, images, plan, config)
    write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return manifest


def run_fit(images: np.ndarray, labels: np.ndarray, splits: dict[str, np.ndarray],
            config: FitConfig, out: str | Path, device: torch.device | str = "cpu",
            rank: int = 0, world_size: int = 1, extra: dict[str, Any] | None = None,
            progress: bool | None = None) -> dict[str, Any] | None:
    """Fit (or finish fitting) the INR set of ``config`` into ``out``.

    This process fits every ``world_size``-th shard from ``rank`` that is not already
    finished (a finished shard has a metadata file whose sha256 matches the shard file);
    whichever process then finds every shard finished writes ``manifest.json`` and the
    render grid, and gets the manifest back (the others get None).

    Args:
        images (np.ndarray): uint8 images ``[N, H, W]``, indexed by ``splits``.
        labels (np.ndarray): their labels ``[N]``.
        splits (dict): image indices per split name (:data:`SPLITS`).
        config (FitConfig): the run's configuration (checked against ``out``).
        out (path): output folder.
        device: where to fit.
        rank, world_size: this process among ``torchrun``'s.
        extra (dict, optional): more entries for the manifest.
        progress (bool, optional): a live bar (default: when stderr is a terminal);
            otherwise one printed line per fitted group.
    """
    out = Path(out)
    if images.ndim != 3 or images.dtype != np.uint8 or labels.shape != (images.shape[0],):
        raise ValueError(f"images must be uint8 [N, H, W] with labels [N], got "
                         f"{images.dtype} {images.shape} and {labels.shape}")
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
    fitted_psnr: list[float] = []
    with tqdm(total=total, desc=f"INRs (rank {rank})", unit="INR", disable=not progress,
              dynamic_ncols=True) as bar:
        for shard in todo:
            rows = np.arange(shard * config.shard_size,
                             min((shard + 1) * config.shard_size, len(plan)))
            _fit_shard(out, shard, rows, plan, images, labels, config, torch.device(device),
                       bar, fitted_psnr)
    metas = [_shard_done(out, s, digest) for s in range(shard_count)]
    if any(meta is None for meta in metas):
        missing = sum(meta is None for meta in metas)
        print(f"rank {rank}: done; {missing} shard(s) still being fitted by other ranks, the "
              "last to finish writes the manifest", flush=True)
        return None
    return _assemble_manifest(out, config, plan, images, metas, extra or {})


def load_inr_set(out_dir: str | Path) -> tuple[dict[str, Tensor], Tensor, list[str],
                                               dict[str, Any]]:
    """Read a finished INR set (every shard checked against its sha256 in the manifest).

    Returns:
        ``(params, labels, splits, manifest)``: stacked SIREN parameters
        ``{"net.0.weight": [n, 32, 2], ...}`` (:func:`siren_from_params` and
        :func:`render` take them), labels ``[n]``, the split name of each INR, and the
        manifest (configuration, per-INR image index, copy, PSNR and steps, statistics).
    """
    out = Path(out_dir)
    path = out / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {out} is not a finished INR set (run "
                                "python -m MNIST_INR_Fit with the same --out to finish it)")
    manifest = json.loads(path.read_text())
    shards = [_read_shard(out / s["file"], s["sha256"]) for s in manifest["shards"]]
    params = {key: torch.cat([s["params"][key] for s in shards]) for key in shards[0]["params"]}
    labels = torch.cat([s["labels"] for s in shards])
    splits = [name for s in shards for name in s["split"]]
    return params, labels, splits, manifest
