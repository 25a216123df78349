"""Train the ViT and its twin on CIFAR-100: AdamW lr 1e-4 wd 0.05, 300 epochs, batch 128
(the original). Until the attention twins exist, ``--model both`` trains the standard
network alone and says so."""

import sys
from functools import partial

from torch.optim import AdamW

from jobs.twins import TrainConfig
from utils.Train_Test import main

SETUP = TrainConfig(
    script="CIFAR100_ViT_Train", model="vit", dataset="cifar100",
    epochs=300, batch_size=128, lr=1e-4,
    optimizer=partial(AdamW, weight_decay=0.05),
    description="Train the Vision Transformer (patch 8, depth 6) and its message-passing "
    "twin on CIFAR-100 with AdamW, the original setup.",
)

if __name__ == "__main__":
    sys.exit(main(SETUP.job()))
