"""Contrastive latent-space training and 1-nearest-neighbour classification (student report, seeds/001).

Cross-entropy plus a metric loss on the flattened output of a named layer: contrastive (Hadsell,
Chopra, LeCun 2006) or triplet (Schroff et al. 2015, FaceNet, arXiv:1503.03832) with attacked
positives. ``LatentNN`` (1-NN to a few references per class) is differentiable, so every gradient
attack applies to it directly; the report found it no more robust than the plain model.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks import fgsm, pgd
from ..config import TrainSettings
from ..errors import ConfigError, DataError, InputError
from ..rng import SampleGenerators, epoch_key
from ..threat import ThreatModel
from ..training import Objective, check_data, train
from ..util import attack_view, check_number, frozen, model_device
from .base import Context, DefenseSpec, Param, Trained, is_differentiable, is_random, register
from .latent import PENULTIMATE, latent_features, latent_forward, latent_hook, latent_layer

__all__ = ["CONTRASTIVE_TRAINING", "Contrastive", "LatentNN", "contrastive_loss", "contrastive_training",
           "triplet_loss"]

_PAPER = "Hadsell et al. 2006; student report (seeds/001)"


def _distances(a: Tensor, b: Tensor) -> Tensor:  # exact mode: no matmul rounding near 0, a zero gradient at 0
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def contrastive_loss(z: Tensor, y: Tensor, *, margin: float = 2.0, pairs: str = "batch") -> Tensor:
    """Mean of d^2 (same class) and max(0, margin - d)^2 (different class) over pairs of rows of z (B, D).

    Hadsell, Chopra, LeCun 2006 (CVPR), eq. 4 without the 1/2. pairs: "batch" every unordered pair
    i < j; "random" each row with the next (train() shuffles the batch). Fewer than 2 rows: 0.
        >>> z = torch.randn(8, 4, requires_grad=True)
        >>> contrastive_loss(z, torch.arange(8) % 3, margin=2.0).backward()
    """
    margin = _margin(margin)
    if pairs not in ("batch", "random"):
        raise InputError(f"expected pairs to be 'batch' or 'random', got {pairs!r}")
    if len(z) < 2:
        return z.sum() * 0
    if pairs == "random":
        d, same = (z - z.roll(-1, 0)).norm(dim=1), y == y.roll(-1, 0)
    else:
        i, j = torch.triu_indices(len(z), len(z), 1, device=z.device)
        d, same = _distances(z, z)[i, j], y[i] == y[j]
    return torch.where(same, d.square(), (margin - d).clamp_min(0).square()).mean()


def triplet_loss(z: Tensor, y: Tensor, *, margin: float = 2.0, positive: Tensor | None = None) -> Tensor:
    """Mean of max(0, d(a, p) - d(a, n) + margin) over the batch's triplets (FaceNet, arXiv:1503.03832).

    Schroff, Kalenichenko, Philbin 2015, eq. 1, Euclidean d. Anchors: the rows of z; positive: row i of
    ``positive`` (an attacked anchor's embedding), else every other same-class row (B^3 memory);
    negatives: every different-class row. No valid triplet: 0.
        >>> triplet_loss(z_clean, y, margin=2.0, positive=z_attacked).backward()
    """
    margin = _margin(margin)
    d, diff = _distances(z, z), y[:, None] != y[None, :]
    if positive is not None:
        hinge, valid = ((z - positive).norm(dim=1)[:, None] - d + margin).clamp_min(0), diff  # [a, n]
    else:
        pos = ~diff & ~torch.eye(len(z), dtype=torch.bool, device=z.device)
        hinge = (d[:, :, None] - d[:, None, :] + margin).clamp_min(0)  # [a, p, n]
        valid = pos[:, :, None] & diff[:, None, :]
    return hinge[valid].mean() if bool(valid.any()) else z.sum() * 0


def _margin(value: Any) -> float:
    return float(check_number(value, "margin", low=0, low_open=True))


class Contrastive(Objective):
    """Cross-entropy + weight * contrastive (or triplet) loss on a layer's output: contrastive training's
    objective; each epoch's record gets the mean latent loss ("latent_loss")."""

    def __init__(self, module: tuple[nn.Module, bool], *, margin: float, weight: float, pairs: str, triplet: bool,
                 attack: str | None, threat: ThreatModel | None, attack_steps: int, seed: int) -> None:
        self.module, self.margin, self.weight, self.pairs, self.triplet = module, margin, weight, pairs, triplet
        self.attack, self.threat, self.attack_steps, self.seed = attack, threat, attack_steps, seed
        self.totals = [0.0, 0]  # latent loss sum, samples of the epoch

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, epoch: int) -> tuple[Tensor, Tensor | None]:
        (logits, z), positive = latent_forward(model, self.module, x), None
        if self.attack is not None and self.threat is not None:  # crafted in eval mode with frozen parameters
            gens = SampleGenerators(epoch_key(self.seed, epoch), index.tolist())
            with frozen(model):
                x_adv = fgsm(model, x, y, threat=self.threat) if self.attack == "fgsm" else pgd(
                    model, x, y, threat=self.threat, steps=self.attack_steps, early_stop=False, generator=gens)
            positive = latent_forward(model, self.module, x_adv.detach())[1]
        latent = (triplet_loss(z, y, margin=self.margin, positive=positive) if self.triplet
                  else contrastive_loss(z, y, margin=self.margin, pairs=self.pairs))
        self.totals[0], self.totals[1] = self.totals[0] + float(latent.detach()) * len(y), self.totals[1] + len(y)
        return F.cross_entropy(logits, y) + self.weight * latent, logits

    def epoch_end(self, epoch: int, record: dict[str, Any]) -> bool:
        record["latent_loss"], self.totals = self.totals[0] / max(self.totals[1], 1), [0.0, 0]
        return False


