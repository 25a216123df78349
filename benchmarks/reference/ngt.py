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

from pathlib import Path

import torch
from torch import Tensor, nn

from benchmarks.reference.common import (
    ReferenceRun,
    import_reference,
    initialised_sirens,
    neural_graphs_inputs,
)
from neural_graphs.encoders import NGTransformer
from neural_graphs.encoders.reference.common import MNIST_LAYER_LAYOUT, MNIST_STATS
from neural_graphs.encoders.reference.ngt import from_reference_state_dict

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
    "layer_layout": list(MNIST_LAYER_LAYOUT),
    "optimizer": "AdamW(lr=1e-3, amsgrad=True, weight_decay=5e-4), CrossEntropyLoss",
}


def build_reference(reference_dir: Path | None, seed: int) -> nn.Module:
    """The reference ``RelationalTransformer`` at :data:`REFERENCE_CONFIG`, initialised
    after ``torch.manual_seed(seed)``."""
    from omegaconf import OmegaConf

    transformer = import_reference(reference_dir, "nn.relational_transformer",
                                   "mkofinas/neural-graphs",
                                   "hydra-core, omegaconf, rff and einops")
    torch.manual_seed(seed)
    return transformer.RelationalTransformer(
        **REFERENCE_CONFIG["model"], layer_layout=REFERENCE_CONFIG["layer_layout"],
        graph_constructor=OmegaConf.create(REFERENCE_CONFIG["graph_constructor"]))


def sirens(count: int, seed: int = 0) -> dict[str, Tensor]:
    """Stacked parameters of ``count`` 2-32-32-1 SIRENs: the reference initialisation,
    with each layer's biases drawn from N(mean, std^2) of the MNIST statistics (so the
    normalized inputs are of order one, as the reference's)."""
    return initialised_sirens(count, seed, MNIST_LAYER_LAYOUT, MNIST_STATS["biases_mean"],
                              MNIST_STATS["biases_std"])


def ours_from_reference(model: nn.Module) -> NGTransformer:
    # every activation kept, as the reference does: 128 SIRENs at this size keep 6 GiB,
    # past the default budget, where recomputing chunks would trade time for memory
    return from_reference_state_dict(model.state_dict(), REFERENCE_CONFIG["layer_layout"],
                                     activation_budget=None)


RUN = ReferenceRun(
    name="ngt", doc=__doc__, checkout="mkofinas/neural-graphs", config=REFERENCE_CONFIG,
    build=build_reference, sirens=sirens, inputs=neural_graphs_inputs,
    ours=ours_from_reference,
    optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3, amsgrad=True,
                                               weight_decay=5e-4),
    float64_default=True)
make_fixture = RUN.make_fixture
training_step = RUN.training_step
time_steps = RUN.time_steps
main = RUN.main

if __name__ == "__main__":
    raise SystemExit(main())
