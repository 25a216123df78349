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

from pathlib import Path

import torch
from torch import Tensor, nn

from benchmarks.reference.common import ReferenceRun, import_reference, neural_graphs_inputs
from neural_graphs.encoders import NGGNN
from neural_graphs.encoders.reference.common import MNIST_LAYER_LAYOUT, MNIST_STATS
from neural_graphs.encoders.reference.ngnn import from_reference_state_dict

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
    "layer_layout": list(MNIST_LAYER_LAYOUT),
    "optimizer": "AdamW(lr=1e-3, weight_decay=5e-4, amsgrad=True), CrossEntropyLoss, "
                 "clip_grad_norm 10 (configs/base.yaml)",
}


def build_reference(reference_dir: Path | None, seed: int) -> nn.Module:
    """The reference ``GNNForClassification`` at :data:`REFERENCE_CONFIG`, composed by
    hydra from the reference's configs and instantiated as its main.py does after
    ``torch.manual_seed(seed)``."""
    gnn = import_reference(reference_dir, "nn.gnn", "mkofinas/neural-graphs",
                           "hydra-core, omegaconf and rff")  # the reference's package "nn"
    import hydra
    from hydra import compose, initialize_config_dir

    root = Path(reference_dir) if reference_dir is not None else \
        Path(gnn.__file__).resolve().parents[1]
    with initialize_config_dir(config_dir=str(root / REFERENCE_CONFIG["config_dir"]),
                               version_base=None):
        cfg = compose("base", overrides=REFERENCE_CONFIG["overrides"])
    torch.manual_seed(seed)
    return hydra.utils.instantiate(cfg.model, layer_layout=REFERENCE_CONFIG["layer_layout"])


def sirens(count: int, seed: int = 0) -> dict[str, Tensor]:
    """Stacked parameters of ``count`` 2-32-32-1 SIRENs (our ``SIREN`` key names) with
    fitted-like statistics: each layer's weights and biases drawn from N(mean, std^2) of
    the MNIST INR statistics, so the normalized inputs are of order one, as the
    reference's."""
    generator = torch.Generator().manual_seed(seed)
    layout = MNIST_LAYER_LAYOUT
    params = {}
    for layer, (fan_in, fan_out) in enumerate(zip(layout[:-1], layout[1:])):
        for kind, stats, shape in (("weight", "weights", (count, fan_out, fan_in)),
                                   ("bias", "biases", (count, fan_out))):
            mean, std = MNIST_STATS[f"{stats}_mean"][layer], MNIST_STATS[f"{stats}_std"][layer]
            params[f"net.{2 * layer}.{kind}"] = mean + std * torch.randn(shape,
                                                                         generator=generator)
    return params


def ours_from_reference(model: nn.Module) -> NGGNN:
    return from_reference_state_dict(model.state_dict(), REFERENCE_CONFIG["layer_layout"])


RUN = ReferenceRun(
    name="ngnn", doc=__doc__, checkout="mkofinas/neural-graphs", config=REFERENCE_CONFIG,
    build=build_reference, sirens=sirens, inputs=neural_graphs_inputs,
    ours=ours_from_reference,
    optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3, amsgrad=True,
                                               weight_decay=5e-4),
    clip=10.0, float64_default=True)
make_fixture = RUN.make_fixture
training_step = RUN.training_step
time_steps = RUN.time_steps
main = RUN.main

if __name__ == "__main__":
    raise SystemExit(main())
