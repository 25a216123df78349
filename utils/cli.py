"""Command-line pieces shared by every command of the project: the one help formatter,
the ``--device`` default and check, and argparse types for numbers with a range."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch

__all__ = [
    "CPU_THREADS_HELP",
    "HelpFormatter",
    "at_least_one",
    "checked_device",
    "default_device",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "probability",
    "unit_probability",
    "set_cpu_threads",
]

#: ``--threads`` help of the commands that run many small networks at once (INR fitting,
#: zoo generation): one thread per process is their fast path on CPU.
CPU_THREADS_HELP = ("torch CPU threads per process (default: 1 on CPU, where the many small "
                    "batched products of this job run slower on more threads; use torchrun "
                    "--nproc_per_node=N for N cores)")


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help, unless the help already names its
    default or there is none to name (None, False, empty, a switch). Descriptions and
    epilogs are wrapped paragraph by paragraph (blank lines kept); a paragraph whose lines
    are indented (a table, an example command) is printed as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.strip("\n").split("\n\n"):
            if all(line.startswith(" ") for line in paragraph.splitlines()):
                paragraphs.append("\n".join(indent + line for line in paragraph.splitlines()))
            else:
                paragraphs.append(super()._fill_text(paragraph, width, indent))
        return "\n\n".join(paragraphs)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is False or default == ""
                or default is argparse.SUPPRESS or not action.option_strings
                or action.nargs == 0):
            return text
        return text + " (default: %(default)s)"


def default_device() -> str:
    """``"cuda"`` where torch sees a GPU, else ``"cpu"``: the ``--device`` default."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def checked_device(parser: argparse.ArgumentParser, text: str) -> torch.device:
    """``--device TEXT`` as a ``torch.device``; a parser error when torch cannot read it
    or it names CUDA on a machine without CUDA."""
    try:
        device = torch.device(text)
    except RuntimeError as err:
        parser.error(f"--device: {err}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine")
    return device


def set_cpu_threads(threads: int | None, device: torch.device | str | None) -> int:
    """Set torch's CPU threads: ``threads`` when given, else 1 when the job runs on the
    CPU (``device`` None or a CPU device; a GPU job keeps torch's choice). Returns the
    thread count in force. Fitting 200 INRs took 236 s of CPU time on torch's default two
    threads against 20 s on one (same result): small batched products gain nothing from
    intra-op threads and lose their time to synchronisation."""
    on_cpu = device is None or torch.device(device).type == "cpu"
    if threads is not None:
        torch.set_num_threads(threads)
    elif on_cpu:
        torch.set_num_threads(1)
    return torch.get_num_threads()


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse ``type``: an integer of at least 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _ranged_float(text: str, ok: Callable[[float], bool], wanted: str) -> float:
    """``float(text)`` when it is a finite number for which ``ok`` holds; else an argparse
    error saying what was ``wanted`` and what arrived."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
    return value


def probability(text: str) -> float:
    """An argparse ``type``: a number in [0, 1) (a dropout rate, a moving average's decay)."""
    return _ranged_float(text, lambda v: 0 <= v < 1, "in [0, 1)")


def at_least_one(text: str) -> float:
    """An argparse ``type``: a finite number of at least 1 (a largest scale factor)."""
    return _ranged_float(text, lambda v: 1 <= v < float("inf"), ">= 1 and finite")


def unit_probability(text: str) -> float:
    """An argparse ``type``: a probability in [0, 1]."""
    return _ranged_float(text, lambda v: 0 <= v <= 1, "in [0, 1]")


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number above 0."""
    return _ranged_float(text, lambda v: v > 0, "> 0 and finite")


def non_negative_float(text: str) -> float:
    """An argparse ``type``: a finite number of at least 0."""
    return _ranged_float(text, lambda v: v >= 0, ">= 0 and finite")
