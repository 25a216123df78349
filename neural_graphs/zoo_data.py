"""A model zoo (``python -m CNN_Zoo_Generate``) as a dataset of neural graphs.

Every zoo member (one checkpoint of one network, :class:`neural_graphs.zoo.ZooMember`)
becomes the neural graph of its eval-mode network (:func:`neural_graphs.to_neural_graph`,
BatchNorm folded), with the member's test accuracy as the target ``y``. Graphs of one zoo
share one ``kernel_shape`` (the family's largest kernel: 3x3 for ``small``, 7x7 for
``wild``, the patch for ``vit``), so any of them collate into one
:class:`torch_geometric.data.Batch`.

The conversion runs once: the graphs are cached in ``ZOO_DIR/neural_graphs_<kh>x<kw>.pt``
(written atomically), keyed by the sha256 of the zoo's ``manifest.json`` and the kernel
shape, so a changed or regenerated zoo is converted again.

:func:`split_by_network` splits the members by network: every checkpoint of one network
lands in the same split, so no held-out network was seen at another epoch.

:class:`AugmentedGraphs` gives a training split fresh draws of an augmentation at every
access: function-preserving rescalings of its hidden neurons
(:mod:`neural_graphs.neuron_symmetry`: the network and its accuracy stay the same, the
weights the encoder reads change) or the reference's noise and dropout on the weights
(:mod:`neural_graphs.weight_noise`).

``python -m neural_graphs.zoo_data ZOO_DIR`` builds the cache and prints what it holds.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_geometric.data import Data
from tqdm import tqdm

from neural_graphs.graph import GRAPH_FORMAT
from neural_graphs.neuron_symmetry import keyed_generator
from utils.atomic import atomic_write
from utils.store import MANIFEST, StoreError, check_kind, require_complete

__all__ = [
    "AugmentedGraphs",
    "CACHE_FORMAT",
    "SPLIT_FRACTIONS",
    "ZooGraphs",
    "cache_path",
    "family_kernel_shape",
    "load_zoo_graphs",
    "manifest_checksum",
    "member_graph",
    "split_by_network",
]

CACHE_FORMAT = 1
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # train, validation, test: fractions of the networks


def _manifest_path(zoo_dir: str | Path) -> Path:
    path = Path(zoo_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --zoo-dir must be a folder written by "
                                "python -m CNN_Zoo_Generate")
    return path


def manifest_checksum(zoo_dir: str | Path) -> str:
    """sha256 of ``ZOO_DIR/manifest.json`` (it lists every shard's sha256)."""
    return hashlib.sha256(_manifest_path(zoo_dir).read_bytes()).hexdigest()


def family_kernel_shape(manifest: dict[str, Any]) -> tuple[int, int]:
    """The kernel grid every graph of the zoo is padded to: the family's largest kernel
    (3x3 for ``small``; the largest of ``wild_space["kernel_size"]`` for ``wild``)."""
    config = manifest.get("config", {})
    family = config.get("family")
    if family == "small":
        return (3, 3)
    if family == "vit":  # the patch embedding is the only convolution
        patch = int(config.get("vit_skeleton", {}).get("patch_size", 4))
        return (patch, patch)
    if family == "wild":
        sizes = (config.get("wild_space") or {}).get("kernel_size")
        if not sizes:
            raise ValueError("the wild zoo's manifest has no config.wild_space.kernel_size")
        k = int(max(sizes))
        return (k, k)
    raise ValueError(f"unknown zoo family {family!r} in the manifest; expected 'small', "
                     "'wild' or 'vit'")


def cache_path(zoo_dir: str | Path, kernel_shape: Sequence[int]) -> Path:
    """``ZOO_DIR/neural_graphs_<kh>x<kw>.pt``."""
    return Path(zoo_dir) / f"neural_graphs_{'x'.join(str(int(k)) for k in kernel_shape)}.pt"


def member_graph(member: Any, kernel_shape: Sequence[int]) -> Data:
    """The neural graph of one zoo member with its labels.

    Besides the fields of :func:`~neural_graphs.to_neural_graph`: ``y`` ``[1]`` (float32,
    test accuracy in [0, 1]), ``train_acc`` ``[1]``, ``network`` ``[1]`` and ``epoch``
    ``[1]`` (int64). :func:`load_zoo_graphs` adds ``architecture`` ``[1]`` (int64).
    """
    from neural_graphs.graph import to_neural_graph

    graph = to_neural_graph(member.model(), batchnorm="fold", kernel_shape=tuple(kernel_shape))
    graph.y = torch.tensor([member.test_acc], dtype=torch.float32)
    graph.train_acc = torch.tensor([member.train_acc], dtype=torch.float32)
    graph.network = torch.tensor([member.network], dtype=torch.long)
    graph.epoch = torch.tensor([member.epoch], dtype=torch.long)
    return graph


@dataclass
class ZooGraphs:
    """The members of a zoo as neural graphs, ordered by network and epoch.

    Attributes:
        graphs: one :class:`~torch_geometric.data.Data` per member (see
            :func:`member_graph`).
        kernel_shape: the shared kernel grid of ``edge_attr``.
        family: the zoo's family (``small`` or ``wild``).
        manifest_sha256: the checksum of the manifest the graphs were made from.
        architectures: the number of distinct architectures (skeleton and activation);
            each graph's ``architecture`` numbers its own (0 .. architectures - 1).
        image_shape: ``(C, H, W)`` of the images the networks read (None: the manifest
            does not say).
    """

    graphs: list[Data]
    kernel_shape: tuple[int, ...]
    family: str
    manifest_sha256: str
    architectures: int
    image_shape: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, index: int) -> Data:
        return self.graphs[index]

    @property
    def networks(self) -> np.ndarray:
        """The network id of each member, ``[len(self)]``."""
        return np.array([int(g.network) for g in self.graphs], dtype=np.int64)

    def split(self, seed: int = 0, fractions: Sequence[float] = SPLIT_FRACTIONS,
              train_networks: int | None = None) -> tuple[list[Data], ...]:
        """``(train, val, test)`` lists of graphs, split by network
        (:func:`split_by_network`; ``train_networks`` keeps the first so many training
        networks)."""
        return tuple([self.graphs[i] for i in part] for part in
                     split_by_network(self.networks, seed, fractions, train_networks))


