"""Command-line checks shared by the project's scripts."""

from __future__ import annotations

import argparse

import torch

__all__ = ["checked_device", "non_negative_int", "positive_int"]


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
