"""Loaders for the splits of a training job, tuples or graphs alike.

:func:`split_loaders` gives a job's ``loaders(args, seed, distributed)`` what the training
loop expects: the training split shuffled in an order that is a pure function of
``(seed, epoch)`` (so ``--resume`` continues exactly), validation and test in order, and
under ``torchrun`` a ``DistributedSampler`` per split (the loop counts its padding once).
Datasets of PyG ``Data`` objects are batched into ``torch_geometric.data.Batch`` objects.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from utils.DataLoader_GNN import EpochSampler, _WorkerInit

__all__ = ["split_loaders"]


def _is_graph_dataset(dataset: Dataset) -> bool:
    if len(dataset) == 0:  # type: ignore[arg-type]
        return False
    sample = dataset[0]
    return hasattr(sample, "edge_index") or hasattr(sample, "num_nodes")


def split_loaders(splits: Sequence[Dataset | None], batch_size: int, seed: int,
                  distributed: bool = False, num_workers: int = 0,
                  pin_memory: bool = False) -> tuple[DataLoader | None, ...]:
    """One loader per split, in order ``(train, val[, test])``; ``None`` stays ``None``.

    Args:
        splits: the datasets; the first is shuffled per epoch, the others are read in order.
        batch_size: samples per batch (per process under ``torchrun``).
        seed: seeds the training order and the workers.
        distributed: use ``DistributedSampler`` (``torchrun`` jobs).
        num_workers, pin_memory: as for :class:`torch.utils.data.DataLoader`.

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
        if _is_graph_dataset(dataset):
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
