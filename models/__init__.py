"""The five networks of the original release, each as a standard network and its twin.

A twin is the standard network passed through :func:`modules.to_gnn`, so the two are
always the same function with the same state_dict keys.

The model files are imported on first use of a name (``from models import VGG11CIFAR100``
or ``models.MODELS``), not with the package: ``python -m models.CIFAR100_VGG`` then runs
its file once, as ``__main__``, without runpy's warning about a module imported twice.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from models.CIFAR100_ResNet18 import ResNet18AsGNNCIFAR100, ResNet18CIFAR100
    from models.CIFAR100_VGG import VGG11CIFAR100, VGG11AsGNNCIFAR100
    from models.CIFAR100_ViT import ViTAsGNNCIFAR100, ViTCIFAR100
    from models.CWRU_1DCNN import CNN1DCWRU, CNN1DCWRUAsGNN
    from models.MNIST_MLP import MLPMNIST, MLPAsGNNMNIST


@dataclass(frozen=True)
class ModelSpec:
    """A model pair and the shape of one input sample."""

    name: str
    standard: Callable[[], nn.Module]
    twin: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    num_classes: int


# Exported name -> the model file that defines it.
_SOURCES = {
    "MLPMNIST": "MNIST_MLP", "MLPAsGNNMNIST": "MNIST_MLP",
    "CNN1DCWRU": "CWRU_1DCNN", "CNN1DCWRUAsGNN": "CWRU_1DCNN",
    "VGG11CIFAR100": "CIFAR100_VGG", "VGG11AsGNNCIFAR100": "CIFAR100_VGG",
    "ResNet18CIFAR100": "CIFAR100_ResNet18", "ResNet18AsGNNCIFAR100": "CIFAR100_ResNet18",
    "ViTCIFAR100": "CIFAR100_ViT", "ViTAsGNNCIFAR100": "CIFAR100_ViT",
}


def _model_registry() -> dict[str, ModelSpec]:
    return {
        "mlp": ModelSpec("MNIST MLP", MLPMNIST, MLPAsGNNMNIST, (1, 28, 28), 10),
        "cwru": ModelSpec("CWRU 1D-CNN", CNN1DCWRU, CNN1DCWRUAsGNN, (1, 2048), 10),
        "vgg11": ModelSpec("CIFAR-100 VGG11", VGG11CIFAR100, VGG11AsGNNCIFAR100, (3, 32, 32),
                           100),
        "resnet18": ModelSpec("CIFAR-100 ResNet-18", ResNet18CIFAR100, ResNet18AsGNNCIFAR100,
                              (3, 32, 32), 100),
        "vit": ModelSpec("CIFAR-100 ViT", ViTCIFAR100, ViTAsGNNCIFAR100, (3, 32, 32), 100),
    }


def __getattr__(name: str) -> object:
    if name in _SOURCES:
        value = getattr(importlib.import_module(f"models.{_SOURCES[name]}"), name)
    elif name == "MODELS":
        for exported in _SOURCES:  # the registry's names, bound in this module
            globals()[exported] = __getattr__(exported)
        value = _model_registry()
    else:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


MODELS: dict[str, ModelSpec]

__all__ = [
    "MODELS",
    "CNN1DCWRU",
    "CNN1DCWRUAsGNN",
    "MLPAsGNNMNIST",
    "MLPMNIST",
    "ModelSpec",
    "ResNet18AsGNNCIFAR100",
    "ResNet18CIFAR100",
    "VGG11AsGNNCIFAR100",
    "VGG11CIFAR100",
    "ViTAsGNNCIFAR100",
    "ViTCIFAR100",
]
