"""Command-line checks shared by the project's scripts."""

from __future__ import annotations

import argparse

import torch

__all__ = ["checked_device"]


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
