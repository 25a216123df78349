"""Compiled layers in the training loop: ``--compile {auto,on,off}``.

A module offers compiled layers by a boolean attribute ``compile_layers`` (NG-T's
relational layers, :class:`neural_graphs.encoders.NGTransformer`); the loop sets it on
every such submodule of the model it trains. Compilation costs tens of seconds for each
new kind of batch (training, evaluation, a last smaller batch), which a short run never
wins back, so ``auto`` compiles only runs of at least :data:`COMPILE_MIN_STEPS` training
steps.
"""

from __future__ import annotations

import argparse

from torch import nn

__all__ = ["COMPILE_CHOICES", "COMPILE_MIN_STEPS", "compile_argument", "set_compiled_layers"]

COMPILE_CHOICES = ("auto", "on", "off")
#: ``--compile auto`` compiles runs of at least this many training steps.
COMPILE_MIN_STEPS = 200


def compile_argument(parser: argparse.ArgumentParser) -> None:
    """``--compile``."""
    parser.add_argument("--compile", choices=COMPILE_CHOICES, default="auto",
                        help="run the layers a model offers to compile (NG-T's relational "
                        "layers) through torch.compile, which fuses their elementwise work: "
                        "on, off, or auto, on for runs of at least "
                        f"{COMPILE_MIN_STEPS} training steps as compiling costs about a minute")


def set_compiled_layers(model: nn.Module, choice: str, total_steps: int) -> str:
    """Set ``compile_layers`` on every submodule of ``model`` that has it, by ``choice``
    (one of :data:`COMPILE_CHOICES`) and the run's ``total_steps``; returns what the run
    header says: ``""`` when no submodule offers compiled layers, else ``"compiled
    layers on"`` or ``"compiled layers off"``."""
    if choice not in COMPILE_CHOICES:
        raise ValueError(f"compile must be one of {COMPILE_CHOICES}, got {choice!r}")
    offering = [m for m in model.modules() if isinstance(getattr(m, "compile_layers", None),
                                                         bool)]
    if not offering:
        return ""
    on = choice == "on" or (choice == "auto" and total_steps >= COMPILE_MIN_STEPS)
    for module in offering:
        module.compile_layers = on
    return f"compiled layers {'on' if on else 'off'}"
