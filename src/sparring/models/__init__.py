"""Models: the registry of architectures, the Normalize layer, pretrained weights, checkpoint IO.

Every model takes images in [0, 1] of shape (B, C, H, W) and returns logits (B, K);
normalization is the first layer of the model (``Normalized``), never in the data loader.

Example:
    >>> from sparring.models import build_model, MODELS
    >>> model = build_model("resnet20")
    >>> MODELS.names()[:2]
    ['cifar-cnn', 'cifar-cnn-small']
"""

from __future__ import annotations

from . import lenet, preact, resnet, small  # noqa: F401  (register the architectures)
from .build import MODELS, build_model
from .io import load_network, load_weights, read_state_dict, save_model, stem
from .lenet import LeNet5
from .normalize import Normalize, Normalized
from .preact import PreActResNet18
from .pretrained import PRETRAINED, PretrainedSpec, load_pretrained
from .resnet import CifarResNet
from .small import CifarCNN, DigitsCNN

__all__ = [
    "MODELS",
    "PRETRAINED",
    "CifarCNN",
    "CifarResNet",
    "DigitsCNN",
    "LeNet5",
    "Normalize",
    "Normalized",
    "PreActResNet18",
    "PretrainedSpec",
    "build_model",
    "load_network",
    "load_pretrained",
    "load_weights",
    "read_state_dict",
    "save_model",
    "stem",
]
