"""Splits of an image set into train / val / test, stratified by label and seeded,
stratified subsets of them (``MNIST_INR_Fit --limit``), and the plan of which INR fits
which image (:class:`InrPlan`, with ``--copies``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["SPLITS", "InrPlan", "limit_counts", "stratified_limit", "stratified_split"]

SPLITS: tuple[str, ...] = ("train", "val", "test")


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


def limit_counts(sizes: dict[str, int], limit: int) -> dict[str, int]:
    """How many images of each split (of ``sizes``) a ``limit`` keeps: ``limit`` shared in
    proportion to the split sizes by largest remainders (ties: the earlier split)."""
    total = sum(sizes.values())
    if not 1 <= limit <= total:
        raise ValueError(f"--limit must be between 1 and {total}, got {limit}")
    shares = {name: limit * size / total for name, size in sizes.items()}
    counts = {name: math.floor(share) for name, share in shares.items()}
    leftover = limit - sum(counts.values())
    for name in sorted(shares, key=lambda k: counts[k] - shares[k])[:leftover]:
        counts[name] += 1
    return counts


def stratified_limit(splits: dict[str, np.ndarray], limit: int) -> dict[str, np.ndarray]:
    """The first images of each split (given in stratified order, as
    :func:`stratified_split` returns them), ``limit`` in all, shared between the splits in
    proportion to their sizes (:func:`limit_counts`), so the subset keeps the split
    proportions and each part stays stratified."""
    counts = limit_counts({name: len(part) for name, part in splits.items()}, limit)
    return {name: part[:counts[name]] for name, part in splits.items()}


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
