"""Model zoos of small CNNs and ViTs trained on real images, many networks at once.

Three families (``python -m CNN_Zoo_Generate --family small|wild|vit``):

- ``small``, the Small CNN Zoo of Unterthiner et al. (2020): three 3x3 convolutions of 16
  channels, stride 2, global average pooling, a linear layer to the classes;
- ``wild``, after the CNN Wild Park: 2-5 convolutions of 4-32 channels, kernels 3/5/7,
  optional residual connections (identity, or a 1x1 projection when the width or the
  resolution changes) and BatchNorm, any of six activations;
- ``vit``, the dynamic-neural-graph paper's ViT zoo: SimpleViTs (patch 4, dim 32, depth 2,
  4 heads, MLP 64) that differ only by seed and stop epoch, trained with the official
  recipe (Adam 1e-3, batch 128, random crops); :mod:`neural_graphs.zoo_vit` says how it
  is adapted to ``torch.nn`` and the images here, and trains its groups network by network.

Every network draws its own hyper-parameters (optimizer Adam or SGD with momentum 0.9,
log-uniform learning rate and weight decay, a multiplier on torch's default
initialisation, dropout before the linear layer, activation, the fraction of the training
images it sees; ranges ``SMALL_SPACE`` and ``WILD_HPARAM_SPACE``, each measured so that
few networks end at chance) and is recorded at several checkpoints along training
(``DEFAULT_EPOCHS``; 0 is the untrained network), each checkpoint a zoo member with its
own accuracy on the images it trained on and on images it never saw.
:mod:`neural_graphs.zoo_describe` summarises a zoo's accuracies per checkpoint epoch.

Vectorisation. A *group* is a set of networks that share an architecture skeleton
(everything but activation and dropout) and a train fraction; a group trains as one
stacked network. Its parameters are the members' ``state_dict`` tensors with a leading
network dimension (``{"0.weight": [N, 16, 1, 3, 3], ...}``) and its activations carry the
networks side by side along the channel dimension, so a convolution is one grouped
convolution (``groups=N``), BatchNorm is one ``batch_norm`` over ``N * C`` channels (exactly
per network), and the linear layer one batched product. Each network sees its own
mini-batches of its own training subset; its loss is its own mean cross-entropy and the
losses are summed over networks, so every network gets exactly its own gradient, and the
optimizer (Adam and SGD side by side, selected per network) runs on the stacked tensors.
The stacked forward walks the very module tree :func:`build_cnn` builds, so a saved member
rebuilt from its ``arch`` and ``state_dict`` is the network that was trained (tests: equal
to 1e-10 in float64). The small family puts networks of one train fraction and one
activation into groups of at most ``group_size``; the wild family samples a skeleton and a
train fraction, then ``group_size`` hyper-parameter draws for it (networks of different
skeletons cannot share one grouped convolution).

Where things live: the architectures and the stacked execution in
:mod:`neural_graphs.zoo_cnn`, the images, configuration and plan in
:mod:`neural_graphs.zoo_plan`, the files in the store of :mod:`utils.store`; this module
trains, stores and reads the zoo, and every public name of the three is importable here.

Accuracy. Predictions are screened in float32 and every prediction whose top-two logits
lie within ``1e-4 * (1 + max |logit|)`` of each other (or whose logits are not finite) is
recomputed by the network's plain module in float64 (float32 logits of zoo networks were
measured within ``2e-6 * (1 + max |logit|)`` of float64 ones), so the recorded accuracies
are those of the saved float32 weights evaluated in float64:
``member.model(torch.float64)`` reproduces them exactly. A prediction with a non-finite
logit counts as wrong. A network whose parameters stop being
finite is marked diverged at that epoch and contributes no later members.

Files (``out/``): ``config.json`` (the generation configuration; a run with another
configuration refuses the folder), ``shard_XXXXX.pt`` (one group: every member's arch,
hyper-parameters, epoch, accuracies and ``state_dict``) written atomically with its
``shard_XXXXX.json`` (the same without weights, plus the shard's sha256), and
``manifest.json`` (kind ``cnn-zoo``: configuration, every member's hyper-parameters and
accuracies, every shard's sha256; ``complete`` once every shard is done). A killed run
keeps its finished shards and continues with the others (a damaged shard is trained
again); ``torchrun`` ranks split the groups by estimated cost.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from neural_graphs.zoo_cnn import (
    ACTIVATIONS,
    TIE_TOLERANCE,
    ResidualBlock,
    StackedCNNs,
    _gather,
    build_cnn,
    predict,
    predictions,
)
from neural_graphs.zoo_plan import (
    DATASETS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_GROUP_SIZE,
    FAMILIES,
    FORMAT_VERSION,
    HPARAM_SPACE,
    SMALL_SPACE,
    WILD_HPARAM_SPACE,
    WILD_SPACE,
    ZooConfig,
    ZooData,
    _group_cost,
    assign_groups,
    hparam_space,
    load_data,
    plan_zoo,
)
from neural_graphs.zoo_vit import SimpleViT, build_vit, is_vit, train_vit_group
from utils import store
from utils.cli import default_device
from utils.images import CIFAR10_FOLDER, CIFAR10_URL, LUMA, load_cifar10
from utils.memory import allocator_setting
from utils.store import ConfigMismatchError, StoreError
from utils.torchrun import torchrun_place

__all__ = [
    "ACTIVATIONS",
    "CIFAR10_FOLDER",
    "CIFAR10_URL",
    "DATASETS",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_EPOCHS",
    "DEFAULT_GROUP_SIZE",
    "FAMILIES",
    "FORMAT_VERSION",
    "HPARAM_SPACE",
    "LUMA",
    "SMALL_SPACE",
    "TIE_TOLERANCE",
    "WILD_HPARAM_SPACE",
    "WILD_SPACE",
    "ConfigMismatchError",
    "ResidualBlock",
    "SimpleViT",
    "StackedCNNs",
    "StoreError",
    "ZooConfig",
    "ZooData",
    "ZooMember",
    "assign_groups",
    "build_cnn",
    "build_vit",
    "check_config",
    "generate_zoo",
    "hparam_space",
    "load_cifar10",
    "load_data",
    "load_zoo",
    "plan_zoo",
    "predict",
    "predictions",
    "train_group",
]

SGD_MOMENTUM = 0.9
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
CONFIG_FILE = "config.json"


# --------------------------------------------------------------------------- training


class _StackedOptimizer:
    """Adam and SGD with momentum over stacked parameters, chosen per network.

    With :math:`g = \\nabla + \\lambda p` (L2 added to the gradient, as ``weight_decay`` in
    ``torch.optim``), Adam: :math:`m \\leftarrow \\beta_1 m + (1-\\beta_1) g`,
    :math:`v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2`,
    :math:`p \\leftarrow p - \\eta \\hat m / (\\sqrt{\\hat v} + \\epsilon)`; SGD:
    :math:`b \\leftarrow \\mu b + g`, :math:`p \\leftarrow p - \\eta b`, as ``torch.optim``
    computes them for a single network.
    """

    def __init__(self, params: dict[str, Tensor], hparams: Sequence[dict[str, Any]]) -> None:
        device = next(iter(params.values())).device
        dtype = next(iter(params.values())).dtype
        self.params = params
        self.lr = torch.tensor([h["lr"] for h in hparams], device=device, dtype=dtype)
        self.wd = torch.tensor([h["weight_decay"] for h in hparams], device=device, dtype=dtype)
        self.adam = torch.tensor([h["optimizer"] == "adam" for h in hparams], device=device)
        self.m = {k: torch.zeros_like(p) for k, p in params.items()}
        self.v = {k: torch.zeros_like(p) for k, p in params.items()}
        self.buf = {k: torch.zeros_like(p) for k, p in params.items()}
        self.t = 0

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = ADAM_BETAS
        bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
        for k, p in self.params.items():
            shape = (-1,) + (1,) * (p.dim() - 1)
            lr, wd, adam = self.lr.view(shape), self.wd.view(shape), self.adam.view(shape)
            g = p.grad + wd * p
            m, v, buf = self.m[k], self.v[k], self.buf[k]
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            buf.mul_(SGD_MOMENTUM).add_(g)
            adam_step = (m / bc1) / ((v / bc2).sqrt() + ADAM_EPS)
            p.sub_(lr * torch.where(adam, adam_step, buf))

    @torch.no_grad()
    def reset(self, networks: Tensor) -> None:
        """Zero the parameters and state of ``networks`` (bool ``[N]``) and stop them."""
        self.lr[networks] = 0
        for k, p in self.params.items():
            for t in (p, self.m[k], self.v[k], self.buf[k]):
                t[networks] = 0


def _accuracy(pred: Tensor, labels: Tensor) -> list[float]:
    return (pred == labels).double().mean(1).tolist()


def train_group(group: dict[str, Any], data: ZooData, config: ZooConfig,
                on_epoch: Callable[[int], None] | None = None,
                dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Train one group together; return its members (records and ``state_dict`` s).

    Each network draws its training subset (``round(train_fraction * M)`` of the ``M``
    training images, at least one batch's worth of one image) and its per-epoch order
    from ``numpy.random.default_rng(seed)``; an epoch is one pass over its subset in
    batches of ``config.batch_size``. At every epoch of ``config.epochs`` (0: the
    initialisation) each finite network becomes a member with its accuracy on its own
    training subset and on all measurement images. ``dtype``: of the training (the data
    are cast to it); float64 for tests.
    """
    nets = group["networks"]
    device = data.train_x.device
    hps = [n["hparams"] for n in nets]
    stack = StackedCNNs.initialise([n["arch"] for n in nets], [h["seed"] for h in hps],
                                   [h["init_scale"] for h in hps], device=device, dtype=dtype)
    train_x, test_x = data.train_x.to(dtype), data.test_x.to(dtype)
    optimizer = _StackedOptimizer(stack.params, hps)
    m_train = len(data.train_x)
    size = max(1, round(group["train_fraction"] * m_train))
    rngs = [np.random.default_rng(h["seed"]) for h in hps]
    subsets = np.stack([rng.choice(m_train, size, replace=False) for rng in rngs])
    subset_t = torch.as_tensor(subsets, device=device)
    gen = torch.Generator(device=device).manual_seed(int(hps[0]["seed"]) ^ 0x5EED)
    diverged: list[float | None] = [None] * stack.n
    alive = torch.ones(stack.n, dtype=torch.bool, device=device)
    members: list[dict[str, Any]] = []
    def checkpoint(epoch: int) -> None:
        train_acc = _accuracy(predict(stack, train_x, subset_t), data.train_y[subset_t])
        test_acc = _accuracy(predict(stack, test_x, None),
                             data.test_y.expand(stack.n, -1))
        for i, net in enumerate(nets):
            if diverged[i] is None:
                members.append({"network": net["network"], "epoch": epoch,
                                "train_acc": train_acc[i], "test_acc": test_acc[i],
                                "state_dict": stack.state_dict(i)})

    steps = math.ceil(size / config.batch_size)
    last = max(config.epochs)
    if 0 in config.epochs:
        checkpoint(0)
    for epoch in range(1, last + 1):
        order = np.stack([rng.permutation(size) for rng in rngs])
        order_t = torch.as_tensor(np.take_along_axis(subsets, order, 1), device=device)
        for step in range(steps):
            index = order_t[:, step * config.batch_size:(step + 1) * config.batch_size]
            x, y = _gather(train_x, index), data.train_y[index].T
            logits = stack(x, training=True, generator=gen)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                   reduction="none").view(y.shape)
            for p in stack.params.values():
                p.grad = None
            loss.masked_fill(~alive, 0).mean(0).sum().backward()
            optimizer.step()
            stack.steps += 1
            bad = alive & ~stack.finite()
            if bool(bad.any()):
                for i in bad.nonzero().flatten().tolist():
                    diverged[i] = round(epoch - 1 + (step + 1) / steps, 6)
                alive &= ~bad
                optimizer.reset(bad)
                with torch.no_grad():
                    for name, b in stack.buffers.items():
                        b[bad] = 1.0 if name.endswith("running_var") else 0.0
        if epoch in config.epochs:
            checkpoint(epoch)
        if on_epoch is not None:
            on_epoch(epoch)
    networks = [{"network": n["network"], "arch": n["arch"], "hparams": n["hparams"],
                 "diverged_epoch": diverged[i]} for i, n in enumerate(nets)]
    return {"group": group["group"], "train_fraction": group["train_fraction"],
            "networks": networks, "members": members}



