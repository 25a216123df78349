"""`python -m benchmarks.reference.ngt`: the reference NG-T (mkofinas/neural-graphs,
``nn.relational_transformer.RelationalTransformer`` with ``nn.graph_constructor``) side by
side with our NGTransformer in its reference configuration
(neural_graphs.encoders.reference.ngt.REFERENCE_KWARGS).

Writes the fixture of tests/neural_graphs/test_reference_ngt.py (``--out``): the
reference's state_dict, the SIREN parameters it read and its logits (eval mode, float32;
and the same model in float64, run with float64 as torch's default dtype since its graph
constructor builds its dense tensors in the default dtype). With ``--time N`` it also
times N rounds of one training step (forward, cross-entropy, backward, AdamW step as in
the notebook) of each on the same SIRENs, alternating, and prints the medians.

Run it with a Python that has the reference's requirements (hydra-core, omegaconf, rff,
einops) and the project's, the reference checkout importable:

    PYTHONPATH=/work/ref/neural-graphs python -m benchmarks.reference.ngt \\
        --reference-dir /work/ref/neural-graphs --out tests/fixtures/reference/ngt.pt
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

from neural_graphs.encoders import NGTransformer
from neural_graphs.encoders.reference.ngt import (
    MNIST_STATS,
    NOTEBOOK_LAYER_LAYOUT,
    from_reference_state_dict,
)
from neural_graphs.graph import to_neural_graph
from neural_graphs.inr import SIREN, siren_from_params, siren_layer_keys, stack_siren_params
from utils.cli import HelpFormatter, non_negative_int, positive_int

#: The reference configuration: the model cells of notebooks/mnist-inr-classification.ipynb
#: (= experiments/inr_classification/configs/model/rtransformer.yaml with data=mnist).
REFERENCE_CONFIG: dict = {
    "source": "mkofinas/neural-graphs notebooks/mnist-inr-classification.ipynb, cell "
              "'Initialize Neural Graphs Transformer' (376,586 parameters)",
    "model": {"d_node": 64, "d_edge": 32, "d_attn_hid": 128, "d_node_hid": 128,
              "d_edge_hid": 64, "d_out_hid": 128, "d_out": 10, "n_layers": 4, "n_heads": 8,
              "dropout": 0.0, "use_cls_token": False, "pooling_method": "cat",
              "pooling_layer_idx": "last"},
    "graph_constructor": {"_target_": "nn.graph_constructor.GraphConstructor",
                          "_recursive_": False, "_convert_": "all", "d_in": 1,
                          "d_edge_in": 1, "zero_out_bias": False, "zero_out_weights": False,
                          "sin_emb": True, "sin_emb_dim": 128, "use_pos_embed": True,
                          "input_layers": 1, "inp_factor": 1, "num_probe_features": 0,
                          "inr_model": None, "stats": MNIST_STATS},
    "layer_layout": list(NOTEBOOK_LAYER_LAYOUT),
    "optimizer": "AdamW(lr=1e-3, amsgrad=True, weight_decay=5e-4), CrossEntropyLoss",
}


def _import_reference(reference_dir: Path | None) -> type:
    if reference_dir is not None and str(reference_dir) not in sys.path:
        sys.path.insert(0, str(reference_dir))
    try:
        from nn.relational_transformer import RelationalTransformer
    except ImportError as err:
        raise ImportError(f"cannot import nn.relational_transformer ({err}): pass "
                          "--reference-dir of a mkofinas/neural-graphs checkout, with "
                          "hydra-core, omegaconf, rff and einops installed") from err
    return RelationalTransformer


def sirens(count: int, seed: int = 0) -> dict[str, Tensor]:
    """Stacked parameters of ``count`` 2-32-32-1 SIRENs: the reference initialisation,
    with each layer's biases drawn from N(mean, std^2) of the MNIST statistics (zero sine
    biases would test nothing; so the normalized inputs are of order one, as the
    reference's)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layout = NOTEBOOK_LAYER_LAYOUT
    nets = [SIREN(layout[0], layout[1], len(layout) - 2, layout[-1]) for _ in range(count)]
    params = stack_siren_params(nets)
    for layer, (_, bias) in enumerate(siren_layer_keys(params)):
        mean, std = MNIST_STATS["biases_mean"][layer], MNIST_STATS["biases_std"][layer]
        params[bias] = mean + std * torch.randn(params[bias].shape, generator=generator)
    return params


