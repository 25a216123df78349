"""CWRU bearing-fault 1D-CNN on windows of 2048 samples (the original's CWRU_1DCNN)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from models.common import check_input, model_main
from modules.convert import to_gnn

INPUT_SHAPE = (1, 2048)


class CNN1DCWRU(nn.Module):
    """Two Conv1d/ReLU/MaxPool1d stages then a 1024-32-10 classifier.

    Module names conv.0, conv.3, fc.0, fc.3 are the original's, so its checkpoints load.
    Returns logits (the original's extra softmax before CrossEntropyLoss is left out).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(1, 16, kernel_size=64, stride=16, padding=24), nn.ReLU(),
            nn.MaxPool1d(2, 2),
            nn.Conv1d(16, 32, kernel_size=3, stride=1, padding=1), nn.ReLU(),
            nn.MaxPool1d(2, 2),
        )
        self.flatten = nn.Flatten()
        self.fc = nn.Sequential(nn.Linear(1024, 32), nn.ReLU(), nn.Dropout(0.1),
                                nn.Linear(32, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, INPUT_SHAPE)
        return self.fc(self.flatten(self.conv(x)))


def CNN1DCWRUAsGNN(num_classes: int = 10) -> nn.Module:  # noqa: N802 (named like the original)
    """The message-passing twin of :class:`CNN1DCWRU`."""
    return to_gnn(CNN1DCWRU(num_classes), copy_model=False)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m models.CWRU_1DCNN``: parameter counts and the equivalence check."""
    return model_main("CWRU_1DCNN", CNN1DCWRU, CNN1DCWRUAsGNN, INPUT_SHAPE, 10_000, 1000, argv=argv)
