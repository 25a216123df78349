"""What the INR2JLS and INR-INR stages minimise and measure (:class:`utils.tasks.Task`).

Batches are PyG batches of INR graphs with ``batch.y`` (labels ``[B]``) and
``batch.target`` (each INR's target image in :math:`[0, 1]`, laid out as
:func:`~neural_graphs.inr.render` draws it: ``[B, H, W]`` grey, ``[B, H, W, C]`` colour;
the original image, or the INR's own render).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from neural_graphs.inr import render
from neural_graphs.jls.inr2inr import (
    DecodedINR,
    batch_layout,
    graph_parameters,
    siren_parameters,
)
from neural_graphs.jls.models import SixViews
from utils.tasks import Task

__all__ = ["channels_first", "inr2inr_task", "reconstruction_task",
           "view_classification_task"]

_VIEWS = SixViews()


def _signed(images: Tensor) -> Tensor:
    """Pixels in :math:`[0, 1]` scaled to :math:`[-1, 1]`, as the paper's
    ``Normalize(0.5, 0.5)``."""
    return 2.0 * images - 1.0


def channels_first(images: Tensor) -> Tensor:
    """Targets as the decoder draws them, ``[B, C, H, W]``: grey ``[B, H, W]`` gets one
    channel, colour ``[B, H, W, C]`` (channels last, as rendered) is permuted."""
    if images.dim() == 3:
        return images.unsqueeze(1)
    if images.dim() == 4:
        return images.permute(0, 3, 1, 2)
    raise ValueError(f"target images must be [B, H, W] or [B, H, W, C], got "
                     f"{tuple(images.shape)}")


# --------------------------------------------------------------------------- INR2JLS stage 1


class _Reconstruction:
    def __call__(self, output: Tensor, batch: Any) -> Tensor:
        target = _VIEWS(_signed(channels_first(batch.target.to(output.dtype))))
        if output.shape != target.shape:
            raise ValueError(f"decoded views {tuple(output.shape)} and target views "
                             f"{tuple(target.shape)} differ")
        return ((output - target) ** 2).flatten(1).mean(1)


class _MeanImageMSE:
    """Per INR, the MSE of predicting the mean training image in every view. A view is a
    permutation of the pixels, so it equals the MSE of the plain images."""

    def __init__(self, mean_image: Tensor) -> None:
        self.mean_image = _signed(mean_image.detach().double().cpu())

    def __call__(self, output: Tensor, batch: Any) -> dict[str, Tensor]:
        target = _signed(batch.target.detach().double())
        mean = self.mean_image.to(target.device)
        return {"baseline": ((target - mean) ** 2).flatten(1).mean(1)}


def _reconstruction_metrics(values: dict[str, Tensor]) -> dict[str, float]:
    return {"mse": float(values["loss"].mean()),
            "baseline_mse": float(values["baseline"].mean())}


def reconstruction_task(mean_image: Tensor) -> Task:
    r"""INR2JLS stage 1: per INR :math:`\frac{1}{6CHW}\sum_v \lVert \hat V_v -
    V_v(2I - 1) \rVert^2`, the six views of :class:`~neural_graphs.jls.models.SixViews` of
    the target scaled to :math:`[-1, 1]`. Metrics ``mse`` and ``baseline_mse`` (predicting
    ``mean_image``, the mean training target, ``[H, W]`` or ``[H, W, C]`` in
    :math:`[0, 1]`, in every view);
    the lowest validation ``mse`` is best; the final record carries ``test_mse`` and
    ``baseline_mse``."""
    return Task(loss=_Reconstruction(), collect=_MeanImageMSE(mean_image),
                metrics=_reconstruction_metrics, best_metric="mse", higher_is_better=False,
                test_metrics={"test_mse": "mse", "baseline_mse": "baseline_mse"})


# --------------------------------------------------------------------------- classification


def _view_cross_entropy(output: Tensor, batch: Any) -> Tensor:
    b, v, classes = output.shape
    labels = batch.y.repeat_interleave(v)
    return F.cross_entropy(output.reshape(b * v, classes), labels,
                           reduction="none").view(b, v).mean(1)


def _view_correct(output: Tensor, batch: Any) -> dict[str, Tensor]:
    logits = output.detach()
    return {"correct": logits.sum(1).argmax(-1) == batch.y,
            "view_correct": logits.argmax(-1) == batch.y.unsqueeze(1)}


class _ViewAccuracy:
    def __init__(self, views: Sequence[str]) -> None:
        self.views = tuple(views)

    def __call__(self, values: dict[str, Tensor]) -> dict[str, float]:
        correct, count = values["correct"], max(len(values["correct"]), 1)
        out = {"acc": 100.0 * float(correct.sum()) / count}
        if len(self.views) > 1:
            per_view = values["view_correct"].double().sum(0)
            out.update({f"acc_{name}": 100.0 * float(per_view[i]) / count
                        for i, name in enumerate(self.views)})
        return out


def view_classification_task(views: Sequence[str]) -> Task:
    r"""Classification from per-view logits ``[B, V, classes]``: training loss the mean
    over views of each view's cross-entropy (the paper's loss on every view's logits);
    accuracy (percent) of :math:`\arg\max \sum_v \ell_v`, which picks the best checkpoint;
    with several views also ``acc_<view>``, each view alone. The final record carries
    ``test_acc`` and ``test_acc_<view>``."""
    views = tuple(views)
    return Task(loss=_view_cross_entropy, collect=_view_correct,
                metrics=_ViewAccuracy(views), best_metric="acc", higher_is_better=True,
                test_metrics={"test_acc": "acc"},
                percent=("acc", *(f"acc_{name}" for name in views)))


# --------------------------------------------------------------------------- INR-INR


def _psnr(mse: Tensor) -> Tensor:
    return -10.0 * torch.log10(mse.clamp(min=1e-10))


class _INRLoss:
    def __init__(self, weight_loss: float) -> None:
        self.weight_loss = float(weight_loss)

    def __call__(self, output: DecodedINR, batch: Any) -> Tensor:
        target = batch.target.to(output.image.dtype)
        loss = ((output.image - target) ** 2).flatten(1).mean(1)
        if self.weight_loss:
            weights, biases = graph_parameters(batch)
            decoded = torch.cat([output.weights, output.biases], 1)
            loss = loss + self.weight_loss * ((decoded - torch.cat([weights, biases], 1)) ** 2
                                              ).mean(1)
        return loss


class _INRValues:
    def __init__(self, omega_0: float, out_offset: float) -> None:
        self.omega_0, self.out_offset = omega_0, out_offset

    def __call__(self, output: DecodedINR, batch: Any) -> dict[str, Tensor]:
        with torch.no_grad():
            target = batch.target.double()
            weights, biases = graph_parameters(batch)
            own = render(siren_parameters(weights, biases, batch_layout(batch)),
                         tuple(target.shape[1:3]), omega_0=self.omega_0,
                         out_offset=self.out_offset)
            decoded = torch.cat([output.weights, output.biases], 1)
            return {
                "render_mse": ((output.image.double() - target) ** 2).flatten(1).mean(1),
                "input_mse": ((own.double() - target) ** 2).flatten(1).mean(1),
                "weight_mse": ((decoded - torch.cat([weights, biases], 1)).double() ** 2
                               ).mean(1)}


def _inr_metrics(values: dict[str, Tensor]) -> dict[str, float]:
    return {"mse": float(values["render_mse"].mean()),
            "psnr": float(_psnr(values["render_mse"]).mean()),
            "input_psnr": float(_psnr(values["input_mse"]).mean()),
            "weight_mse": float(values["weight_mse"].mean())}


def inr2inr_task(weight_loss: float = 0.0, omega_0: float = 30.0,
                 out_offset: float = 0.5) -> Task:
    r"""INR-INR stage 1: per INR the MSE between the decoded SIREN's render and the target
    (in :math:`[0, 1]`, the scale the INRs were fitted on), plus ``weight_loss`` times the
    MSE between the decoded and the input weights and biases. Metrics ``mse`` (render),
    ``psnr`` (mean over INRs of :math:`10 \log_{10} 1/\text{MSE}`, dB), ``input_psnr``
    (the input INRs' own renders against the target; 100 dB when they are the target) and
    ``weight_mse``; the lowest validation ``mse`` is best; the final record carries
    ``test_psnr``, ``test_mse`` and the others as ``test_<metric>``."""
    return Task(loss=_INRLoss(weight_loss), collect=_INRValues(omega_0, out_offset),
                metrics=_inr_metrics, best_metric="mse", higher_is_better=False,
                test_metrics={"test_psnr": "psnr", "test_mse": "mse"})
