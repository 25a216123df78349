"""`python -m benchmarks.reference.jls`: our INR2JLS and INR-INR autoencoders against the
official ones (dddiowww/DNG ``dng_models.Autoencoder`` and ``Autoencoder_inr2inr``) at the
official configuration, on the same SIRENs.

Both official models are built as experiments/inr_classification/train_inr2jls.py and
train_inr2inr.py build them for MNIST (``--f-dim 128 --f-scale 3 --rnn-mode gru
--rnn-layer 1 --n-dim 512 --drop 0``; INR2JLS ``--l-dim 128 --l-size 49``, six views;
INR-INR ``--l-dim 256 --l-size 1``), ours as ``python -m MNIST_INR2JLS_Train --encoder dng
--dng-config official --hidden 512`` builds them at the same sizes. Prints each pair's
parameter counts (and whether they are equal), then one training step of each side timed
on the same ``--batch-size`` SIRENs (the reference layout and biases of
``benchmarks.reference.dng``), the sides alternating in this one process under the same
allocator setting: median seconds, the ratio ours / official against the target of issue
18, and the peak tensor memory of one step (``benchmarks.common.memory_use``).

A step is the forward pass, the loss as each side's training computes it, the backward pass
and an Adam step (lr 1e-4, the official optimizer; our job's AdamW recipe is not timed).
INR2JLS: the MSE of the six decoded views against the six views of the image scaled to
[-1, 1] (official: ``nn.MSELoss`` on the data set's views; ours: ``reconstruction_task``,
which draws the views in the loss). INR-INR: the decoded SIRENs rendered and compared with
the image (official: ``params_to_func_params`` of train_inr2inr.py and siren_utils'
``get_batch_siren``, image in [-1, 1]; ours: ``INR2INR`` and ``inr2inr_task``, image in
[0, 1]). The images are the SIRENs' own renders; inputs are prepared once, as each side's
data loader delivers them.

Run it with a Python that has the official code's requirements (einops, functorch) and the
project's; ``dng_models.py``, ``data/graph_utils.py``, ``siren_utils.py`` and
``params_to_func_params`` of ``experiments/inr_classification/train_inr2inr.py`` are read
from ``--reference-dir`` (by file), or from the folder ``dng_models`` imports from::

    PYTHONPATH=/work/ref/DNG python -m benchmarks.reference.jls --rounds 5
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import statistics
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn

from benchmarks.common import format_table, memory_use, time_interleaved
from benchmarks.reference.common import SIDES, siren_graphs
from benchmarks.reference.dng import _graph_spec, _load, reference_inputs, sirens
from jobs.encoder_jobs import materialize
from models.common import parameter_count
from neural_graphs.encoders import DNGEncoder
from neural_graphs.encoders.reference.dng import reference_kwargs
from neural_graphs.inr import render
from neural_graphs.jls import (
    INR2INR,
    ConvDecoder,
    JLSAutoencoder,
    LatentGenerator,
    SirenDecoder,
    SixViews,
    graph_features,
    inr2inr_task,
    reconstruction_task,
)
from neural_graphs.jls.inr2inr import batch_layout, graph_parameters
from utils.cli import HelpFormatter, non_negative_int, positive_int
from utils.memory import allocator_setting, keep_freed_memory

#: The official encoder's arguments (train_inr2jls.py / train_inr2inr.py defaults, --ds
#: mnist): DynamicNeuralGNN(graph_spec, fourier_dim, fourier_scale, rnn_mode, rnn_layer,
#: emb_dim, drop).
ENCODER = {"fourier_dim": 128, "fourier_scale": 3, "rnn_mode": "gru", "rnn_layer": 1,
           "emb_dim": 512, "drop": 0.0, "ds": "mnist"}
#: Per model: its name, the official latent's channels and positions (``--l-dim``,
#: ``--l-size``), views, and the widths the official classes fix (LatentGen's 1024; the
#: ConvDecoder49's 256 channels, the HyperNetworks' 512).
MODELS = {"jls": {"title": "INR2JLS (Autoencoder)", "latent_dim": 128, "latent_size": 49,
                  "views": 6, "latent_hidden": 1024, "decoder_hidden": 256},
          "inr2inr": {"title": "INR-INR (Autoencoder_inr2inr)", "latent_dim": 256,
                      "latent_size": 1, "views": 1, "latent_hidden": 1024,
                      "decoder_hidden": 512}}
#: Target of issue 18: ours / official seconds of one training step.
TARGET = 1.0
LR = 1e-4
INR2INR_SCRIPT = "experiments/inr_classification/train_inr2inr.py"

Step = Callable[[], float]


def training_step(model: nn.Module, loss: Callable[[], Tensor]) -> Step:
    """One step of ``model``: zero the gradients, ``loss()``, backward, Adam step (lr
    :data:`LR`); returns the loss."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)

    def step() -> float:
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
        return value.item()

    return step