def build_reference(reference_dir: Path | None, seed: int) -> nn.Module:
    """The reference ``RelationalTransformer`` at :data:`REFERENCE_CONFIG`, initialised
    after ``torch.manual_seed(seed)``."""
    from omegaconf import OmegaConf

    transformer = _import_reference(reference_dir)
    torch.manual_seed(seed)
    return transformer(**REFERENCE_CONFIG["model"], layer_layout=REFERENCE_CONFIG["layer_layout"],
                       graph_constructor=OmegaConf.create(REFERENCE_CONFIG["graph_constructor"]))


def reference_inputs(params: dict[str, Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """The reference's ``(weights, biases)`` of stacked SIRENs: weights ``[B, in, out, 1]``,
    biases ``[B, out, 1]`` (experiments/data.py's ``Batch``)."""
    layers = siren_layer_keys(params)
    weights = [params[w].transpose(1, 2).unsqueeze(-1).contiguous() for w, _ in layers]
    biases = [params[b].unsqueeze(-1).contiguous() for _, b in layers]
    return weights, biases


def reference_forward(model: nn.Module, inputs: tuple[list[Tensor], list[Tensor]]) -> Tensor:
    """The reference's logits, in eval mode."""
    model.eval()
    with torch.no_grad():
        return model(inputs)


def ours_from_reference(model: nn.Module) -> NGTransformer:
    return from_reference_state_dict(model.state_dict(), REFERENCE_CONFIG["layer_layout"])


def siren_graphs(params: dict[str, Tensor]) -> Batch:
    """The neural graphs of stacked SIRENs, batched as our jobs batch them."""
    count = params["net.0.weight"].shape[0]
    return Batch.from_data_list([to_neural_graph(siren_from_params(params, i))
                                 for i in range(count)])


def ours_forward(encoder: NGTransformer, params: dict[str, Tensor]) -> Tensor:
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
    print(f"float32: max |ours - reference| = {diff:.2e}")
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
    """One training step (forward, cross-entropy, backward, AdamW step: the notebook's) of
    ``"reference"`` or ``"ours"`` on ``batch_size`` SIRENs, inputs prepared once."""
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
        optimizer.step()
        return loss.item()

    return step


def time_steps(rounds: int, batch_size: int = 128, reference_dir: Path | None = None
               ) -> dict[str, float]:
    """Median seconds of one training step of each, timed alternately (one warm-up each)."""
    steps = {which: training_step(which, batch_size, reference_dir)
             for which in ("reference", "ours")}
    times: dict[str, list[float]] = {which: [] for which in steps}
    for step in steps.values():
        step()
    for _ in range(rounds):
        for which, step in steps.items():
            start = time.perf_counter()
            step()
            times[which].append(time.perf_counter() - start)
    return {which: statistics.median(values) for which, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reference.ngt",
                                     description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--reference-dir", type=Path, default=None,
                        help="mkofinas/neural-graphs checkout (default: where "
                             "nn.relational_transformer imports from)")
    parser.add_argument("--out", type=Path, default=None, help="write the fixture here")
    parser.add_argument("--count", type=positive_int, default=8, help="SIRENs in the fixture")
    parser.add_argument("--seed", type=int, default=0, help="seed of model and SIRENs")
    parser.add_argument("--time", type=non_negative_int, default=0,
                        help="rounds of timed training steps (0: none)")
    parser.add_argument("--batch-size", type=positive_int, default=128,
                        help="SIRENs per timed training step")
    args = parser.parse_args(argv)
    if args.out is None and not args.time:
        parser.error("nothing to do: give --out and/or --time")
    if args.out is not None:
        make_fixture(args.reference_dir, args.out, args.count, args.seed)
    if args.time:
        medians = time_steps(args.time, args.batch_size, args.reference_dir)
        print(f"training step, {args.batch_size} SIRENs, {torch.get_num_threads()} threads: "
              f"reference {medians['reference'] * 1e3:.0f} ms, ours "
              f"{medians['ours'] * 1e3:.0f} ms, ours/reference "
              f"{medians['ours'] / medians['reference']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
