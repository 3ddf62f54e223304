"""Contrastive latent-space training and 1-nearest-neighbour classification (student report, seeds/001).

Cross-entropy plus a metric loss on the flattened output of a named layer: contrastive (Hadsell,
Chopra, LeCun 2006) or triplet (Schroff et al. 2015, FaceNet, arXiv:1503.03832) with attacked
positives. ``LatentNN`` (1-NN to a few references per class) is differentiable, so every gradient
attack applies to it directly; the report found it no more robust than the plain model.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks import fgsm, pgd
from ..errors import ConfigError, InputError, UnknownNameError
from ..rng import SampleGenerators
from ..threat import ThreatModel
from ..train import _check_data, _dtype, _positive, train
from .adversarial_training import _frozen
from .bpda import is_differentiable, is_random
from .registry import DEFENSES

__all__ = ["PENULTIMATE", "LatentNN", "contrastive_loss", "contrastive_training", "latent_features", "latent_view",
           "plot_latent", "triplet_loss"]

_PAPER = "Hadsell et al. 2006; student report (seeds/001)"
_GOLDEN, _M1 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9


#: layer name meaning "the input of the model's last nn.Linear": the penultimate features of any classifier.
PENULTIMATE = "penultimate"


def _layer(model: nn.Module, layer: Any) -> tuple[nn.Module, bool]:
    """(module to hook, whether its input rather than its output is the latent vector)."""
    if layer == PENULTIMATE:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise InputError("layer 'penultimate' is the input of the model's last nn.Linear, but the model has none; "
                             "name a layer instead")
        return linears[-1], True
    names = [n for n, _ in model.named_modules() if n]
    if not isinstance(layer, str) or layer not in names:
        raise UnknownNameError(f"expected layer to be 'penultimate' or name a module of the model "
                               f"({', '.join(names)}), got {layer!r}")
    return model.get_submodule(layer), False


def _forward(model: nn.Module, hook: tuple[nn.Module, bool], x: Tensor) -> tuple[Tensor, Tensor]:
    """(logits, flattened latent vector) from one forward pass; the last call wins if it runs twice.
    Cloned in the hook, so a following in-place op (ReLU(inplace=True)) cannot alter it."""
    seen: list[Any] = []
    module, on_input = hook
    if on_input:
        handle = module.register_forward_pre_hook(lambda m, i: seen.append(i[0].clone() if i and isinstance(i[0], Tensor) else i))
    else:
        handle = module.register_forward_hook(lambda m, i, o: seen.append(o.clone() if isinstance(o, Tensor) else o))
    try:
        logits = model(x)
    finally:
        handle.remove()
    if not seen or not isinstance(seen[-1], Tensor):
        got = type(seen[-1]).__name__ if seen else "no call"
        raise InputError(f"expected the layer to output a tensor in the model's forward pass, got {got}")
    return logits, seen[-1].flatten(1)


def _distances(a: Tensor, b: Tensor) -> Tensor:  # exact mode: no matmul rounding near 0, a zero gradient at 0
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def contrastive_loss(z: Tensor, y: Tensor, *, margin: float = 2.0, pairs: str = "batch") -> Tensor:
    """Mean of d^2 (same class) and max(0, margin - d)^2 (different class) over pairs of rows of z (B, D).

    Hadsell, Chopra, LeCun 2006 (CVPR), eq. 4 without the 1/2. pairs: "batch" every unordered pair
    i < j; "random" each row with the next (train() shuffles the batch). Fewer than 2 rows: 0.
        >>> z = torch.randn(8, 4, requires_grad=True)
        >>> contrastive_loss(z, torch.arange(8) % 3, margin=2.0).backward()
    """
    margin = _positive(margin, "margin", float)
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
    margin = _positive(margin, "margin", float)
    d, diff = _distances(z, z), y[:, None] != y[None, :]
    if positive is not None:
        hinge, valid = ((z - positive).norm(dim=1)[:, None] - d + margin).clamp_min(0), diff  # [a, n]
    else:
        pos = ~diff & ~torch.eye(len(z), dtype=torch.bool, device=z.device)
        hinge = (d[:, :, None] - d[:, None, :] + margin).clamp_min(0)  # [a, p, n]
        valid = pos[:, :, None] & diff[:, None, :]
    return hinge[valid].mean() if bool(valid.any()) else z.sum() * 0


@DEFENSES.register("contrastive", kind="training", differentiable=True, random=False, paper=_PAPER,
                   params={"margin": 2.0}, description="CE + contrastive/triplet loss in a latent layer; LatentNN")
def contrastive_training(
    model: nn.Module, x_train: Tensor, y_train: Tensor, *, layer: str = PENULTIMATE, margin: float = 2.0, weight: float = 1.0,
    pairs: str = "batch", triplet: bool = False, attack: str | None = None, threat: ThreatModel | None = None,
    attack_steps: int = 10, epochs: int = 10, batch_size: int = 128, optimizer: str = "adam", lr: float = 1e-3,
    momentum: float = 0.9, weight_decay: float = 0.0, schedule: str = "cosine", seed: int = 0,
    device: str | torch.device = "cpu", progress: bool = False, log: Callable[[str], Any] | None = None,
    checkpoint: str | Path | None = None, resume: bool = False,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Train with cross-entropy + weight * contrastive (or triplet) loss on ``layer``'s output, in place.

    Hadsell et al. 2006 and the student report (seeds/001, alpha = 2); triplet: Schroff et al. 2015,
    arXiv:1503.03832, with attacked positives as the report proposes. Runs train()'s batch_loss hook.
    Args: model, x_train, y_train: classifier, float images in [0, 1], int labels. layer: dotted name
        in model.named_modules() whose output is the latent vector, or "penultimate" (default:
        the input of the last nn.Linear). margin > 0 (alpha); weight >= 0 of
        the latent loss; pairs "batch"/"random". triplet: triplet loss instead; attack: None (same-class
        positives), "fgsm" or "pgd" (positive = the anchor attacked under ``threat``, ``attack_steps``).
        epochs ... log, checkpoint, resume: as in ``sparring.train.train`` (Adam, no weight decay by default).
    Returns: (the model, in eval mode; train()'s history, each record with "latent_loss").
        >>> model, history = contrastive_training(tiny, x, y, layer="5", margin=2.0, epochs=5)
        >>> defended = LatentNN(model, "5", x, y, per_class=5)
    """
    module = _layer(model, layer)
    margin, weight = _positive(margin, "margin", float), _positive(weight, "weight", float, zero_ok=True)
    contrastive_loss(torch.zeros(2, 1), torch.zeros(2), pairs=pairs)  # validates pairs
    if attack not in (None, "fgsm", "pgd"):
        raise InputError(f"expected attack to be None, 'fgsm' or 'pgd', got {attack!r}")
    if attack is not None and (not triplet or not isinstance(threat, ThreatModel)):
        raise ConfigError(f"expected triplet=True and a ThreatModel with attack={attack!r}, "
                          f"got triplet={triplet!r}, threat={type(threat).__name__}")
    attack_steps, totals = _positive(attack_steps, "attack_steps"), [0.0, 0]  # latent loss sum, samples

    def batch_loss(net: nn.Module, x: Tensor, y: Tensor, index: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        (logits, z), positive = _forward(net, module, x), None
        if attack is not None:  # crafted in eval mode with frozen parameters, as in adversarial training
            gens = SampleGenerators((seed * _GOLDEN + epoch * _M1) % (2**63 - 1), index.tolist())
            with _frozen(net):
                x_adv = fgsm(net, x, y, threat=threat) if attack == "fgsm" else pgd(  # type: ignore[arg-type]
                    net, x, y, threat=threat, steps=attack_steps, early_stop=False, generator=gens)  # type: ignore
            positive = _forward(net, module, x_adv.detach())[1]
        latent = (triplet_loss(z, y, margin=margin, positive=positive) if triplet
                  else contrastive_loss(z, y, margin=margin, pairs=pairs))  # fmt: skip
        totals[0], totals[1] = totals[0] + latent.detach() * len(y), totals[1] + len(y)
        return F.cross_entropy(logits, y) + weight * latent, logits

    def epoch_end(epoch: int, record: dict[str, Any]) -> bool:
        record["latent_loss"], totals[:] = float(totals[0]) / max(totals[1], 1), [0.0, 0]
        return False

    return model, train(model, x_train, y_train, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                        lr=lr, momentum=momentum, weight_decay=weight_decay, schedule=schedule, seed=seed,
                        device=device, progress=progress, log=log, batch_loss=batch_loss, epoch_end=epoch_end,
                        checkpoint=checkpoint, resume=resume)


def latent_features(model: nn.Module, layer: str, x: Tensor, *, batch_size: int = 512) -> Tensor:
    """Flattened outputs (N, D) of ``layer`` (the latent space of Hadsell et al. 2006 / seeds/001) in eval
    mode without gradients, on the CPU; the model's mode is restored.
        >>> z = latent_features(model, "5", x_test)
        >>> z.shape  # (N, 32) for tiny_cnn
    """
    module, batch_size, was = _layer(model, layer), _positive(batch_size, "batch_size"), model.training
    dev = next(model.parameters(), torch.zeros(())).device
    model.eval()
    try:
        with torch.inference_mode():
            parts = [_forward(model, module, x[i : i + batch_size].to(dev, _dtype(model)))[1].cpu()
                     for i in range(0, len(x), batch_size)]  # fmt: skip
    finally:
        model.train(was)
    return torch.cat(parts)


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
        inner = self.model.for_attack() if hasattr(self.model, "for_attack") else self.model
        if inner is self.model:
            return self
        clone = copy.copy(self)
        clone._modules = {**self._modules, "model": inner}
        return clone

    def __init__(self, model: nn.Module, layer: str, x_ref: Tensor, y_ref: Tensor, *, per_class: int = 5,
                 seed: int = 0) -> None:
        super().__init__()
        x_ref, y_ref = _check_data(x_ref, y_ref, "reference")
        _layer(model, layer)  # validates the name
        counts = torch.bincount(y_ref)
        if isinstance(per_class, bool) or not isinstance(per_class, int) or not 1 <= per_class <= int(counts.min()):
            raise InputError(f"expected per_class between 1 and the smallest class count of the reference set "
                             f"({int(counts.min())}, class {int(counts.argmin())}), got {per_class!r}")
        gen = torch.Generator().manual_seed(_positive(seed, "seed", zero_ok=True))
        picks = [torch.nonzero(y_ref == k).flatten()[torch.randperm(int(counts[k]), generator=gen)[:per_class]]
                 for k in range(len(counts))]  # fmt: skip
        self.model, self.layer, self.per_class, self.index = model, layer, per_class, torch.cat(picks)
        self.register_buffer("ref_images", x_ref[self.index].clone())
        self.refresh()

    def refresh(self) -> None:
        """Re-embed the reference images with the model as it is now."""
        self.register_buffer("references", latent_features(self.model, self.layer, self.ref_images))

    def forward(self, x: Tensor) -> Tensor:
        z = _forward(self.model, _layer(self.model, self.layer), x)[1]
        return -_distances(z, self.references.to(z.device, z.dtype)).view(len(z), -1, self.per_class).amin(dim=2)

    def extra_repr(self) -> str:
        return f"layer={self.layer!r}, per_class={self.per_class}, classes={len(self.index) // self.per_class}"


def latent_view(model: nn.Module, layer: str, x: Tensor, y: Tensor, *, method: str = "pca",
                x_adv: Tensor | None = None, seed: int = 0) -> dict[str, Any]:
    """2-D coordinates of ``layer``'s features: {"method", "layer", "clean", "adversarial", "labels"}.

    The report's Figure 8 (seeds/001). method "pca" (fit on the clean points, attacked ones projected on
    the same axes) or "tsne" (fit on both), random_state=seed. numpy: clean (N, 2), adversarial or None.
        >>> before, after = latent_view(plain, "5", x, y), latent_view(model, "5", x, y, x_adv=x_adv)
        >>> plot_latent([before, after], "latent.png")
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x, y = _check_data(x, y, "view")
    if method not in ("pca", "tsne"):
        raise InputError(f"expected method to be 'pca' or 'tsne', got {method!r}")
    if x_adv is not None and tuple(torch.as_tensor(x_adv).shape) != tuple(x.shape):
        raise InputError(f"expected x_adv of shape {tuple(x.shape)}, got {tuple(torch.as_tensor(x_adv).shape)}")
    z = latent_features(model, layer, x).double()
    if len(z) < 3 or z.shape[1] < 2:
        raise InputError(f"expected at least 3 images and 2 latent dimensions, got {len(z)} and {z.shape[1]}")
    z_adv = None if x_adv is None else latent_features(model, layer, torch.as_tensor(x_adv)).double()
    both = (z if z_adv is None else torch.cat([z, z_adv])).numpy()
    if method == "pca":
        coords = PCA(n_components=2, random_state=seed).fit(z.numpy()).transform(both)
    else:
        coords = TSNE(2, perplexity=min(30.0, (len(both) - 1) / 3), init="pca", random_state=seed).fit_transform(both)
    adv = coords[len(z) :] if x_adv is not None else None
    return {"method": method, "layer": layer, "clean": coords[: len(z)], "adversarial": adv, "labels": y.numpy()}


def plot_latent(view: dict[str, Any] | Sequence[dict[str, Any]], path: str | Path, *,
                titles: Sequence[str] | None = None) -> Path:
    """Scatter plots of latent_view results (seeds/001, Fig. 8), one panel each, to a PNG written atomically.

    Clean points are dots, attacked points crosses, both coloured by the true label.
        >>> plot_latent([latent_view(plain, "5", x, y), latent_view(model, "5", x, y)], "fig8.png",
        ...             titles=["cross-entropy", "contrastive"])
    """
    from ..report.plots import latent_scatter

    views = [view] if isinstance(view, dict) else list(view)
    if not views or not all(isinstance(v, dict) and {"clean", "labels"} <= set(v) for v in views):
        raise InputError("expected a latent_view dict or a non-empty list of them, got " + type(view).__name__)
    path = Path(path)
    names = [titles[i] if titles is not None and i < len(titles) else f"{v.get('method', '')} {v.get('layer', '')}"
             for i, v in enumerate(views)]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(latent_scatter(views, names))
    os.replace(tmp, path)
    return path