# --------------------------------------------------------------------------- official


def _by_file(name: str, file: Path) -> ModuleType:
    if name not in sys.modules:
        if not file.is_file():
            raise FileNotFoundError(f"{file} not found: --reference-dir must be a "
                                    "dddiowww/DNG checkout")
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _script_function(file: Path, name: str, namespace: dict) -> Callable:
    """Function ``name`` of the script ``file``, compiled alone (running the script would
    change directory and read its data sets) with ``namespace`` as its globals."""
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: --reference-dir must be a dddiowww/DNG "
                                "checkout")
    tree = ast.parse(file.read_text(), str(file))
    found = [node for node in tree.body if isinstance(node, ast.FunctionDef)
             and node.name == name]
    if len(found) != 1:
        raise FileNotFoundError(f"{file}: expected one function {name}, got {len(found)}")
    exec(compile(ast.Module(found, []), str(file), "exec"), namespace)  # noqa: S102
    return namespace[name]


def official_step(model_name: str, reference_dir: Path | None, params: dict[str, Tensor],
                  images: Tensor, seed: int = 0) -> tuple[nn.Module, Step]:
    """The official ``Autoencoder`` (``jls``) or ``Autoencoder_inr2inr`` (``inr2inr``) at
    :data:`ENCODER` and :data:`MODELS`, initialised after ``torch.manual_seed(seed)``, and
    its training step on the SIRENs ``params`` with target ``images`` ``[B, H, W]`` in
    [0, 1]."""
    models, graph_utils = _load(reference_dir)
    folder = Path(models.__file__).parent
    c, m = ENCODER, MODELS[model_name]
    graph_spec = _graph_spec(graph_utils, params)
    data = reference_inputs(params, folder)
    signed = 2 * images - 1  # transforms.Normalize(0.5, 0.5)
    encoder_args = (c["fourier_dim"], c["fourier_scale"], c["rnn_mode"], c["rnn_layer"],
                    c["emb_dim"], m["latent_dim"], m["latent_size"])
    torch.manual_seed(seed)
    if model_name == "jls":
        model = models.Autoencoder(graph_spec, *encoder_args, drop=c["drop"], ds=c["ds"],
                                   img_aug_size=m["views"])
        views = SixViews()(signed).flatten(1, 2)  # INROriginalDataset, img_aug_type '1'
        criterion = nn.MSELoss()
        return model, training_step(model, lambda: criterion(model(data), views))
    act_num, layer_bias_id, n_e_connection = graph_spec
    node_id, _ = graph_utils.get_node_split_idx(act_num)
    edge_id, _ = graph_utils.get_edge_id(node_id)
    weight_num, bias_num = edge_id[-1][-1][-1] + 1, int(sum(act_num[1:]))
    model = models.Autoencoder_inr2inr(graph_spec, *encoder_args, weight_num, bias_num,
                                       drop=c["drop"], ds=c["ds"])
    from einops import rearrange

    to_func_params = _script_function(folder / INR2INR_SCRIPT, "params_to_func_params",
                                      {"rearrange": rearrange})
    with warnings.catch_warnings():  # functorch's deprecation, meshgrid's indexing
        warnings.simplefilter("ignore", (FutureWarning, UserWarning))
        batch_siren = _by_file("dng_siren_utils", folder / "siren_utils.py").get_batch_siren(
            c["ds"], images.device)[0]
    target = signed.unsqueeze(1)

    def loss() -> Tensor:
        weights, biases = model(data)
        outs = batch_siren(to_func_params(weights, biases, layer_bias_id, n_e_connection,
                                          act_num))
        return ((outs - target) ** 2).mean()

    return model, training_step(model, loss)


# --------------------------------------------------------------------------- ours


