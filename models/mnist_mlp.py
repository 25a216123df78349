"""MNIST MLP: flatten, 784-250-100-10 with ReLU (the original's MNIST_MLP)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from models.common import check_input, model_main
from modules.convert import to_gnn

INPUT_SHAPE = (1, 28, 28)


class MLPMNIST(nn.Module):
    """784-250-100-10 perceptron. Returns logits: the original applied log_softmax and
    NLL loss, here the training loss (cross-entropy) applies it, the same objective."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(784, 250)
        self.fc2 = nn.Linear(250, 100)
        self.fc3 = nn.Linear(100, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, INPUT_SHAPE)
        x = self.relu(self.fc1(self.flatten(x)))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


def MLPAsGNNMNIST(num_classes: int = 10) -> nn.Module:  # noqa: N802 (named like the original)
    """The message-passing twin of :class:`MLPMNIST`."""
    return to_gnn(MLPMNIST(num_classes), copy_model=False)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m models.MNIST_MLP``: parameter counts and the equivalence check."""
    return model_main("MNIST_MLP", MLPMNIST, MLPAsGNNMNIST, INPUT_SHAPE, 10_000, 2000, argv=argv)
