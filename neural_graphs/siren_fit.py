"""Fit many SIRENs of one architecture at once: the fitting core of the INR sets.

:func:`fit_sirens` trains ``n`` SIRENs of one architecture together, held as stacked
tensors (``{"net.0.weight": [n, 32, 2], ...}``, the SIREN state_dict keys with a leading
INR dimension). The forward and backward passes are written out by hand: each layer is one
batched matrix product (``torch.bmm``) with the bias folded in as an extra column of the
weight matrix; the first layer, on the pixel grid every INR shares, is separable (its sines
come from those of the grid's axis values), and its weight gradient is one GEMM over all
INRs. Adam runs on the stacked tensors. Each INR's loss is its own mean squared error, and
the losses are summed, not averaged, over INRs, so every INR gets exactly the gradient and
the Adam update it would get alone (``torch.optim.Adam`` on a single ``SIREN``; the tests
hold this to 1e-10 in float64). INRs that reach ``stop_psnr`` leave the batch (per-INR
early stopping). The data set around it is :mod:`neural_graphs.inr_fit`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from neural_graphs.inr import SIREN, make_coordinates, siren_layer_keys, stack_siren_params

__all__ = [
    "FitResult",
    "fit_sirens",
    "init_siren_params",
    "inr_seed",
    "psnr_from_mse",
]

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
            :func:`~neural_graphs.inr.make_coordinates` (or of ``coords``); one channel
            ``[n, H, W]`` or ``C`` channels last ``[n, H, W, C]`` for SIRENs with ``C``
            outputs (the MSE averages over pixels and channels).
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
        - images: :math:`(n, H, W)` or :math:`(n, H, W, C)`
    """
    stacked = _StackedSirens(params, omega_0, out_offset)
    flat = stacked.flat
    count = flat.shape[0]
    outputs = stacked.shapes[-1][0]
    shape = "H, W" if outputs == 1 else f"H, W, {outputs}"
    if images.dim() == 3 and outputs == 1:
        images = images.unsqueeze(-1)
    if images.dim() != 4 or images.shape[0] != count or images.shape[3] != outputs:
        raise ValueError(f"images must be [{count}, {shape}] (one per INR, a channel per "
                         f"SIREN output), got {tuple(images.shape)}")
    if steps < 0 or check_every < 1:
        raise ValueError(f"steps must be >= 0 and check_every >= 1, got {steps}, {check_every}")
    height, width = images.shape[1:3]
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
    target = images.to(dtype=flat.dtype, device=flat.device).reshape(count, -1, outputs)
    target = target.transpose(1, 2).contiguous()  # [n, C, P]: feature-major
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

