"""What the side-by-side runs of ``benchmarks.reference.<encoder>`` share: the SIRENs and
their graphs, importing a reference checkout, and :class:`ReferenceRun`, which writes a
module's fixture, builds its training steps, times them and gives it its command line
from the few pieces that differ between the references."""

from __future__ import annotations

import argparse
import copy
import importlib
import statistics
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch

from benchmarks.common import time_interleaved
from models.common import parameter_count
from neural_graphs.graph import to_neural_graph
from neural_graphs.inr import SIREN, siren_from_params, siren_layer_keys, stack_siren_params
from utils.cli import HelpFormatter, non_negative_int, positive_int
from utils.compiled import set_compiled_layers

__all__ = ["SIDES", "ReferenceRun", "default_dtype", "evaluate", "import_reference",
           "initialised_sirens", "neural_graphs_inputs", "siren_graphs"]

#: the two sides of every comparison
SIDES = ("reference", "ours")


def import_reference(reference_dir: Path | None, module: str, checkout: str,
                     needs: str) -> ModuleType:
    """Import ``module`` of a reference checkout, ``reference_dir`` put first on
    ``sys.path`` (None: importable already); ``ImportError`` saying what to pass (a
    ``checkout`` folder, the packages it ``needs``) if it cannot."""
    if reference_dir is not None and str(reference_dir) not in sys.path:
        sys.path.insert(0, str(reference_dir))
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"cannot import the reference's {module} ({err}): pass "
                          f"--reference-dir of a {checkout} checkout, with {needs} "
                          "installed") from err