def our_step(model_name: str, params: dict[str, Tensor], images: Tensor,
             seed: int = 0) -> tuple[nn.Module, Step]:
    """Our ``JLSAutoencoder`` (``jls``) or ``INR2INR`` (``inr2inr``) with the encoder of
    ``MNIST_INR2JLS_Train --dng-config official --hidden 512`` at :data:`MODELS`' sizes,
    built as that job builds it (initialised after ``torch.manual_seed(seed)``), and its
    training step (the job's loss) on the SIRENs ``params`` with target ``images``."""
    m = MODELS[model_name]
    batch = siren_graphs(params)
    batch.target = images
    layout = batch_layout(batch)
    torch.manual_seed(seed)
    # The job's --dng-config official encoder: the official DynamicNeuralGNN, no head.
    encoder = DNGEncoder(1, **reference_kwargs(num_layers=len(layout) - 1,
                                               hidden=ENCODER["emb_dim"]))
    encoder.head = nn.Identity()
    encoder = materialize(encoder, batch)
    with torch.no_grad():
        width = graph_features(encoder.eval(), batch).shape[1]
    latent = LatentGenerator(width, m["latent_dim"], m["latent_size"], m["views"],
                             m["latent_hidden"])
    if model_name == "jls":
        model: nn.Module = JLSAutoencoder(encoder, latent, ConvDecoder(m["latent_dim"], 1,
                                                                       m["decoder_hidden"]))
        task = reconstruction_task(images.mean(0))
    else:
        weights, biases = graph_parameters(batch)
        decoder = SirenDecoder(m["views"] * m["latent_size"] * m["latent_dim"],
                               weights.shape[1], biases.shape[1], m["decoder_hidden"])
        decoder.set_statistics(weights, biases)
        model = INR2INR(encoder, latent, decoder, layout, tuple(images.shape[1:]))
        task = inr2inr_task()
    return model, training_step(
        model, lambda: task.loss(task.forward(model, batch), batch).mean())


# --------------------------------------------------------------------------- run


def compare(model_names: Sequence[str], batch_size: int, warmup: int, rounds: int,
            reference_dir: Path | None = None, seed: int = 0
            ) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """Rows of the parameter table and of the timing table, one per model: the pair's
    parameter counts; the median seconds of ``rounds`` training steps of each side
    (after ``warmup``, the sides taking turns), their ratio against :data:`TARGET` and the
    peak tensor memory of one step."""
    params = sirens(batch_size, seed)
    images = render(params).clamp(0, 1)
    counts, timings = [], []
    for name in model_names:
        title = MODELS[name]["title"]
        built = {"reference": official_step(name, reference_dir, params, images, seed),
                 "ours": our_step(name, params, images, seed)}
        n = {side: parameter_count(model) for side, (model, _) in built.items()}
        counts.append((title, f"{n['ours']:,}", f"{n['reference']:,}",
                       "yes" if n["ours"] == n["reference"] else "NO"))
        steps = {side: built[side][1] for side in SIDES}
        times = dict(zip(SIDES, time_interleaved(*steps.values(), torch.device("cpu"),
                                                 warmup=warmup, iters=rounds)))
        median = {side: statistics.median(values) for side, values in times.items()}
        peak = {side: memory_use(step, torch.device("cpu")).peak for side, step in steps.items()}
        ratio = median["ours"] / median["reference"]
        timings.append((title, f"{median['ours']:.3f}", f"{median['reference']:.3f}",
                        f"{ratio:.2f}x", f"<= {TARGET}x", "met" if ratio <= TARGET else "missed",
                        f"{peak['ours'] / 2**20:.0f} / {peak['reference'] / 2**20:.0f}"))
        print(f"{name}: ours {[round(t, 3) for t in times['ours']]}, official "
              f"{[round(t, 3) for t in times['reference']]}", file=sys.stderr, flush=True)
        del built, steps
    return counts, timings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reference.jls",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS),
                        help="jls: INR2JLS; inr2inr: INR-INR")
    parser.add_argument("--reference-dir", type=Path, default=None,
                        help="dddiowww/DNG checkout (default: the folder dng_models is "
                        "importable from, e.g. on PYTHONPATH)")
    parser.add_argument("--batch-size", type=positive_int, default=64,
                        help="SIRENs per training step (the official runs' batch)")
    parser.add_argument("--warmup", type=non_negative_int, default=1,
                        help="untimed steps of each side")
    parser.add_argument("--rounds", type=positive_int, default=5,
                        help="timed steps of each side, taken in turns")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of the models and the SIRENs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _load(args.reference_dir)
    except (FileNotFoundError, ImportError) as err:
        parser.error(f"cannot read the official code: {err}")
    keep_freed_memory()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu, "
          f"{allocator_setting()}; batch {args.batch_size}, median of {args.rounds} steps "
          f"per side after {args.warmup} untimed, taken in turns")
    counts, timings = compare(args.models, args.batch_size, args.warmup, args.rounds,
                              args.reference_dir, args.seed)
    print(format_table(("model", "parameters ours", "official", "equal"), counts,
                       right=(False, True, True, False)))
    print()
    print(format_table(("model", "ours s", "official s", "ours / official", "target", "",
                        "peak MiB ours / official"), timings,
                       right=(False, True, True, True, True, False, True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