# --------------------------------------------------------------------------- files


def _shard_done(out: Path, group: int, verify: bool = True) -> dict[str, Any] | None:
    """The shard's metadata when it is finished and intact, else None."""
    return store.shard_done(out, group, log=tqdm.write, redo="training the group again",
                            verify=verify)


def _write_shard(out: Path, result: dict[str, Any]) -> dict[str, Any]:
    meta = {"group": result["group"], "train_fraction": result["train_fraction"],
            "networks": result["networks"],
            "members": [{k: v for k, v in m.items() if k != "state_dict"}
                        for m in result["members"]]}
    return store.write_shard(out, result["group"], {"format": FORMAT_VERSION, **result}, meta)


def check_config(out: Path, config_dict: dict[str, Any]) -> None:
    """Write ``out/config.json``, or check that the one there is ``config_dict``
    (:class:`ConfigMismatchError` otherwise)."""
    store.check_config(out, config_dict, CONFIG_FILE, "a zoo")


def _percentiles(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    q = np.percentile(np.asarray(values), [10, 50, 90])
    return {"p10": float(q[0]), "median": float(q[1]), "p90": float(q[2]),
            "p90_minus_p10": float(q[2] - q[0])}


def _write_manifest(out: Path, config_dict: dict[str, Any], groups: int) -> dict[str, Any]:
    shards = []
    for g in range(groups):
        # Checked at the start of this run or written since: metadata only, no re-hashing.
        record = _shard_done(out, g, verify=False)
        if record is not None:
            shards.append(record)
    members = [m for s in shards for m in s["members"]]
    last = max(config_dict["epochs"])
    final = [m["test_acc"] for m in members if m["epoch"] == last]
    networks = [n for s in shards for n in s["networks"]]
    manifest = {
        "config": config_dict, "complete": len(shards) == groups, "groups": groups,
        "shards_done": len(shards), "networks": len(networks), "members": len(members),
        "diverged": sum(n["diverged_epoch"] is not None for n in networks),
        "test_acc_all_members": _percentiles([m["test_acc"] for m in members]),
        "test_acc_final_epoch": _percentiles(final),
        "shards": shards,
    }
    return store.write_manifest(out, "cnn-zoo", manifest)


def generate_zoo(config: ZooConfig, data: ZooData, out: str | Path,
                 device: torch.device | str | None = None, progress: bool | None = None,
                 log: Callable[[str], None] | None = None,
                 max_groups: int | None = None) -> dict[str, Any]:
    """Train the zoo ``config`` describes into ``out`` (resumable; torchrun ranks split it).

    Returns the manifest as written (the last process to finish writes the complete one).
    ``max_groups`` stops this process after so many newly trained groups (an interruption).
    """
    out = Path(out)
    place = torchrun_place()
    rank, world = place.rank, place.world_size
    if device is None:
        device = default_device()
        device = f"cuda:{place.local_rank}" if device == "cuda" else device
    device = torch.device(device)
    config_dict = config.to_dict(data)
    check_config(out, config_dict)
    c, h, w = data.train_x.shape[1:]
    if h != w:
        raise ValueError(f"zoo images must be square, got {h}x{w}")
    groups = plan_zoo(config, c, data.num_classes, h)
    costs = [_group_cost(g, config, len(data.train_x), h) for g in groups]
    mine = assign_groups(costs, world)[rank]
    todo = [g for g in mine if _shard_done(out, g) is None]
    data_dev = data.to(device)
    show = (sys.stderr.isatty() if progress is None else progress) and rank == 0
    say = log or tqdm.write
    total = sum(len(groups[g]["networks"]) for g in todo)
    say(f"rank {rank}/{world}: {len(mine) - len(todo)} of {len(mine)} groups done, "
        f"{len(todo)} to train ({total} networks) on {device}, "
        f"{torch.get_num_threads()} thread(s), {allocator_setting()}")
    start, cpu_start = time.perf_counter(), time.process_time()
    trained = 0
    with tqdm(total=total, unit="net", desc=f"zoo {config.family}", disable=not show,
              dynamic_ncols=True) as bar:
        for done_now, g in enumerate(todo):
            if max_groups is not None and done_now >= max_groups:
                break
            group = groups[g]
            t0, cpu0 = time.perf_counter(), time.process_time()

            def on_epoch(epoch: int, group: dict[str, Any] = group) -> None:
                bar.set_postfix(group=group["group"], epoch=epoch)

            trainer = train_vit_group if config.family == "vit" else train_group
            result = trainer(group, data_dev, config, on_epoch)
            record = _write_shard(out, result)
            n = len(group["networks"])
            trained += n
            bar.update(n)
            final = [m["test_acc"] for m in record["members"] if m["epoch"] == max(config.epochs)]
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            arch = group["networks"][0]["arch"]
            shape = ("ViT" if is_vit(arch) else f"{len(arch['layers'])} conv")
            say(f"group {g} ({n} nets, {shape}, "
                f"fraction {group['train_fraction']}): {elapsed:.1f} s ({cpu:.1f} s CPU), "
                f"{60 * n / elapsed:.1f} nets/min, final test acc median "
                f"{np.median(final) if final else float('nan'):.3f}, "
                f"{sum(x['diverged_epoch'] is not None for x in record['networks'])} diverged")
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if trained:
        say(f"rank {rank}: {trained} networks in {elapsed:.1f} s ({cpu:.1f} s CPU) = "
            f"{60 * trained / elapsed:.1f} networks/min")
    all_done = all(store.shard_paths(out, g)[1].is_file() for g in range(len(groups)))
    if all_done or world == 1:
        return _write_manifest(out, config_dict, len(groups))
    return {"config": config_dict, "complete": False, "groups": len(groups)}


# --------------------------------------------------------------------------- reading


@dataclass
class ZooMember:
    """One checkpoint of one network of a zoo.

    ``test_acc`` / ``train_acc`` are those of ``model(torch.float64)`` on the measurement
    images / the network's own training subset (see :func:`load_data`).
    """

    network: int
    epoch: int
    arch: dict[str, Any]
    hparams: dict[str, Any]
    train_acc: float
    test_acc: float
    state_dict: dict[str, Tensor]

    def model(self, dtype: torch.dtype = torch.float32) -> nn.Sequential | SimpleViT:
        """The network as a plain torch module (:func:`build_cnn`, or :func:`build_vit`
        for the ViT family), in eval mode."""
        net = (build_vit(self.arch) if is_vit(self.arch) else build_cnn(self.arch)).to(dtype)
        net.load_state_dict(self.state_dict)
        return net.eval()


def load_zoo(out_dir: str | Path, verify: bool = True) -> list[ZooMember]:
    """Every member of the zoo in ``out_dir`` (shards checked against their sha256),
    ordered by network and epoch.

    Raises:
        FileNotFoundError: no manifest.
        StoreError: the folder is another kind of set (an INR set), the zoo is incomplete,
            or a shard is missing or damaged (re-running the generator repairs it).
    """
    out = Path(out_dir)
    manifest = store.read_manifest(out, "cnn-zoo")
    store.require_complete(out, manifest, "cnn-zoo")
    members = []
    for shard in manifest["shards"]:
        content = store.read_shard(out, shard, "cnn-zoo", verify=verify)
        nets = {n["network"]: n for n in content["networks"]}
        for m in content["members"]:
            net = nets[m["network"]]
            members.append(ZooMember(m["network"], m["epoch"], net["arch"], net["hparams"],
                                     m["train_acc"], m["test_acc"], m["state_dict"]))
    return sorted(members, key=lambda m: (m.network, m.epoch))