class AugmentedGraphs(Dataset):
    """``graphs``, each item changed by ``augment`` (one augmentation, or several applied in
    turn), drawn as a pure function of (``seed``, epoch, index), so a resumed run sees the
    same items. Statistics stored in a graph for StatNN (``statnn_features``) describe the
    weights before the draw and are left out, so StatNN computes them from the weights it
    is given.

    Args:
        graphs (list[Data]): the split's graphs (not changed).
        augment: a callable ``(graph, generator) -> graph``
            (:class:`~neural_graphs.neuron_symmetry.NeuronSymmetryAugment`,
            :class:`~neural_graphs.weight_noise.WeightNoiseAugment`), or a sequence of them.
        seed (int): seed of the draws.

    The first augmentation, when it offers ``plan(graph)`` (what its draws need of a graph
    that no draw changes: :meth:`~neural_graphs.weight_noise.WeightNoiseAugment.plan`),
    gets each graph's plan made once and kept, instead of once per draw; later ones read
    graphs the augmentations before them changed, so they make theirs every time.
    """

    def __init__(self, graphs: Sequence[Data], augment: Any, seed: int = 0) -> None:
        self.graphs = list(graphs)
        self.augments = tuple(augment) if isinstance(augment, (list, tuple)) else (augment,)
        self.seed = int(seed)
        self.epoch = 0
        self._plans: dict[int, Any] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, index: int) -> Data:
        generator = keyed_generator(self.seed, self.epoch, index)
        graph = self.graphs[index]
        augments = self.augments
        if augments and hasattr(augments[0], "plan"):
            if index not in self._plans:
                self._plans[index] = augments[0].plan(graph)
            graph = augments[0](graph, generator, self._plans[index])
            augments = augments[1:]
        for augment in augments:
            graph = augment(graph, generator)
        if "statnn_features" in graph:
            graph = copy.copy(graph)
            del graph.statnn_features
        return graph


