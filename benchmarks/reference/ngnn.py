"""`python -m benchmarks.reference.ngnn`: the reference NG-GNN (mkofinas/neural-graphs,
``nn.gnn.GNNForClassification`` with the PNA backbone and ``nn.graph_constructor``) side by
side with our NGGNN in its reference configuration
(neural_graphs.encoders.reference.ngnn.REFERENCE_NGGNN_KWARGS).

The reference model is composed by hydra from the reference's own configs
(experiments/inr_classification/configs: base.yaml, model=pna, data=mnist) with the
overrides of scripts/mnist_cls_pna.sh, and instantiated as its main.py does.

Writes the fixture of tests/neural_graphs/test_reference_ngnn.py (``--out``): the
reference's state_dict, the SIREN parameters it read and its logits (eval mode, float32;
and the same model in float64, run with float64 as torch's default dtype since its graph
constructor builds its dense tensors in the default dtype). With ``--time N`` it also
times N rounds of one training step (forward, cross-entropy, backward, gradient clipping,
AdamW step as in the reference's main.py and base.yaml) of each on the same SIRENs,
alternating, and prints the medians.

Run it with a Python that has the reference's requirements (hydra-core, omegaconf, rff)
and the project's, the reference checkout importable:

    PYTHONPATH=/work/ref/neural-graphs python -m benchmarks.reference.ngnn \\
        --reference-dir /work/ref/neural-graphs --out tests/fixtures/reference/ngnn.pt
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch

from neural_graphs.encoders import NGGNN
from neural_graphs.encoders.reference.ngnn import (
    MNIST_STATS,
    REFERENCE_LAYER_LAYOUT,
    from_reference_state_dict,
)
from neural_graphs.graph import to_neural_graph
from neural_graphs.inr import siren_from_params
from utils.cli import HelpFormatter, non_negative_int, positive_int

#: The reference configuration reproduced: hydra overrides of the reference's configs.
REFERENCE_CONFIG: dict = {
    "source": "mkofinas/neural-graphs experiments/inr_classification: configs/base.yaml "
              "with model=pna (configs/model/pna.yaml), data=mnist (configs/data/mnist.yaml: "
              "stats) and the overrides of scripts/mnist_cls_pna.sh (92,010 parameters)",
    "config_dir": "experiments/inr_classification/configs",
    "overrides": ["model=pna", "data=mnist",
                  "model.graph_constructor.num_probe_features=0",
                  "model.gnn_backbone.dropout=0.2",
                  "model.graph_constructor.use_pos_embed=True",
                  "model.rev_edge_features=True"],
    "left_out": "mnist_cls_pna.sh also passes model.modulate_v=True, which this config "
                "has no key for (hydra refuses it; GNNForClassification takes no such "
                "argument); edge modulation is pna.yaml's gnn_backbone.modulate_edges=True",
    "layer_layout": list(REFERENCE_LAYER_LAYOUT),
    "optimizer": "AdamW(lr=1e-3, weight_decay=5e-4, amsgrad=True), CrossEntropyLoss, "
                 "clip_grad_norm 10 (configs/base.yaml)",
}


def _compose(reference_dir: Path | None):  # -> omegaconf.DictConfig
    if reference_dir is not None and str(reference_dir) not in sys.path:
        sys.path.insert(0, str(reference_dir))
    try:
        import nn.gnn  # noqa: F401  (the reference's package "nn")
        from hydra import compose, initialize_config_dir
    except ImportError as err:
        raise ImportError(f"cannot import the reference's nn.gnn ({err}): pass "
                          "--reference-dir of a mkofinas/neural-graphs checkout, with "
                          "hydra-core, omegaconf and rff installed") from err
    root = Path(reference_dir) if reference_dir is not None else \
        Path(sys.modules["nn.gnn"].__file__).resolve().parents[1]
    with initialize_config_dir(config_dir=str(root / REFERENCE_CONFIG["config_dir"]),
                               version_base=None):
        return compose("base", overrides=REFERENCE_CONFIG["overrides"])


def build_reference(reference_dir: Path | None, seed: int) -> nn.Module:
    """The reference ``GNNForClassification`` at :data:`REFERENCE_CONFIG`, instantiated as
    its main.py does after ``torch.manual_seed(seed)``."""
    import hydra

    cfg = _compose(reference_dir)
    torch.manual_seed(seed)
    return hydra.utils.instantiate(cfg.model, layer_layout=REFERENCE_CONFIG["layer_layout"])


def sirens(count: int, seed: int = 0) -> dict[str, Tensor]:
    """Stacked parameters of ``count`` 2-32-32-1 SIRENs (our ``SIREN`` key names) with
    fitted-like statistics: each layer's weights and biases drawn from N(mean, std^2) of
    the MNIST INR statistics, so the normalized inputs are of order one, as the
    reference's."""
    generator = torch.Generator().manual_seed(seed)
    layout = REFERENCE_LAYER_LAYOUT
    params = {}
    for layer, (fan_in, fan_out) in enumerate(zip(layout[:-1], layout[1:])):
        for kind, stats, shape in (("weight", "weights", (count, fan_out, fan_in)),
                                   ("bias", "biases", (count, fan_out))):
            mean, std = MNIST_STATS[f"{stats}_mean"][layer], MNIST_STATS[f"{stats}_std"][layer]
            params[f"net.{2 * layer}.{kind}"] = mean + std * torch.randn(shape,
                                                                         generator=generator)
    return params


