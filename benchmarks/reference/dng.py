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

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn

from benchmarks.reference.common import ReferenceRun, initialised_sirens
from neural_graphs.encoders import DNGEncoder
from neural_graphs.encoders.reference.common import MNIST_LAYER_LAYOUT
from neural_graphs.encoders.reference.dng import from_reference_state_dict
from neural_graphs.inr import siren_layer_keys

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


def sirens(count: int, seed: int = 0, layout: tuple[int, ...] = MNIST_LAYER_LAYOUT
           ) -> dict[str, Tensor]:
    """Stacked parameters of ``count`` SIRENs: the reference initialisation with biases
    drawn from N(0, 0.5^2)."""
    return initialised_sirens(count, seed, layout, 0.0, 0.5)


def _graph_spec(graph_utils: ModuleType, params: dict[str, Tensor]) -> tuple:
    layers = siren_layer_keys(params)
    shape = ([params[w].shape[1:] for w, _ in layers], [params[b].shape[1:] for _, b in layers])
    return graph_utils.get_graph_spec(graph_utils.get_act_num(shape))


def build_reference(reference_dir: Path | None, seed: int,
                    layout: tuple[int, ...] = MNIST_LAYER_LAYOUT) -> nn.Module:
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
    ``get_edge_ft_bias_label`` of the weights and biases (data/generate_graph_data.py), in
    their dtype."""
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


def ours_from_reference(model: nn.Module) -> DNGEncoder:
    return from_reference_state_dict(model.state_dict(),
                                     drop=REFERENCE_CONFIG["drop"],
                                     cls_drop=REFERENCE_CONFIG["cls_drop"],
                                     fourier_scale=REFERENCE_CONFIG["fourier_scale"])


RUN = ReferenceRun(
    name="dng", doc=__doc__, checkout="dddiowww/DNG", config=REFERENCE_CONFIG,
    build=build_reference, sirens=sirens, inputs=reference_inputs, ours=ours_from_reference,
    optimizer=lambda params: torch.optim.AdamW(params, lr=1e-4, weight_decay=5e-4),
    outputs={"features": ("encoder", "features"), "logits": (None, None)})
make_fixture = RUN.make_fixture
training_step = RUN.training_step
time_steps = RUN.time_steps
main = RUN.main

if __name__ == "__main__":
    raise SystemExit(main())
