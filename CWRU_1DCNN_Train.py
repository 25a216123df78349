"""Train the CWRU 1D-CNN and its twin: Adam lr 5e-5, 1000 epochs, batch 128 (the original).

``--split random`` (default) is the original 80/20 split of the windows; ``--split time``
validates on the last 20% of each recording instead.
"""

import sys

from torch.optim import Adam

from jobs.twins import TrainConfig
from utils.Train_Test import main

SETUP = TrainConfig(
    script="CWRU_1DCNN_Train", model="cwru", dataset="cwru",
    epochs=1000, batch_size=128, lr=5e-5, optimizer=Adam,
    description="Train the CWRU bearing-fault 1D-CNN and its message-passing twin with "
    "Adam, the original setup.",
)

if __name__ == "__main__":
    sys.exit(main(SETUP.job()))