def reference_inputs(params: dict[str, Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """The reference's ``(weights, biases)`` of stacked SIRENs: weights ``[B, in, out, 1]``,
    biases ``[B, out, 1]`` (experiments/data.py's ``Batch``)."""
    layers = len(params) // 2
    weights = [params[f"net.{2 * i}.weight"].transpose(1, 2).unsqueeze(-1).contiguous()
               for i in range(layers)]
    biases = [params[f"net.{2 * i}.bias"].unsqueeze(-1).contiguous() for i in range(layers)]
    return weights, biases


def reference_forward(model: nn.Module, inputs: tuple[list[Tensor], list[Tensor]]) -> Tensor:
    """The reference's logits, in eval mode."""
    model.eval()
    with torch.no_grad():
        return model(inputs)


def ours_from_reference(model: nn.Module) -> NGGNN:
    return from_reference_state_dict(model.state_dict(), REFERENCE_CONFIG["layer_layout"])


def siren_graphs(params: dict[str, Tensor]) -> Batch:
    """The neural graphs of stacked SIRENs, batched as our jobs batch them."""
    count = params["net.0.weight"].shape[0]
    return Batch.from_data_list([to_neural_graph(siren_from_params(params, i))
                                 for i in range(count)])


def ours_forward(encoder: NGGNN, params: dict[str, Tensor]) -> Tensor:
    """Our logits, in eval mode."""
    encoder.eval()
    with torch.no_grad():
        return encoder(siren_graphs(params))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_fixture(reference_dir: Path | None, out: Path, count: int = 8, seed: int = 0
                 ) -> dict:
    """Write the test fixture to ``out`` and return it (also checking that ours matches)."""
    model = build_reference(reference_dir, seed)
    params = sirens(count, seed)
    fixture = {
        "config": REFERENCE_CONFIG,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "params": params, "parameter_count": parameter_count(model),
        "logits": reference_forward(model, reference_inputs(params)),
    }
    ours = ours_from_reference(model)
    diff = (ours_forward(ours, params) - fixture["logits"]).abs().max().item()
    print(f"float32: max |ours - reference| = {diff:.2e} "
          f"(logits up to {fixture['logits'].abs().max().item():.2f})")
    params64 = {k: v.double() for k, v in params.items()}
    model64 = model.double()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # its graph constructor makes default-dtype zeros
    try:
        fixture["logits64"] = reference_forward(model64, reference_inputs(params64))
    finally:
        torch.set_default_dtype(default)
    diff = (ours_forward(ours_from_reference(model64), params64)
            - fixture["logits64"]).abs().max().item()
    print(f"float64: max |ours - reference| = {diff:.2e}")
    print(f"parameters: reference {fixture['parameter_count']:,}, ours "
          f"{parameter_count(ours):,}")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, out)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.2f} MiB)")
    return fixture


def training_step(which: str, batch_size: int = 128, reference_dir: Path | None = None,
                  seed: int = 0) -> Callable[[], float]:
    """One training step (forward, cross-entropy, backward, gradient clipping to norm 10,
    AdamW step: the reference's main.py with base.yaml) of ``"reference"`` or ``"ours"``
    on ``batch_size`` SIRENs. Inputs are prepared once, as each one's data loader
    delivers them: the reference's weight/bias tuples (its graph is built in its forward),
    our batch of cached neural graphs."""
    if which not in ("reference", "ours"):
        raise ValueError(f"which must be 'reference' or 'ours', got {which!r}")
    params = sirens(batch_size, seed)
    labels = torch.randint(0, 10, (batch_size,), generator=torch.Generator().manual_seed(seed))
    model = build_reference(reference_dir, seed)
    inputs: object = reference_inputs(params)
    if which == "ours":
        model = ours_from_reference(model)
        inputs = siren_graphs(params)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, amsgrad=True,
                                  weight_decay=5e-4)
    criterion = nn.CrossEntropyLoss()

    def step() -> float:
        optimizer.zero_grad()
        loss = criterion(model(inputs), labels)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        return loss.item()

    return step


def time_steps(rounds: int, batch_size: int, reference_dir: Path | None) -> dict[str, float]:
    """Median seconds of one training step of each, alternating, after one warm-up."""
    steps = {name: training_step(name, batch_size, reference_dir)
             for name in ("reference", "ours")}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():  # warm-up
        step()
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"one training step on {batch_size} SIRENs (median of {rounds}): reference "
          f"{medians['reference'] * 1e3:.1f} ms, ours {medians['ours'] * 1e3:.1f} ms, "
          f"ours / reference = {medians['ours'] / medians['reference']:.2f}")
    return medians


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.reference.ngnn", description=__doc__,
        formatter_class=HelpFormatter)
    parser.add_argument("--reference-dir", type=Path, default=None,
                        help="mkofinas/neural-graphs checkout (default: already importable)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the test fixture here (tests/fixtures/reference/ngnn.pt)")
    parser.add_argument("--count", type=positive_int, default=8, help="SIRENs in the fixture")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of the reference model and the SIRENs")
    parser.add_argument("--time", type=non_negative_int, default=0, metavar="N",
                        help="time N rounds of one training step of each (0: no timing)")
    parser.add_argument("--batch-size", type=positive_int, default=128,
                        help="SIRENs per timed training step (the reference's batch size)")
    args = parser.parse_args(argv)
    if args.out is None and not args.time:
        parser.error("nothing to do: pass --out and/or --time")
    if args.out is not None:
        make_fixture(args.reference_dir, args.out, args.count, args.seed)
    if args.time:
        time_steps(args.time, args.batch_size, args.reference_dir)


if __name__ == "__main__":
    main()
