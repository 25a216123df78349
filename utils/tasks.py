"""What a training job learns and how it is measured: the :class:`Task` of the training loop.

A task turns a model output and its batch into per-sample losses (what is minimised) and
per-sample values (what is measured), and turns the values of a whole split into metrics.
The loop (:mod:`utils.Train_Test`) collects the values of every sample of a split, over all
DDP ranks, before it calls :attr:`Task.metrics`, so a metric may be any function of the
whole split (accuracy, mean squared error, Kendall's tau, R^2).

Batches are either tuples ``(x, y)`` (the model gets ``x``, the target is ``y``) or PyG
``Data``/``Batch`` objects (the model gets the batch, the target is ``batch.y``, the
number of samples is ``batch.num_graphs``); :func:`to_device`, :func:`model_input`,
:func:`target` and :func:`batch_size` handle both.

Stock tasks: :func:`classification` (cross-entropy, accuracy in percent) and
:func:`scalar_regression` (a scalar per sample; MSE or BCE on a sigmoid output, BCE with a
pairwise ranking term; MSE, Kendall's tau and R^2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Task",
    "batch_size",
    "classification",
    "grouped_kendall_tau",
    "kendall_tau",
    "model_input",
    "pairwise_rank_loss",
    "r2_score",
    "scalar_regression",
    "target",
    "to_device",
]

Values = dict[str, Tensor]


# --------------------------------------------------------------------------- batches


def _is_graph_batch(batch: Any) -> bool:
    # torch_geometric.data.Data / Batch, without importing PyG for tuple-only jobs.
    return hasattr(batch, "num_graphs") or hasattr(batch, "edge_index")


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` on ``device``: tensors, PyG ``Data``/``Batch``, and tuples, lists and dicts
    of them (recursively); anything else is returned as it is.

    Of a graph batch only the tensor attributes move (in place, as ``Data.to`` does), and
    only those not yet on ``device``: ``Data.to`` walks every attribute, and a batch of 128
    zoo graphs carries each graph's layer description (nested lists and dicts), and walking
    it cost about 0.1 s a batch, five times the batch's collation."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if _is_graph_batch(batch):
        keys = [key for key, value in batch.items()
                if isinstance(value, Tensor) and value.device != device]
        return batch.apply(lambda tensor: tensor.to(device, non_blocking=True), *keys) \
            if keys else batch
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(item, device) for item in batch)
    if isinstance(batch, Mapping):
        return {key: to_device(item, device) for key, item in batch.items()}
    return batch


def model_input(batch: Any) -> Any:
    """What the model is called with: ``x`` of an ``(x, y)`` tuple, else the batch itself."""
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch


def target(batch: Any) -> Tensor:
    """The target: ``y`` of an ``(x, y)`` tuple, ``batch.y`` of a PyG batch."""
    if isinstance(batch, (tuple, list)):
        if len(batch) < 2:
            raise ValueError(f"a tuple batch must be (x, y, ...), got {len(batch)} item(s)")
        return batch[1]
    y = getattr(batch, "y", None)
    if y is None:
        raise ValueError(f"{type(batch).__name__} batch has no target: expected (x, y) or a "
                         "PyG batch with a 'y' attribute")
    return y


def batch_size(batch: Any) -> int:
    """Number of samples: ``batch.num_graphs`` of a PyG batch, else the length of the
    target (tuples) or of the batch (tensors)."""
    if hasattr(batch, "num_graphs"):
        return int(batch.num_graphs)
    if _is_graph_batch(batch):  # a single Data object
        return 1
    if isinstance(batch, (tuple, list)):
        return len(target(batch))
    if isinstance(batch, Tensor):
        return len(batch)
    raise TypeError(f"cannot count the samples of a {type(batch).__name__} batch: expected "
                    "(x, y), a tensor or a PyG batch")


# --------------------------------------------------------------------------- task


def _call_model(model: nn.Module, batch: Any) -> Any:
    return model(model_input(batch))


def _no_values(output: Any, batch: Any) -> Values:
    return {}


@dataclass(frozen=True)
class Task:
    r"""How a job's model is trained and measured.

    Per batch the loop computes ``output = forward(model, batch)``, the per-sample losses
    ``loss(output, batch)`` (shape ``[B]``; their mean is minimised) and the per-sample
    values ``collect(output, batch)`` (each of shape ``[B, ...]``). Over a whole split it
    concatenates the values of every sample of every rank, adds the losses under
    ``"loss"``, and reports ``{"loss": mean loss, **metrics(values)}``.

    Args:
        loss: ``(output, batch) -> Tensor[B]``, the per-sample losses.
        metrics: ``(values) -> {name: float}``, metrics of a whole split; ``values`` holds
            ``"loss"`` (float64) and what ``collect`` returned, for all samples of the split
            (of every rank, each once), on the CPU.
        collect: ``(output, batch) -> {name: Tensor[B, ...]}``, the per-sample values the
            metrics need (default none).
        best_metric: the metric (a key of ``metrics``' result, or ``"loss"``) whose
            validation value picks the best checkpoint.
        higher_is_better: whether a larger ``best_metric`` is better.
        test_metrics: ``{record key: metric}``: what the final record of a run with a test
            split carries, e.g. ``{"test_acc": "acc"}``.
        percent: metrics printed as percentages in the text logs.
        forward: ``(model, batch) -> output`` (default: ``model(x)`` for ``(x, y)``
            batches, ``model(batch)`` for PyG batches).
        picture: ``(model, test_loader, path) -> None`` or None: after the test, rank 0
            draws the best checkpoint's work on the test split as a PNG at ``path``
            (``LOG_DIR/<run>.png``), e.g. an editor's outputs next to its targets.
    """

    loss: Callable[[Any, Any], Tensor]
    metrics: Callable[[Values], dict[str, float]]
    collect: Callable[[Any, Any], Values] = _no_values
    best_metric: str = "loss"
    higher_is_better: bool = False
    test_metrics: Mapping[str, str] = field(default_factory=dict)
    percent: tuple[str, ...] = ()
    forward: Callable[[nn.Module, Any], Any] = _call_model
    picture: Callable[[nn.Module, Any, Path], None] | None = None

    def better(self, value: float, best: float | None) -> bool:
        """Whether ``value`` beats ``best``: anything beats ``None`` (no epoch yet), NaN
        beats nothing else, and anything but NaN beats NaN."""
        if best is None:
            return True
        if math.isnan(value):
            return False
        if math.isnan(best):
            return True
        return value > best if self.higher_is_better else value < best


# --------------------------------------------------------------------------- classification


def _cross_entropy(output: Tensor, batch: Any) -> Tensor:
    return F.cross_entropy(output, target(batch), reduction="none")


def _correct(output: Tensor, batch: Any) -> Values:
    return {"correct": output.detach().argmax(1) == target(batch)}


def _accuracy(values: Values) -> dict[str, float]:
    correct = values["correct"]
    return {"acc": 100.0 * float(correct.sum()) / max(len(correct), 1)}


def classification(test_metric: str = "test_acc") -> Task:
    r"""Cross-entropy on class logits; accuracy :math:`100 \cdot \#\{\arg\max = y\} / N`
    (percent) picks the best checkpoint; the final record carries it as ``test_metric``.

    Shapes:
        output ``[B, C]`` logits, target ``[B]`` class indices.
    """
    return Task(loss=_cross_entropy, metrics=_accuracy, collect=_correct, best_metric="acc",
                higher_is_better=True, test_metrics={test_metric: "acc"}, percent=("acc",))


# --------------------------------------------------------------------------- regression


def kendall_tau(prediction: Tensor | np.ndarray, truth: Tensor | np.ndarray) -> float:
    r"""Kendall's :math:`\tau_b` rank correlation (:func:`scipy.stats.kendalltau`).

    NaN when either side is constant."""
    from scipy.stats import kendalltau

    a = np.asarray(prediction, dtype=np.float64).ravel()
    b = np.asarray(truth, dtype=np.float64).ravel()
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(kendalltau(a, b).statistic)


def r2_score(prediction: Tensor | np.ndarray, truth: Tensor | np.ndarray) -> float:
    r""":math:`R^2 = 1 - \sum (\hat y - y)^2 / \sum (y - \bar y)^2`; NaN for a constant
    truth."""
    a = np.asarray(prediction, dtype=np.float64).ravel()
    b = np.asarray(truth, dtype=np.float64).ravel()
    spread = float(((b - b.mean()) ** 2).sum()) if len(b) else 0.0
    if spread == 0.0:
        return float("nan")
    return 1.0 - float(((a - b) ** 2).sum()) / spread


def _scalar(output: Tensor) -> Tensor:
    if output.dim() == 2 and output.shape[1] == 1:
        return output[:, 0]
    if output.dim() != 1:
        raise ValueError(f"a scalar regression expects output [B] or [B, 1], got "
                         f"{tuple(output.shape)}")
    return output


def _mse_loss(output: Tensor, batch: Any) -> Tensor:
    y = target(batch).to(output.dtype).reshape(-1)
    return (_scalar(output) - y) ** 2


def _bce_loss(output: Tensor, batch: Any) -> Tensor:
    y = target(batch).to(output.dtype).reshape(-1)
    return F.binary_cross_entropy_with_logits(_scalar(output).float(), y.float(),
                                              reduction="none")


def pairwise_rank_loss(score: Tensor, truth: Tensor) -> Tensor:
    r"""Per-sample pairwise logistic ranking loss of the samples of one batch,

    .. math::
        \ell_i = \frac{1}{B - 1} \sum_{j \ne i} |y_i - y_j|\,
        \log\bigl(1 + e^{-\operatorname{sign}(y_i - y_j)(s_i - s_j)}\bigr),

    so that its mean over the batch is the mean over ordered pairs: each pair whose
    scores are in the wrong order (or too close) costs in proportion to how far apart
    their targets lie, and ties cost nothing. Kendall's tau counts exactly these pair
    orders, which a pointwise loss reaches only through the values.

    Shapes:
        score ``[B]``, truth ``[B]`` -> ``[B]``.
    """
    if score.shape != truth.shape or score.dim() != 1:
        raise ValueError(f"score and truth must both be [B], got {tuple(score.shape)} and "
                         f"{tuple(truth.shape)}")
    gap = truth[:, None] - truth[None, :]
    order = torch.sign(gap) * (score[:, None] - score[None, :])
    return (gap.abs() * F.softplus(-order)).sum(1) / max(len(score) - 1, 1)


def _bce_rank_loss(output: Tensor, batch: Any) -> Tensor:
    y = target(batch).float().reshape(-1)
    return _bce_loss(output, batch) + pairwise_rank_loss(_scalar(output).float(), y)


class _Predictions:
    """Per-sample prediction (the raw output, or its sigmoid), truth and, with ``group``,
    the batch attribute that groups the samples."""

    def __init__(self, sigmoid: bool, group: str | None) -> None:
        self.sigmoid, self.group = sigmoid, group

    def __call__(self, output: Tensor, batch: Any) -> Values:
        prediction = _scalar(output.detach()).double()
        values = {"prediction": torch.sigmoid(prediction) if self.sigmoid else prediction,
                  "truth": target(batch).detach().double().reshape(-1)}
        if self.group is not None:
            group = getattr(batch, self.group, None)
            if group is None:
                raise ValueError(f"the regression groups samples by batch.{self.group}, "
                                 f"which this {type(batch).__name__} batch lacks")
            values["group"] = group.detach().reshape(-1)
        return values


def grouped_kendall_tau(prediction: Tensor | np.ndarray, truth: Tensor | np.ndarray,
                        group: Tensor | np.ndarray) -> float:
    r"""The mean over groups of Kendall's :math:`\tau_b` within each group (samples of equal
    ``group``), over the groups where it is defined (two samples or more, neither side
    constant); NaN when it is defined in none. Ranks the samples of one group only: for a
    zoo grouped by checkpoint epoch, how well the networks at the same stage of training
    are ordered, which the time in training alone cannot explain."""
    a = np.asarray(prediction, dtype=np.float64).ravel()
    b = np.asarray(truth, dtype=np.float64).ravel()
    g = np.asarray(group).ravel()
    taus = [kendall_tau(a[g == key], b[g == key]) for key in np.unique(g)]
    taus = [tau for tau in taus if not math.isnan(tau)]
    return float(np.mean(taus)) if taus else float("nan")


class _RegressionMetrics:
    def __init__(self, group: str | None) -> None:
        self.group = group

    def __call__(self, values: Values) -> dict[str, float]:
        prediction, truth = values["prediction"].cpu(), values["truth"].cpu()
        out = {"mse": float(((prediction - truth) ** 2).mean()) if len(truth) else float("nan"),
               "kendall_tau": kendall_tau(prediction, truth), "r2": r2_score(prediction, truth)}
        if self.group is not None:
            out[f"kendall_tau_same_{self.group}"] = grouped_kendall_tau(
                prediction, truth, values["group"].cpu())
        return out


def scalar_regression(loss: str = "mse", best_metric: str = "kendall_tau",
                      group: str | None = None) -> Task:
    r"""Regression of one scalar per sample.

    ``loss="mse"``: :math:`(\hat y - y)^2` on the raw output; ``loss="bce"``: binary
    cross-entropy on :math:`\sigma(\text{output})` against a target in :math:`[0, 1]`
    (predictions are then :math:`\sigma(\text{output})`); ``loss="bce_rank"``: that plus
    :func:`pairwise_rank_loss` of the outputs within each batch. Metrics over the whole split:
    ``mse`` of the predictions, ``kendall_tau`` and ``r2``; with ``group`` (a batch
    attribute, e.g. a zoo member's checkpoint ``epoch``) also ``kendall_tau_same_<group>``,
    :func:`grouped_kendall_tau`. The best checkpoint has the highest ``kendall_tau`` (or
    the lowest ``mse`` / ``loss`` when ``best_metric`` says so); the final record carries
    ``kendall_tau``, ``r2``, ``test_mse`` and ``kendall_tau_same_<group>``.

    Shapes:
        output ``[B]`` or ``[B, 1]``, target ``[B]``, ``batch.<group>`` ``[B]``.
    """
    losses = {"mse": _mse_loss, "bce": _bce_loss, "bce_rank": _bce_rank_loss}
    if loss not in losses:
        raise ValueError(f"loss must be one of {sorted(losses)}, got {loss!r}")
    if best_metric not in ("kendall_tau", "r2", "mse", "loss"):
        raise ValueError(f"best_metric must be kendall_tau, r2, mse or loss, got "
                         f"{best_metric!r}")
    test_metrics = {"kendall_tau": "kendall_tau", "r2": "r2", "test_mse": "mse"}
    if group is not None:
        test_metrics[f"kendall_tau_same_{group}"] = f"kendall_tau_same_{group}"
    return Task(
        loss=losses[loss],
        metrics=_RegressionMetrics(group),
        collect=_Predictions(loss != "mse", group),
        best_metric=best_metric,
        higher_is_better=best_metric in ("kendall_tau", "r2"),
        test_metrics=test_metrics,
    )