def initialised_sirens(count: int, seed: int, layout: Sequence[int],
                       bias_mean: Sequence[float] | float,
                       bias_std: Sequence[float] | float) -> dict[str, Tensor]:
    """Stacked parameters of ``count`` SIRENs of ``layout``: the reference initialisation
    after ``torch.manual_seed(seed)``, each layer's biases then drawn from
    :math:`N(\\mu_l, \\sigma_l^2)` (a generator seeded ``seed``; one number for every layer
    or one per layer), since the initialisation's zero sine biases would test nothing."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    nets = [SIREN(layout[0], layout[1], len(layout) - 2, layout[-1]) for _ in range(count)]
    params = stack_siren_params(nets)
    for layer, (_, bias) in enumerate(siren_layer_keys(params)):
        mean = bias_mean if isinstance(bias_mean, float | int) else bias_mean[layer]
        std = bias_std if isinstance(bias_std, float | int) else bias_std[layer]
        params[bias] = mean + std * torch.randn(params[bias].shape, generator=generator)
    return params


def siren_graphs(params: dict[str, Tensor]) -> Batch:
    """The neural graphs of stacked SIRENs, batched as our jobs batch them."""
    count = params["net.0.weight"].shape[0]
    return Batch.from_data_list([to_neural_graph(siren_from_params(params, i))
                                 for i in range(count)])


def neural_graphs_inputs(params: dict[str, Tensor], reference_dir: Path | None = None
                         ) -> tuple[list[Tensor], list[Tensor]]:
    """mkofinas/neural-graphs' ``(weights, biases)`` of stacked SIRENs: weights
    ``[B, in, out, 1]``, biases ``[B, out, 1]`` (its experiments/data.py's ``Batch``;
    ``reference_dir`` is not needed)."""
    layers = siren_layer_keys(params)
    weights = [params[w].transpose(1, 2).unsqueeze(-1).contiguous() for w, _ in layers]
    biases = [params[b].unsqueeze(-1).contiguous() for _, b in layers]
    return weights, biases


def evaluate(model: nn.Module, inputs: object,
             call: Callable[[object], Tensor] | None = None) -> Tensor:
    """``call(inputs)`` (default ``model(inputs)``) with ``model`` in eval mode, without
    gradients."""
    model.eval()
    with torch.no_grad():
        return (model if call is None else call)(inputs)


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Torch's default dtype set to ``dtype`` inside the block."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@dataclass(frozen=True)
class ReferenceRun:
    r"""A published model beside our encoder in its reference configuration.

    Args:
        name (str): the encoder (``python -m benchmarks.reference.<name>``).
        doc (str): the module's docstring (the command's description).
        checkout (str): the reference repository, for ``--reference-dir``'s help.
        config (dict): the reference configuration reproduced (saved in the fixture).
        build (Callable): ``build(reference_dir, seed)``, the reference model initialised
            after ``torch.manual_seed(seed)``.
        sirens (Callable): ``sirens(count, seed)``, the stacked SIREN parameters read.
        inputs (Callable): ``inputs(params, reference_dir)``, the reference's inputs.
        ours (Callable): ``ours(model)``, our encoder holding the reference model's
            parameters (of its dtype).
        optimizer (Callable): ``optimizer(parameters)`` of a training step.
        clip (float, optional): gradient norm clipping of a training step.
        outputs (Mapping): the outputs saved (and ``<name>64`` in float64): name ->
            ``(reference attribute, our attribute)`` called on the inputs (None: the model
            itself).
        float64_default (bool): run the float64 reference with float64 as torch's
            default dtype (a reference building tensors in the default dtype).
    """

    name: str
    doc: str
    checkout: str
    config: dict
    build: Callable[[Path | None, int], nn.Module]
    sirens: Callable[[int, int], dict[str, Tensor]]
    inputs: Callable[[dict[str, Tensor], Path | None], object]
    ours: Callable[[nn.Module], nn.Module]
    optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
    clip: float | None = None
    outputs: Mapping[str, tuple[str | None, str | None]] = field(
        default_factory=lambda: {"logits": (None, None)})
    float64_default: bool = False

    def _reference_outputs(self, model: nn.Module, inputs: object) -> dict[str, Tensor]:
        return {name: evaluate(model, inputs, None if attr is None else getattr(model, attr))
                for name, (attr, _) in self.outputs.items()}

    def make_fixture(self, reference_dir: Path | None, out: Path, count: int = 8,
                     seed: int = 0) -> dict:
        """Write the test fixture to ``out`` and return it: the configuration, the
        reference's ``state_dict`` and parameter count, the SIRENs' parameters and the
        reference's :attr:`outputs` on them in float32 and (``<name>64``) float64; also
        prints how far ours is from them."""
        model = self.build(reference_dir, seed)
        params = self.sirens(count, seed)
        fixture = {
            "config": self.config,
            "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "params": params, "parameter_count": parameter_count(model),
            **self._reference_outputs(model, self.inputs(params, reference_dir)),
        }
        model64 = copy.deepcopy(model).double()
        params64 = {key: value.double() for key, value in params.items()}
        inputs64 = self.inputs(params64, reference_dir)
        with default_dtype(torch.float64 if self.float64_default else torch.get_default_dtype()):
            fixture |= {f"{name}64": value
                        for name, value in self._reference_outputs(model64, inputs64).items()}
        ours = self.ours(model)
        for suffix, encoder, sirens in (("", ours, params),
                                        ("64", self.ours(model64), params64)):
            graphs = siren_graphs(sirens)
            for name, (_, attr) in self.outputs.items():
                mine = evaluate(encoder, graphs,
                                None if attr is None else getattr(encoder, attr))
                diff = (mine - fixture[name + suffix]).abs().max().item()
                print(f"{name}{suffix}: max |ours - reference| = {diff:.2e} (reference up "
                      f"to {fixture[name + suffix].abs().max().item():.2f})")
        print(f"parameters: reference {fixture['parameter_count']:,}, ours "
              f"{parameter_count(ours):,}")
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(fixture, out)
        print(f"wrote {out} ({out.stat().st_size / 2**20:.2f} MiB)")
        return fixture

    def training_step(self, which: str, batch_size: int = 128,
                      reference_dir: Path | None = None, seed: int = 0,
                      compile_layers: bool = False) -> Callable[[], float]:
        """One training step (forward, cross-entropy, backward, gradient clipping to
        :attr:`clip`, :attr:`optimizer` step) of ``"reference"`` or ``"ours"`` on
        ``batch_size`` SIRENs. Inputs are prepared once, as each one's data loader
        delivers them: the reference's (its graph built in its forward), our batch of
        neural graphs. ``compile_layers``: ours with the layers it offers to compile
        compiled, as the training loop runs a long run (``--compile auto``)."""
        if which not in SIDES:
            raise ValueError(f"which must be 'reference' or 'ours', got {which!r}")
        params = self.sirens(batch_size, seed)
        labels = torch.randint(0, 10, (batch_size,),
                               generator=torch.Generator().manual_seed(seed))
        model = self.build(reference_dir, seed)
        if which == "ours":
            model, inputs = self.ours(model), siren_graphs(params)
            set_compiled_layers(model, "on" if compile_layers else "off", 0)
        else:
            inputs = self.inputs(params, reference_dir)
        model.train()
        optimizer = self.optimizer(model.parameters())
        criterion = nn.CrossEntropyLoss()

        def step() -> float:
            optimizer.zero_grad()
            loss = criterion(model(inputs), labels)
            loss.backward()
            if self.clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), self.clip)
            optimizer.step()
            return loss.item()

        return step

    def step_times(self, rounds: int, batch_size: int = 128,
                   reference_dir: Path | None = None, warmup: int = 1,
                   compile_layers: bool = False
                   ) -> tuple[dict[str, Callable[[], float]], dict[str, list[float]]]:
        """Each side's training step (:meth:`training_step`) and the seconds of ``rounds``
        of them, the sides taking turns so that a slower or faster period of the machine
        falls on both (:func:`benchmarks.common.time_interleaved`); the ``warmup`` steps
        before them include any compilation."""
        steps = {side: self.training_step(side, batch_size, reference_dir,
                                          compile_layers=compile_layers) for side in SIDES}
        times = time_interleaved(*steps.values(), torch.device("cpu"), warmup=warmup,
                                 iters=rounds)
        return steps, dict(zip(SIDES, times))

    def time_steps(self, rounds: int, batch_size: int = 128,
                   reference_dir: Path | None = None) -> dict[str, float]:
        """Median seconds of one training step of each side (:meth:`step_times`)."""
        _, times = self.step_times(rounds, batch_size, reference_dir)
        return {side: statistics.median(t) for side, t in times.items()}

    def main(self, argv: Sequence[str] | None = None) -> int:
        """The command line: ``--out`` writes the fixture, ``--time N`` times N steps."""
        parser = argparse.ArgumentParser(prog=f"python -m benchmarks.reference.{self.name}",
                                         description=self.doc, formatter_class=HelpFormatter)
        parser.add_argument("--reference-dir", type=Path, default=None,
                            help=f"{self.checkout} checkout (default: already importable)")
        parser.add_argument("--out", type=Path, default=None,
                            help=f"write the test fixture here "
                                 f"(tests/fixtures/reference/{self.name}.pt)")
        parser.add_argument("--count", type=positive_int, default=8,
                            help="SIRENs in the fixture")
        parser.add_argument("--seed", type=non_negative_int, default=0,
                            help="seed of the reference model and the SIRENs")
        parser.add_argument("--time", type=non_negative_int, default=0, metavar="N",
                            help="time N rounds of one training step of each (0: no timing)")
        parser.add_argument("--batch-size", type=positive_int, default=128,
                            help="SIRENs per timed training step")
        args = parser.parse_args(argv)
        if args.out is None and not args.time:
            parser.error("nothing to do: pass --out and/or --time")
        if args.out is not None:
            self.make_fixture(args.reference_dir, args.out, args.count, args.seed)
        if args.time:
            medians = self.time_steps(args.time, args.batch_size, args.reference_dir)
            print(f"one training step on {args.batch_size} SIRENs (median of {args.time}, "
                  f"{torch.get_num_threads()} threads): reference "
                  f"{medians['reference'] * 1e3:.1f} ms, ours {medians['ours'] * 1e3:.1f} "
                  f"ms, ours / reference = {medians['ours'] / medians['reference']:.2f}")
        return 0
