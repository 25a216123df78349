"""Train ResNet-18 and its twin on CIFAR-100: SGD lr 0.01 momentum 0.9 wd 5e-4,
MultiStepLR [60, 120, 160] x 0.2, 100 epochs, batch 128 (the original).

Several GPUs: ``torchrun --nproc_per_node=N -m CIFAR100_ResNet18_Train ...``.
"""

import sys
from functools import partial

from torch.optim import SGD
from torch.optim.lr_scheduler import MultiStepLR

from jobs.twins import TrainConfig
from utils.Train_Test import main

SETUP = TrainConfig(
    script="CIFAR100_ResNet18_Train", model="resnet18", dataset="cifar100",
    epochs=100, batch_size=128, lr=0.01,
    optimizer=partial(SGD, momentum=0.9, weight_decay=5e-4),
    scheduler=partial(MultiStepLR, milestones=[60, 120, 160], gamma=0.2),
    description="Train ResNet-18 and its message-passing twin on CIFAR-100 with SGD and a "
    "step schedule, the original setup.",
)

if __name__ == "__main__":
    sys.exit(main(SETUP.job()))
