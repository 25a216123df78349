"""Train the MNIST MLP and its twin: SGD lr 1e-3, 100 epochs, batch 128 (the original).

``python -m MNIST_MLP_Train --help`` lists the flags; ``--mnist-source test-split`` trains
on a data folder holding only the MNIST test set.
"""

import sys

from torch.optim import SGD

from jobs.twins import TrainConfig
from utils.Train_Test import main

SETUP = TrainConfig(
    script="MNIST_MLP_Train", model="mlp", dataset="mnist",
    epochs=100, batch_size=128, lr=1e-3, optimizer=SGD,
    description="Train the MNIST MLP (784-250-100-10) and its message-passing twin with "
    "plain SGD, the original setup.",
)

if __name__ == "__main__":
    sys.exit(main(SETUP.job()))
