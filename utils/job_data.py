"""The one loader factory: loaders for the splits of a training job, tuples or graphs alike.

:func:`split_loaders` gives a job's ``loaders(args, seed, distributed)`` what the training
loop expects: the training split shuffled in an order that is a pure function of
``(seed, epoch)`` (so ``--resume`` continues exactly), validation and test in order, and
under ``torchrun`` a ``DistributedSampler`` per split (the loop counts its padding once).
Datasets of PyG ``Data`` objects are batched into ``torch_geometric.data.Batch`` objects.
The loaders of :mod:`utils.DataLoader_GNN` are made here too.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

__all__ = ["EpochSampler", "set_epoch", "split_loaders"]


class EpochSampler(Sampler[int]):
    """Single-process sampler whose order is a pure function of ``(seed, epoch)``."""

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True) -> None:
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the order of this epoch."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.num_samples))
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        return iter(order.tolist())

    def __len__(self) -> int:
        return self.num_samples


class _WorkerInit:
    """Seeds Python, NumPy and torch in each worker from (seed, epoch, rank, worker id)."""

    def __init__(self, seed: int, rank: int) -> None:
        self.seed = seed
        self.rank = rank

    def __call__(self, worker_id: int) -> None:
        info = torch.utils.data.get_worker_info()
        epoch = getattr(info.dataset, "epoch", 0) if info is not None else 0
        state = np.random.SeedSequence([self.seed, epoch, self.rank, worker_id]).generate_state(2)
        random.seed(int(state[0]))
        np.random.seed(int(state[0]))
        torch.manual_seed(int(state[0]) << 32 | int(state[1]))
        # OpenCV's own thread pool gains nothing on 32x32 images and can stall forked workers.
        cv2.setNumThreads(1)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Prepare ``loader`` for ``epoch``: sets the epoch on its sampler and its dataset.

    Call it before iterating over each epoch (train and val alike). Workers are created
    anew at every epoch (``persistent_workers`` is off), so they see the new epoch.
    """
    for obj in (loader.sampler, loader.dataset):
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)


def _is_graph_dataset(dataset: Dataset) -> bool:
    if len(dataset) == 0:  # type: ignore[arg-type]
        return False
    sample = dataset[0]
    return hasattr(sample, "edge_index") or hasattr(sample, "num_nodes")


def split_loaders(splits: Sequence[Dataset | None], batch_size: int, seed: int,
                  distributed: bool = False, num_workers: int = 0,
                  pin_memory: bool = False, *,
                  graphs: bool | None = None) -> tuple[DataLoader | None, ...]:
    """One loader per split, in order ``(train, val[, test])``; ``None`` stays ``None``.

    Args:
        splits: the datasets; the first is shuffled per epoch, the others are read in order.
        batch_size: samples per batch (per process under ``torchrun``).
        seed: seeds the training order and the workers.
        distributed: use ``DistributedSampler`` (``torchrun`` jobs).
        num_workers, pin_memory: as for :class:`torch.utils.data.DataLoader`.
        graphs: whether the datasets hold PyG ``Data`` samples (default: look at the first
            sample of each).

    Returns:
        Loaders of ``(x, y)`` batches, or of ``torch_geometric.data.Batch`` objects when
        the dataset holds PyG ``Data`` samples.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    loaders: list[DataLoader | None] = []
    for index, dataset in enumerate(splits):
        if dataset is None:
            loaders.append(None)
            continue
        shuffle = index == 0
        sampler: Sampler
        rank = 0
        if distributed:
            sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed)
            rank = sampler.rank
        elif shuffle:
            sampler = EpochSampler(len(dataset), seed=seed, shuffle=True)  # type: ignore
        else:
            sampler = SequentialSampler(dataset)  # type: ignore[arg-type]
        if _is_graph_dataset(dataset) if graphs is None else graphs:
            from torch_geometric.loader import DataLoader as GraphLoader

            loader_class: type[DataLoader] = GraphLoader
        else:
            loader_class = DataLoader
        loaders.append(loader_class(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
            pin_memory=pin_memory and torch.cuda.is_available(),
            worker_init_fn=_WorkerInit(seed, rank),
            # Own generator: the workers' base seed must not consume the global torch RNG.
            generator=torch.Generator().manual_seed(seed)))
    return tuple(loaders)