def split_by_network(networks: Sequence[int] | np.ndarray, seed: int = 0,
                     fractions: Sequence[float] = SPLIT_FRACTIONS,
                     train_networks: int | None = None) -> tuple[np.ndarray, ...]:
    """Indices of the members in each split; all members of one network share a split.

    The distinct network ids, sorted, are permuted by ``numpy.random.default_rng(seed)``;
    the first ``n - n_val - n_test`` go to training, then ``n_val = round(f_val * n)``
    to validation, the last ``n_test = round(f_test * n)`` to test (each at least one).

    Args:
        networks: the network id of every member.
        seed: seed of the permutation (the same split for every training seed).
        fractions: ``(train, val, test)`` fractions of the networks, summing to 1.
        train_networks: keep only the first so many training networks of the permutation
            (None: all), for learning curves: validation and test stay the same, and a
            smaller count keeps a subset of a larger one's networks.

    Returns:
        ``(train, val, test)`` index arrays, each sorted.
    """
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or \
            abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must be three positive numbers (train, val, test) "
                         f"summing to 1, got {tuple(fractions)}")
    ids = np.asarray(networks, dtype=np.int64)
    unique = np.unique(ids)
    n = len(unique)
    if n < 3:
        raise ValueError(f"a split by network needs at least 3 networks, the zoo has {n}")
    n_val = max(1, round(fractions[1] * n))
    n_test = max(1, round(fractions[2] * n))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(f"{n} networks leave none for training with fractions "
                         f"{tuple(fractions)}")
    if train_networks is not None and not 1 <= train_networks <= n_train:
        raise ValueError(f"train_networks must be between 1 and the {n_train} training "
                         f"networks of this split, got {train_networks}")
    order = unique[np.random.default_rng(seed).permutation(n)]
    parts = (order[:n_train if train_networks is None else train_networks],
             order[n_train:n - n_test], order[n - n_test:])
    return tuple(np.flatnonzero(np.isin(ids, part)) for part in parts)


def _read_cache(path: Path, checksum: str, kernel_shape: tuple[int, ...]) -> dict | None:
    """The cached content when it matches the zoo and kernel shape; None otherwise."""
    if not path.is_file():
        return None
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: convert again
        print(f"note: {path} is unreadable ({type(err).__name__}: {err}); converting the "
              "zoo again", file=sys.stderr)
        return None
    if not isinstance(content, dict) or content.get("format") != CACHE_FORMAT or \
            content.get("graph_format") != GRAPH_FORMAT:
        return None
    if content.get("manifest_sha256") != checksum:
        print(f"note: {path} was made from another version of the zoo (manifest checksum "
              "differs); converting again", file=sys.stderr)
        return None
    if tuple(content.get("kernel_shape", ())) != kernel_shape:
        return None
    return content


def _architecture_key(member: Any) -> str:
    arch = {k: v for k, v in member.arch.items() if k != "dropout"}
    return json.dumps(arch, sort_keys=True)


