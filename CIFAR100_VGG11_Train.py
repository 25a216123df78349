"""Train VGG11 and its twin on CIFAR-100: SGD lr 0.01 momentum 0.9 wd 5e-4, MultiStepLR
[60, 120, 160] x 0.2, 100 epochs, batch 16 (the original)."""

import sys
from functools import partial

from torch.optim import SGD
from torch.optim.lr_scheduler import MultiStepLR

from jobs.twins import TrainConfig
from utils.Train_Test import main

SETUP = TrainConfig(
    script="CIFAR100_VGG11_Train", model="vgg11", dataset="cifar100",
    epochs=100, batch_size=16, lr=0.01,
    optimizer=partial(SGD, momentum=0.9, weight_decay=5e-4),
    scheduler=partial(MultiStepLR, milestones=[60, 120, 160], gamma=0.2),
    description="Train VGG11 (BatchNorm) and its message-passing twin on CIFAR-100 with "
    "SGD and a step schedule, the original setup.",
)

if __name__ == "__main__":
    sys.exit(main(SETUP.job()))
