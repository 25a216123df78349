"""The process's place in a ``torchrun`` job, read once from the environment torchrun
sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``); a plain ``python``
run is rank 0 of 1. Joining the process group is the training loop's business
(:func:`utils.train_pass.init_distributed`); this only reads where the process stands."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["TorchrunPlace", "torchrun_place"]


@dataclass(frozen=True)
class TorchrunPlace:
    """Where this process stands in a (possibly one-process) ``torchrun`` job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0, which writes logs and checkpoints."""
        return self.rank == 0


def torchrun_place() -> TorchrunPlace:
    """This process's :class:`TorchrunPlace` from the environment (rank 0 of 1 when
    ``torchrun`` did not start it). A malformed variable is an error that names it."""
    values = {}
    for field, name, default in (("rank", "RANK", 0), ("world_size", "WORLD_SIZE", 1),
                                 ("local_rank", "LOCAL_RANK", 0),
                                 ("local_world_size", "LOCAL_WORLD_SIZE", None)):
        raw = os.environ.get(name)
        try:
            values[field] = default if raw is None else int(raw)
        except ValueError:
            raise ValueError(f"{name} must be an integer (torchrun sets it), got {raw!r}") \
                from None
    if values["local_world_size"] is None:
        values["local_world_size"] = values["world_size"]
    if not 0 <= values["rank"] < values["world_size"]:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE={values['world_size']}), got "
                         f"{values['rank']}")
    return TorchrunPlace(**values)