def load_zoo_graphs(zoo_dir: str | Path, kernel_shape: Sequence[int] | None = None,
                    cache: bool = True, progress: bool | None = None) -> ZooGraphs:
    """The zoo in ``zoo_dir`` as neural graphs, converted once and cached.

    Args:
        zoo_dir: a complete zoo written by ``python -m CNN_Zoo_Generate``.
        kernel_shape: the kernel grid (default: :func:`family_kernel_shape`).
        cache: read and write ``ZOO_DIR/neural_graphs_<kh>x<kw>.pt``; a cache made from
            another manifest or kernel shape is replaced.
        progress: show a progress bar (default: when stderr is a terminal).

    Raises:
        FileNotFoundError: no manifest; :class:`~utils.store.StoreError`: another kind of
        set (an INR set), an incomplete zoo or a damaged shard (re-running the generator
        repairs it).
    """
    from neural_graphs.zoo import load_zoo

    zoo_dir = Path(zoo_dir)
    manifest_bytes = _manifest_path(zoo_dir).read_bytes()
    checksum = hashlib.sha256(manifest_bytes).hexdigest()
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError as err:
        raise StoreError(f"{zoo_dir / MANIFEST} is unreadable ({err})") from None
    check_kind(zoo_dir, manifest, "cnn-zoo")
    require_complete(zoo_dir, manifest, "cnn-zoo")
    family = str(manifest.get("config", {}).get("family"))
    image_shape = manifest.get("config", {}).get("image_shape")
    image_shape = None if image_shape is None else tuple(int(n) for n in image_shape)
    grid = tuple(int(k) for k in (kernel_shape or family_kernel_shape(manifest)))
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"kernel_shape must be two positive sizes (kh, kw), got {grid}")
    path = cache_path(zoo_dir, grid)
    content = _read_cache(path, checksum, grid) if cache else None
    if content is not None:
        graphs = [Data(**fields) for fields in content["graphs"]]
        return ZooGraphs(graphs, grid, family, checksum, int(content["architectures"]),
                         image_shape)

    members = load_zoo(zoo_dir)
    if not members:
        raise ValueError(f"{zoo_dir} holds no members")
    show = sys.stderr.isatty() if progress is None else progress
    start = time.perf_counter()
    graphs = [member_graph(member, grid) for member in
              tqdm(members, desc=f"neural graphs of {zoo_dir.name}", unit="net",
                   disable=not show, dynamic_ncols=True)]
    keys = [_architecture_key(m) for m in members]
    numbers = {key: i for i, key in enumerate(sorted(set(keys)))}
    for graph, key in zip(graphs, keys):
        graph.architecture = torch.tensor([numbers[key]], dtype=torch.long)
    architectures = len(numbers)
    seconds = time.perf_counter() - start
    if cache:
        try:
            with atomic_write(path) as f:
                torch.save({"format": CACHE_FORMAT, "graph_format": GRAPH_FORMAT,
                            "manifest_sha256": checksum,
                            "kernel_shape": grid, "family": family,
                            "architectures": architectures,
                            "graphs": [g.to_dict() for g in graphs]}, f)
            where = f", cached in {path}"
        except OSError as err:
            where = f" (not cached: {err})"
    else:
        where = ""
    print(f"{zoo_dir}: {len(graphs)} members of {len(np.unique([m.network for m in members]))} "
          f"networks as neural graphs in {seconds:.1f} s{where}", file=sys.stderr)
    return ZooGraphs(graphs, grid, family, checksum, architectures, image_shape)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m neural_graphs.zoo_data",
        description="Convert a zoo of CNNs or ViTs to neural graphs once (cached in the zoo "
        "folder) and print what it holds.")
    parser.add_argument("zoo_dir", help="a folder written by python -m CNN_Zoo_Generate")
    parser.add_argument("--split-seed", type=int, default=0,
                        help="seed of the split by network (default 0)")
    args = parser.parse_args(argv)
    try:
        zoo = load_zoo_graphs(args.zoo_dir)
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sizes = [len(part) for part in zoo.split(args.split_seed)]
    acc = np.array([float(g.y) for g in zoo.graphs])
    print(f"{args.zoo_dir}: family {zoo.family}, {len(zoo)} graphs, "
          f"{len(np.unique(zoo.networks))} networks, {zoo.architectures} architectures, "
          f"kernel grid {zoo.kernel_shape}; split by network (train / val / test members) "
          f"{sizes[0]} / {sizes[1]} / {sizes[2]}; test accuracy p10 "
          f"{np.percentile(acc, 10):.3f}, median {np.median(acc):.3f}, p90 "
          f"{np.percentile(acc, 90):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