#: contrastive_training's settings when none are given: Adam 1e-3, 10 epochs of batch 128, cosine.
CONTRASTIVE_TRAINING = TrainSettings(epochs=10, batch_size=128, optimizer="adam", lr=1e-3, weight_decay=0.0)


def contrastive_training(
    model: nn.Module, x_train: Tensor, y_train: Tensor, *, layer: str = PENULTIMATE, margin: float = 2.0,
    weight: float = 1.0, pairs: str = "batch", triplet: bool = False, attack: str | None = None,
    threat: ThreatModel | None = None, attack_steps: int = 10, settings: TrainSettings | None = None, seed: int = 0,
    device: str | torch.device = "cpu", checkpoint: str | Path | None = None, resume: bool = False,
    progress: bool = False,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Train with cross-entropy + weight * contrastive (or triplet) loss on ``layer``'s output, in place.

    Hadsell et al. 2006 and the student report (seeds/001, alpha = 2); triplet: Schroff et al. 2015,
    arXiv:1503.03832, with attacked positives as the report proposes. Runs train() with the Contrastive
    objective.
    Args: model, x_train, y_train: classifier, float images in [0, 1], int labels. layer: dotted name
        in model.named_modules() whose output is the latent vector, or "penultimate" (default:
        the input of the last nn.Linear). margin > 0 (alpha); weight >= 0 of
        the latent loss; pairs "batch"/"random". triplet: triplet loss instead; attack: None (same-class
        positives), "fgsm" or "pgd" (positive = the anchor attacked under ``threat``, ``attack_steps``).
        settings (default CONTRASTIVE_TRAINING), seed, device, checkpoint, resume, progress: as in
        ``sparring.training.train``.
    Returns: (the model, in eval mode; train()'s history, each record with "latent_loss").
        >>> model, history = contrastive_training(tiny, x, y, layer="5", margin=2.0, settings=TrainSettings(epochs=5))
        >>> defended = LatentNN(model, "5", x, y, per_class=5)
    """
    module = latent_hook(model, layer)
    margin, weight = _margin(margin), float(check_number(weight, "weight", low=0))
    contrastive_loss(torch.zeros(2, 1), torch.zeros(2), pairs=pairs)  # validates pairs
    if attack not in (None, "fgsm", "pgd"):
        raise InputError(f"expected attack to be None, 'fgsm' or 'pgd', got {attack!r}")
    if attack is not None and (not triplet or not isinstance(threat, ThreatModel)):
        raise ConfigError(f"expected triplet=True and a ThreatModel with attack={attack!r}, "
                          f"got triplet={triplet!r}, threat={type(threat).__name__}")
    objective = Contrastive(module, margin=margin, weight=weight, pairs=pairs, triplet=triplet, attack=attack,
                            threat=threat, attack_steps=check_number(attack_steps, "attack_steps", integer=True, low=1),
                            seed=seed)
    settings = CONTRASTIVE_TRAINING if settings is None else settings
    return model, train(model, x_train, y_train, settings, objective=objective, seed=seed, device=device,
                        checkpoint=checkpoint, resume=resume, progress=progress)


class LatentNN(nn.Module):
    """1-nearest-neighbour in ``layer``'s space against ``per_class`` seeded reference images per class.

    The report's classifier (seeds/001, 5 x 10 references; Hadsell et al. 2006's latent space).
    forward(x) -> (B, K) "logits" = minus the distance to each class's nearest reference: argmax is
    the 1-NN class and gradients flow, so every attack applies. Args: model, layer, x_ref, y_ref
    (classes 0..K-1, each with >= per_class images), per_class >= 1, seed (choice of references).
    References are embedded at construction; call ``refresh()`` after changing the model.
        >>> nn1 = LatentNN(model, "5", x_train, y_train, per_class=5, seed=0)
        >>> x_adv = pgd(nn1, x, y, threat=ThreatModel(Norm.LINF, 0.1))
    """

    @property
    def differentiable(self) -> bool:
        return is_differentiable(self.model)

    @property
    def random(self) -> bool:
        return is_random(self.model)

    def for_attack(self) -> LatentNN:
        """This classifier over the attack version of its model (BPDA filters in front), same references."""
        inner = attack_view(self.model)
        if inner is self.model:
            return self
        clone = copy.copy(self)
        clone._modules = {**self._modules, "model": inner}
        return clone

    ref_images: Tensor
    references: Tensor

    def __init__(self, model: nn.Module, layer: str, x_ref: Tensor, y_ref: Tensor, *, per_class: int = 5,
                 seed: int = 0) -> None:
        super().__init__()
        x_ref, y_ref = check_data(x_ref, y_ref, "reference")
        latent_hook(model, layer)  # validates the name
        counts = torch.bincount(y_ref)
        if isinstance(per_class, bool) or not isinstance(per_class, int) or not 1 <= per_class <= int(counts.min()):
            raise InputError(f"expected per_class between 1 and the smallest class count of the reference set "
                             f"({int(counts.min())}, class {int(counts.argmin())}), got {per_class!r}")
        gen = torch.Generator().manual_seed(check_number(seed, "seed", integer=True, low=0))
        picks = [torch.nonzero(y_ref == k).flatten()[torch.randperm(int(counts[k]), generator=gen)[:per_class]]
                 for k in range(len(counts))]  # fmt: skip
        self.model, self.layer, self.per_class, self.index = model, layer, per_class, torch.cat(picks)
        self.register_buffer("ref_images", x_ref[self.index].clone())
        self.refresh()

    def refresh(self) -> None:
        """Re-embed the reference images with the model as it is now."""
        self.register_buffer("references", latent_features(self.model, self.layer, self.ref_images))

    def forward(self, x: Tensor) -> Tensor:
        z = latent_forward(self.model, latent_hook(self.model, self.layer), x)[1]
        return -_distances(z, self.references.to(z.device, z.dtype)).view(len(z), -1, self.per_class).amin(dim=2)

    def unwrap(self) -> nn.Module:
        """The model whose latent space it reads (sparring.defenses.build.network_and_parts walks down with it)."""
        return self.model

    def trained_parts(self) -> dict[str, Tensor]:
        """The reference images, the part a saved model needs to rebuild this classifier."""
        return {"contrastive.ref_images": self.ref_images.detach().cpu()}

    def extra_repr(self) -> str:
        return f"layer={self.layer!r}, per_class={self.per_class}, classes={len(self.index) // self.per_class}"


def _trained(model: nn.Module, context: Context, params: dict[str, Any]) -> Trained:
    """The spec's ``train``: contrastive training, deployed as LatentNN over seeded reference images."""
    x_train, y_train = context.training_data("contrastive", augment=False)
    params = dict(params)
    layer, per_class = latent_layer(model, str(params.pop("layer"))), int(params.pop("per_class"))
    model, history = contrastive_training(model, x_train, y_train, layer=layer, settings=context.settings,
                                          seed=context.seed, device=context.device, checkpoint=context.checkpoint,
                                          resume=context.resume, progress=context.progress, **params)
    device = model_device(model)
    return Trained(LatentNN(model, layer, x_train.to(device), y_train.to(device), per_class=per_class,
                            seed=context.seed), history)


def _around(model: nn.Module, entry: Mapping[str, Any], parts: Mapping[str, Tensor]) -> nn.Module:
    """The spec's ``around``: the 1-NN over the saved reference images (before training: the model itself)."""
    if "contrastive.ref_images" not in parts:
        return model
    refs, per_class = parts["contrastive.ref_images"], int(entry["params"]["per_class"])
    if len(refs) % per_class:
        raise DataError(f"expected the saved reference images to be {per_class} per class, got {len(refs)} images")
    labels = torch.arange(len(refs) // per_class).repeat_interleave(per_class)
    device = model_device(model)
    return LatentNN(model, latent_layer(model, str(entry["params"]["layer"])), refs.to(device), labels.to(device),
                    per_class=per_class)


register(DefenseSpec(
    "contrastive", kind="training", differentiable=True, random=False, paper=_PAPER, target=contrastive_training,
    description="CE + contrastive/triplet loss in a latent layer; LatentNN",
    params=(Param("layer", "str", PENULTIMATE, "the latent layer: a module name, or the last Linear's input"),
            Param("margin", "float", 2.0, "the contrastive margin (alpha)"),
            Param("weight", "float", 1.0, "weight of the latent loss"),
            Param("pairs", "str", "batch", "batch (every pair) or random (each row with the next)"),
            Param("per_class", "int", 5, "reference images per class of the deployed 1-NN")),
    train=_trained, around=_around))
