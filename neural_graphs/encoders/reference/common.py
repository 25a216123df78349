"""What the reference mappings share: the MNIST INR set the published models were
configured for (per-layer statistics, layer layout) and the reading of a reference
``state_dict`` (checkpoint prefixes, the check of its keys and shapes)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import NoReturn

from torch import Tensor

__all__ = ["MNIST_LAYER_LAYOUT", "MNIST_STATS", "check_state_dict", "fail", "shape_of",
           "strip_prefixes"]

#: per-layer statistics of the MNIST INR set (mkofinas/neural-graphs
#: ``experiments/inr_classification/configs/data/mnist.yaml``, ``stats``; also its
#: notebook's), the ``layer_stats`` of NG-GNN's and NG-T's reference configurations
MNIST_STATS: dict[str, list[float]] = {
    "weights_mean": [-4.215954686515033e-05, -7.55547659991862e-07, 7.886120874900371e-05],
    "weights_std": [0.06281130015850067, 0.018268151208758354, 0.11791174858808517],
    "biases_mean": [5.419965418695938e-06, 3.7173406326473923e-06, -0.01239530649036169],
    "biases_std": [0.021334609016776085, 0.011004417203366756, 0.09989194571971893],
}

#: neurons per layer of the MNIST INRs (2-32-32-1 SIRENs)
MNIST_LAYER_LAYOUT: tuple[int, ...] = (2, 32, 32, 1)


def strip_prefixes(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state_dict`` with its keys freed of the ``module.`` (DDP) and ``_orig_mod.``
    (``torch.compile``) prefixes of the references' checkpoints."""
    out = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def shape_of(value: object) -> str:
    """``value``'s shape as a list (``"[32, 64]"``), ``"missing"`` for None, else its
    type's name."""
    if value is None:
        return "missing"
    return str(list(value.shape)) if isinstance(value, Tensor) else type(value).__name__


def fail(what: str, message: str) -> NoReturn:
    """Raise the ``ValueError`` of a ``state_dict`` that is not one of ``what``."""
    raise ValueError(f"not a state_dict of {what}: {message}")


def check_state_dict(state_dict: Mapping[str, Tensor],
                     expected: Mapping[str, tuple[int, ...]], what: str,
                     unmapped: Iterable[tuple[str, str]] = ()) -> None:
    """Check that ``state_dict`` holds exactly the keys of ``expected`` with their shapes.

    Args:
        state_dict: the reference's ``state_dict``.
        expected: every key of the reference's ``state_dict`` with its shape.
        what: the reference model, for the message (``"the reference ..."``).
        unmapped: ``(pattern, reason)``: keys matching ``pattern`` (:func:`re.search`)
            belong to a configuration the mapping does not read, ``reason`` says which.

    Raises:
        ValueError: ``not a state_dict of <what>: ...`` naming the first key of an
            unmapped configuration, else the first expected key missing or of another
            shape (with its expected shape and what arrived), else the first unexpected
            key (with its shape), and how many more there are.
    """
    unmapped = tuple(unmapped)
    for key in state_dict:
        for pattern, reason in unmapped:
            if re.search(pattern, key):
                fail(what, f"unexpected key '{key}' {shape_of(state_dict[key])}: {reason}, "
                           "not mapped")
    wrong = [key for key, shape in expected.items()
             if not isinstance(state_dict.get(key), Tensor)
             or tuple(state_dict[key].shape) != tuple(shape)]
    if wrong:
        key = wrong[0]
        more = f" (and {len(wrong) - 1} more keys missing or of other shapes)" \
            if len(wrong) > 1 else ""
        fail(what, f"expected key '{key}' of shape {list(expected[key])}, got "
                   f"{shape_of(state_dict.get(key))}{more}")
    extra = [key for key in state_dict if key not in expected]
    if extra:
        fail(what, f"unexpected key '{extra[0]}' {shape_of(state_dict[extra[0]])}"
                   + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
