"""Compiled and recomputed layers in the training loop: ``--compile {auto,on,off}`` and
``--grad-checkpointing``.

A module offers compiled layers by a boolean attribute ``compile_layers`` (NG-T's
relational layers, :class:`neural_graphs.encoders.NGTransformer`); the loop sets it on
every such submodule of the model it trains. Compilation costs tens of seconds for each
new kind of batch (training, evaluation, a last smaller batch), which a short run never
wins back, so ``auto`` compiles only runs of at least :data:`COMPILE_MIN_STEPS` training
steps.

A module offers recomputed layers by a method ``set_grad_checkpointing(enable)`` (DNG's
groups of messages, NG-T's chunks of graphs): with ``--grad-checkpointing`` their
activations are computed again in the backward pass instead of kept, less memory for more
time.
"""

from __future__ import annotations

import argparse

from torch import nn

__all__ = ["COMPILE_CHOICES", "COMPILE_MIN_STEPS", "compile_argument", "set_compiled_layers"]

COMPILE_CHOICES = ("auto", "on", "off")
#: ``--compile auto`` compiles runs of at least this many training steps.
COMPILE_MIN_STEPS = 200


def compile_argument(parser: argparse.ArgumentParser) -> None:
    """``--compile`` and ``--grad-checkpointing``."""
    parser.add_argument("--compile", choices=COMPILE_CHOICES, default="auto",
                        help="run the layers a model offers to compile (NG-T's relational "
                        "layers) through torch.compile, which fuses their elementwise work: "
                        "on, off, or auto, on for runs of at least "
                        f"{COMPILE_MIN_STEPS} training steps as compiling costs about a minute")
    parser.add_argument("--grad-checkpointing", action="store_true",
                        help="the layers a model can recompute (DNG's message groups, NG-T's "
                        "chunks of graphs) run again in the backward pass instead of keeping "
                        "their activations: a fraction of the memory for about half as much "
                        "time again (without it NG-T on CPU recomputes only the chunks past its "
                        "3 GiB activation budget)")


def set_compiled_layers(model: nn.Module, choice: str, total_steps: int,
                        grad_checkpointing: bool = False) -> str:
    """Set ``compile_layers`` on every submodule of ``model`` that has it, by ``choice``
    (one of :data:`COMPILE_CHOICES`) and the run's ``total_steps``, and
    ``set_grad_checkpointing(grad_checkpointing)`` on every submodule that offers it;
    returns what the run header says: ``"compiled layers on"`` or ``"compiled layers off"``
    when a submodule offers compiled layers, ``"gradient checkpointing"`` when one
    recomputes its layers (joined by ``" | "``), else ``""``."""
    if choice not in COMPILE_CHOICES:
        raise ValueError(f"compile must be one of {COMPILE_CHOICES}, got {choice!r}")
    offering = [m for m in model.modules() if isinstance(getattr(m, "compile_layers", None),
                                                         bool)]
    on = choice == "on" or (choice == "auto" and total_steps >= COMPILE_MIN_STEPS)
    for module in offering:
        module.compile_layers = on
    recomputing = [m for m in model.modules()
                   if callable(getattr(m, "set_grad_checkpointing", None))]
    for module in recomputing:
        module.set_grad_checkpointing(grad_checkpointing)
    said = [f"compiled layers {'on' if on else 'off'}"] if offering else []
    if recomputing and grad_checkpointing:
        said.append("gradient checkpointing")
    return " | ".join(said)
