"""`python -m benchmarks.reference.dng`: the official DNG classifier (dddiowww/DNG,
``dng_models.DNG_Classifier``) side by side with our DNGEncoder in its reference
configuration (neural_graphs.encoders.reference.dng).

Writes the fixture of tests/neural_graphs/test_reference_dng.py (``--out``): the reference's
state_dict, the SIREN parameters it read and its outputs (the encoder's flattened
last-layer states and the classifier's logits, eval mode; float32, and float64 from the
same parameters run in float64). With ``--time N`` it
also times N rounds of one training step (forward, backward, AdamW step) of each on the
same SIRENs, alternating, and prints the medians.

Run it with a Python that has the reference's requirements (einops) and the project's:
only ``dng_models.py`` and ``data/graph_utils.py`` are read from ``--reference-dir``
(loaded by file, so its top-level ``data`` and ``tests`` packages shadow nothing; without
``--reference-dir``, from the folder ``dng_models`` imports from, e.g. on PYTHONPATH).

    python -m benchmarks.reference.dng --reference-dir path/to/DNG \\
        --out tests/fixtures/reference/dng.pt --time 5
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch

from neural_graphs.encoders import DNGEncoder
from neural_graphs.encoders.reference.dng import from_reference_state_dict
from neural_graphs.graph import to_neural_graph
from neural_graphs.inr import SIREN, siren_from_params, siren_layer_keys, stack_siren_params
from utils.cli import HelpFormatter, non_negative_int, positive_int

#: The reference configuration: classify_encoder.py's argument defaults with --ds mnist.
REFERENCE_CONFIG: dict = {
    "source": "dddiowww/DNG experiments/inr_classification/classify_encoder.py (defaults, "
              "--ds mnist): DNG_Classifier(graph_spec, f_dim, f_scale, rnn_mode, rnn_layer, "
              "n_dim, drop, cls_dim, cls_drop, ds)",
    "graph_spec": "get_graph_spec(get_act_num(SIREN shape)) of 2-32-32-1 SIRENs",
    "fourier_dim": 128, "fourier_scale": 3, "rnn_mode": "gru", "rnn_layer": 1,
    "emb_dim": 128, "drop": 0.0, "cls_dim": 128, "cls_drop": 0.5, "ds": "mnist",
    "pe": False, "ae": False,
    "optimizer": "AdamW(lr=1e-4, weight_decay=5e-4), CrossEntropyLoss",
}
SIREN_LAYOUT = (2, 32, 32, 1)


def _load(reference_dir: Path | None) -> tuple[ModuleType, ModuleType]:
    """``dng_models`` and ``data/graph_utils`` of the reference, loaded by file (from
    ``reference_dir``, or from wherever ``dng_models`` is importable)."""
    if reference_dir is None:
        spec = importlib.util.find_spec("dng_models")
        if spec is None or spec.origin is None:
            raise FileNotFoundError("dng_models (dddiowww/DNG) is not importable: pass "
                                    "--reference-dir or set PYTHONPATH")
        reference_dir = Path(spec.origin).parent
    modules = []
    for name, path in (("dng_models", "dng_models.py"),
                       ("dng_graph_utils", "data/graph_utils.py")):
        if name in sys.modules:
            modules.append(sys.modules[name])
            continue
        file = Path(reference_dir) / path
        if not file.is_file():
            raise FileNotFoundError(f"{file} not found: --reference-dir must be a dddiowww/DNG "
                                    "checkout")
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        modules.append(module)
    return modules[0], modules[1]


def sirens(count: int, seed: int = 0, layout: tuple[int, ...] = SIREN_LAYOUT
           ) -> dict[str, Tensor]:
    """Stacked parameters of ``count`` SIRENs: the reference initialisation with biases
    drawn from N(0, 0.5^2) (the initialisation's zero sine biases would test nothing)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    nets = [SIREN(layout[0], layout[1], len(layout) - 2, layout[-1]) for _ in range(count)]
    params = stack_siren_params(nets)
    for _, bias in siren_layer_keys(params):
        params[bias] = 0.5 * torch.randn(params[bias].shape, generator=generator)
    return params


def _graph_spec(graph_utils: ModuleType, params: dict[str, Tensor]) -> tuple:
    layers = siren_layer_keys(params)
    shape = ([params[w].shape[1:] for w, _ in layers], [params[b].shape[1:] for _, b in layers])
    return graph_utils.get_graph_spec(graph_utils.get_act_num(shape))


def build_reference(reference_dir: Path | None, seed: int,
                    layout: tuple[int, ...] = SIREN_LAYOUT) -> nn.Module:
    """The reference ``DNG_Classifier`` at :data:`REFERENCE_CONFIG` for SIRENs of
    ``layout``, initialised after ``torch.manual_seed(seed)``."""
    models, graph_utils = _load(reference_dir)
    spec = _graph_spec(graph_utils, sirens(1, layout=layout))
    c = REFERENCE_CONFIG
    torch.manual_seed(seed)
    return models.DNG_Classifier(spec, c["fourier_dim"], c["fourier_scale"], c["rnn_mode"],
                                 c["rnn_layer"], c["emb_dim"], drop=c["drop"],
                                 cls_dim=c["cls_dim"], cls_drop=c["cls_drop"], ds=c["ds"],
                                 pe=c["pe"], ae=c["ae"])


def reference_inputs(params: dict[str, Tensor], reference_dir: Path | None = None
                     ) -> tuple[Tensor, Tensor]:
    """The reference's ``(e, b)`` of stacked SIRENs: per SIREN its
    ``get_edge_ft_bias_label`` of the weights and biases (data/generate_graph_data.py)."""
    _, graph_utils = _load(reference_dir)
    layers = siren_layer_keys(params)
    act_num = _graph_spec(graph_utils, params)[0]
    edges, biases = [], []
    for i in range(params[layers[0][0]].shape[0]):
        weights = [params[w][i][None] for w, _ in layers]
        bias = [params[b][i][None] for _, b in layers]
        e, b = graph_utils.get_edge_ft_bias_label((weights, bias), act_num, label=False)
        edges.append(e)
        biases.append(b)
    return torch.stack(edges), torch.stack(biases)


def reference_forward(model: nn.Module, inputs: tuple[Tensor, Tensor],
                      encoder_only: bool = False) -> Tensor:
    """The reference's logits (or its encoder's output), in eval mode."""
    model.eval()
    with torch.no_grad():
        return model.encoder(inputs) if encoder_only else model(inputs)


def ours_from_reference(model: nn.Module) -> DNGEncoder:
    return from_reference_state_dict(model.state_dict(),
                                     drop=REFERENCE_CONFIG["drop"],
                                     cls_drop=REFERENCE_CONFIG["cls_drop"],
                                     fourier_scale=REFERENCE_CONFIG["fourier_scale"])


def siren_graphs(params: dict[str, Tensor]) -> Batch:
    """The neural graphs of stacked SIRENs, batched as our jobs batch them."""
    count = params["net.0.weight"].shape[0]
    return Batch.from_data_list([to_neural_graph(siren_from_params(params, i))
                                 for i in range(count)])


def ours_forward(encoder: DNGEncoder, params: dict[str, Tensor],
                 encoder_only: bool = False) -> Tensor:
    """Our logits (or the readout our head reads), in eval mode."""
    encoder.eval()
    with torch.no_grad():
        batch = siren_graphs(params)
        return encoder.features(batch) if encoder_only else encoder(batch)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_fixture(reference_dir: Path | None, out: Path, count: int = 8, seed: int = 0
                 ) -> dict:
    """Write the test fixture to ``out`` and return it (also checking that ours matches)."""
    model = build_reference(reference_dir, seed)
    params = sirens(count, seed)
    inputs = reference_inputs(params, reference_dir)
    fixture = {
        "config": REFERENCE_CONFIG,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "params": params, "parameter_count": parameter_count(model),
        "features": reference_forward(model, inputs, encoder_only=True),
        "logits": reference_forward(model, inputs),
    }
    model64 = copy.deepcopy(model).double()
    inputs64 = tuple(value.double() for value in inputs)
    fixture["features64"] = reference_forward(model64, inputs64, encoder_only=True)
    fixture["logits64"] = reference_forward(model64, inputs64)
    params64 = {key: value.double() for key, value in params.items()}
    for suffix, ours, sirens_params in (("", ours_from_reference(model), params),
                                        ("64", ours_from_reference(model64), params64)):
        for name, only in (("features", True), ("logits", False)):
            diff = (ours_forward(ours, sirens_params, only)
                    - fixture[name + suffix]).abs().max().item()
            print(f"{name}{suffix}: max |ours - reference| = {diff:.2e}")
    print(f"parameters: reference {fixture['parameter_count']:,}, ours "
          f"{parameter_count(ours_from_reference(model)):,}")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, out)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.2f} MiB)")
    return fixture


def training_step(which: str, batch_size: int = 128, reference_dir: Path | None = None,
                  seed: int = 0) -> Callable[[], float]:
    """One training step (forward, cross-entropy, backward, AdamW step: classify_encoder.py)
    of ``"reference"`` or ``"ours"`` on ``batch_size`` SIRENs, inputs prepared once."""
    if which not in ("reference", "ours"):
        raise ValueError(f"which must be 'reference' or 'ours', got {which!r}")
    params = sirens(batch_size, seed)
    labels = torch.randint(0, 10, (batch_size,), generator=torch.Generator().manual_seed(seed))
    model = build_reference(reference_dir, seed)
    inputs: object = reference_inputs(params, reference_dir)
    if which == "ours":
        model = ours_from_reference(model)
        inputs = siren_graphs(params)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=5e-4)
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
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reference.dng",
                                     description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--reference-dir", type=Path, default=None,
                        help="dddiowww/DNG checkout (default: where dng_models imports from)")
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
