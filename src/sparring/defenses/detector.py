"""Trained binary detector of adversarial inputs (Metzen et al. 2017, arXiv:1702.04267; Gong et al.
2017, arXiv:1704.04960): BinaryDetector and train_detector. Shared detector contract, metrics,
FeatureSqueezing and DetectorGuard live in ``detection``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..attacks import ATTACKS
from ..config import TrainSettings
from ..errors import ConfigError, InputError
from ..rng import SampleGenerators
from ..threat import ThreatModel
from ..training import CrossEntropy, check_data, train
from ..util import check_images, check_number, model_device
from .base import Context, DefenseSpec, Param, register
from .detection import Detector

__all__ = ["BinaryDetector", "train_detector"]

_METZEN = ("Metzen, Genewein, Fischer, Bischoff 2017, On Detecting Adversarial Perturbations, arXiv:1702.04267; "
           "Grosse et al. 2017, arXiv:1702.06280; Gong, Wang, Ku 2017, arXiv:1704.04960")


# ---------------------------------------------------------------- trained binary detector


class _Stop(Exception):
    def __init__(self, value: Tensor) -> None:
        self.value = value


class BinaryDetector(Detector):
    """A small classifier separating clean from adversarial inputs; score(x) = P(adversarial).

    On a hidden layer's activations (Metzen et al. 2017, arXiv:1702.04267: a detector subnetwork
    attached to the classifier) when ``layer`` names a submodule of ``model`` (read by a forward
    hook; the forward pass stops there), or on the inputs (Gong et al. 2017, arXiv:1704.04960;
    Grosse et al. 2017, arXiv:1702.06280 add the class to the classifier instead). Differentiable:
    forward(x) is the detector logit z = z_adv - z_clean, score = sigmoid(z); gradients reach x
    through the classifier's layers. Build and train it with train_detector.
    Args: head, a module mapping features to 2 logits (clean, adversarial); model and layer, the
        classifier and the dotted name of the layer to read (both None: the inputs); threshold.
        >>> det = train_detector(model, x, y, threat=ThreatModel(Norm.LINF, 0.1), layer="2")
        >>> p_adv = det.score(x_test)
    """

    history: list[dict[str, Any]]  # train_detector's training records

    def __init__(self, head: nn.Module, *, model: nn.Module | None = None, layer: str | None = None,
                 threshold: float | None = None) -> None:
        super().__init__(threshold)
        if not isinstance(head, nn.Module):
            raise InputError(f"expected head to be an nn.Module, got {type(head).__name__}")
        if (model is None) != (layer is None):
            raise InputError(f"expected model and layer both given or both None, got layer={layer!r}")
        if model is not None:
            names = dict(model.named_modules())
            if layer not in names or layer == "":
                known = ", ".join(n for n in names if n)
                raise InputError(f"expected layer to name a submodule of the model ({known}), got {layer!r}")
        self.head, self.model, self.layer = head, model, layer

    def features(self, x: Tensor) -> Tensor:
        """The detector's input: x itself, or the output of model.<layer> on x."""
        if self.model is None:
            return x

        def stop(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            raise _Stop(output)

        handle = self.model.get_submodule(self.layer).register_forward_hook(stop)  # type: ignore[arg-type]
        try:
            self.model(x)
        except _Stop as found:
            return found.value
        finally:
            handle.remove()
        raise InputError(f"expected model.{self.layer} to run in the forward pass, got no call")

    def forward(self, x: Tensor) -> Tensor:
        out = self.head(self.features(check_images(x)))
        if out.dim() != 2 or out.shape[1] != 2:
            raise InputError(f"expected the head to return (B, 2) logits, got {tuple(out.shape)}")
        return out[:, 1] - out[:, 0]

    def score(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self(x))

    def margin(self, x: Tensor, threshold: float | None = None) -> Tensor:
        """z(x) - logit(threshold): the sign of score - threshold, in logit units (no saturation)."""
        t = min(max(self._threshold(threshold), 1e-12), 1 - 1e-12)
        return self(x) - math.log(t / (1 - t))


class HeadView(nn.Module):
    """What train() sees: the head only, on detached features (the classifier is not registered,
    so train() neither updates nor switches it to train mode)."""

    def __init__(self, detector: BinaryDetector) -> None:
        super().__init__()
        self.head = detector.head
        self.features: Callable[[Tensor], Tensor] = detector.features

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            f = self.features(x)
        return self.head(f)


#: How train_detector trains the head by default (Adam 1e-3, no weight decay, 10 epochs of 128).
DETECTOR_TRAINING = TrainSettings(epochs=10, batch_size=128, optimizer="adam", lr=1e-3, weight_decay=0.0)


def train_detector(
    model: nn.Module,
    x_clean: Tensor,
    y_clean: Tensor,
    *,
    threat: ThreatModel,
    attack: str | Callable[..., Tensor] = "pgd",
    attack_params: dict[str, Any] | None = None,
    layer: str | None = None,
    hidden: int = 64,
    settings: TrainSettings = DETECTOR_TRAINING,
    attack_batch_size: int = 256,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> BinaryDetector:
    """Train a BinaryDetector on x_clean (label 0) against attack(model, x_clean) (label 1).

    Metzen et al. 2017, arXiv:1702.04267 (layer=...), Gong et al. 2017, arXiv:1704.04960 (inputs).
    The adversarial set is made once (static, as Grosse et al. and Gong et al.; Metzen et al. also
    tried regenerating it against the detector), every sample attacked whether or not it fools the
    model, with per-sample generators SampleGenerators(seed, index), so it does not depend on
    attack_batch_size. The head is Flatten -> Linear(hidden) -> ReLU -> Linear(2), seeded by seed,
    trained with sparring.training.train; the classifier is never updated. Put model in eval mode.
    Args:
        model: the classifier (on ``device``); x_clean, y_clean: images in [0, 1] and labels.
        threat, attack, attack_params: the attack (name in ATTACKS or a function with the attack
            signature) and its keyword hyperparameters, without threat and generator.
        layer: dotted submodule name of model to read (None: the inputs); hidden: head width.
        settings: the head's TrainSettings (default DETECTOR_TRAINING); seed, device, progress: as in train().
    Returns:
        The trained BinaryDetector in eval mode, without a threshold (call fit_threshold);
        its training history is in ``detector.history``.

    Example:
        >>> det = train_detector(model, x, y, threat=ThreatModel(Norm.LINF, 0.1), attack="pgd")
        >>> auc = roc_auc(det.scores(x_test), det.scores(x_test_adv))
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"expected model to be an nn.Module, got {type(model).__name__}")
    if not isinstance(threat, ThreatModel):
        raise InputError(f"expected threat to be a ThreatModel, got {type(threat).__name__}")
    x_clean, y_clean = check_data(x_clean, y_clean, "clean")
    run = ATTACKS.get(attack) if isinstance(attack, str) else attack
    if not callable(run):
        raise InputError(f"expected attack to be a name in ATTACKS or a function, got {type(attack).__name__}")
    params = dict(attack_params or {})
    clash = sorted({"threat", "generator"} & set(params))
    if clash:
        raise InputError(f"expected attack_params without threat/generator (given separately), got {clash}")
    hidden = check_number(hidden, "hidden", integer=True, low=1)
    step = check_number(attack_batch_size, "attack_batch_size", integer=True, low=1)
    check_number(seed, "seed", integer=True, low=0)
    dev = model_device(model)
    x_adv = torch.cat([run(model, x_clean[i : i + step].to(dev), y_clean[i : i + step].to(dev), threat=threat,
                           generator=SampleGenerators(seed, range(i, min(i + step, len(x_clean)))), **params)
                       .detach().cpu() for i in range(0, len(x_clean), step)])
    probe = BinaryDetector(nn.Identity(), model=model if layer is not None else None, layer=layer)
    with torch.no_grad():
        dim = probe.features(x_clean[:2].to(dev)).flatten(1).shape[1]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        head = nn.Sequential(nn.Flatten(), nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 2))
    detector = BinaryDetector(head, model=probe.model, layer=layer)
    labels = torch.cat([torch.zeros(len(x_clean)), torch.ones(len(x_adv))]).long()
    detector.history = train(HeadView(detector), torch.cat([x_clean.cpu(), x_adv.to(x_clean.dtype)]), labels,
                             settings, objective=CrossEntropy(), seed=seed, device=device, progress=progress)
    return detector.eval()


def _train_count(params: dict[str, Any], context: Context) -> tuple[Tensor, Tensor]:
    """The first ``train`` training images (default 5000) on the context's device."""
    x_train, y_train = context.training_data("binary-detector", first=int(params.pop("train")))
    return x_train.to(context.device), y_train.to(context.device)


def _binary(model: nn.Module, context: Context, params: dict[str, Any]) -> nn.Module:
    params = dict(params)
    x_train, y_train = _train_count(params, context)
    if context.threat is None:
        raise ConfigError("the binary detector trains against an attack: expected eps")
    settings = DETECTOR_TRAINING.replace(epochs=params.pop("epochs"), lr=params.pop("lr"))
    return train_detector(model, x_train, y_train, threat=context.threat, attack=context.attack,
                          attack_params=dict(context.attack_params), settings=settings, seed=context.seed,
                          device=context.device, progress=context.progress, **params).to(context.device)


register(DefenseSpec(
    "binary-detector", kind="detector", differentiable=True, random=False, paper=_METZEN, target=train_detector,
    description="classifier of clean vs adversarial inputs",
    params=(Param("layer", "str", None, "the classifier layer it reads (default: the inputs)"),
            Param("hidden", "int", 64, "width of the head"), Param("epochs", "int", 10, "training epochs"),
            Param("train", "int", 5000, "training images (their attacked copies too)"),
            Param("lr", "float", 1e-3, "Adam learning rate")),
    detector=_binary))
