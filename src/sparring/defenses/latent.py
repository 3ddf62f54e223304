"""A classifier's latent space: the vector a named layer gives (or the input of its last nn.Linear), its
features over a dataset, and a 2-D view of them (the student report's Figure 8, seeds/001).

Used by contrastive training and its 1-NN (sparring.defenses.contrastive) and by the run's latent record
(sparring.experiment), for any classifier: nothing here is specific to a defense.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError, UnknownNameError
from ..models import Normalized
from ..training import check_data
from ..util import check_number, model_device, model_dtype

__all__ = ["PENULTIMATE", "latent_features", "latent_forward", "latent_hook", "latent_layer", "latent_view"]


#: layer name meaning "the input of the model's last nn.Linear": the penultimate features of any classifier.
PENULTIMATE = "penultimate"


def latent_hook(model: nn.Module, layer: Any) -> tuple[nn.Module, bool]:
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


def latent_forward(model: nn.Module, hook: tuple[nn.Module, bool], x: Tensor) -> tuple[Tensor, Tensor]:
    """(logits, flattened latent vector) from one forward pass; the last call wins if it runs twice.
    Cloned in the hook, so a following in-place op (ReLU(inplace=True)) cannot alter it."""
    seen: list[Any] = []
    module, on_input = hook
    if on_input:
        handle = module.register_forward_pre_hook(
            lambda m, i: seen.append(i[0].clone() if i and isinstance(i[0], Tensor) else i))
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


def latent_features(model: nn.Module, layer: str, x: Tensor, *, batch_size: int = 512) -> Tensor:
    """Flattened outputs (N, D) of ``layer`` (the latent space of Hadsell et al. 2006 / seeds/001) in eval
    mode without gradients, on the CPU; the model's mode is restored.
        >>> z = latent_features(model, "5", x_test)
        >>> z.shape  # (N, 32) for tiny_cnn
    """
    module, was = latent_hook(model, layer), model.training
    batch_size = check_number(batch_size, "batch_size", integer=True, low=1)
    dev = model_device(model)
    model.eval()
    try:
        with torch.inference_mode():
            parts = [latent_forward(model, module, x[i : i + batch_size].to(dev, model_dtype(model)))[1].cpu()
                     for i in range(0, len(x), batch_size)]  # fmt: skip
    finally:
        model.train(was)
    return torch.cat(parts)


def latent_layer(model: nn.Module, layer: str) -> str:
    """A layer named on the network (as in build_model(...).named_modules()) named on a wrapper around it
    (Defended(filters, net) names it "model.<layer>"); "penultimate" stays as it is."""
    prefix = next((name for name, m in model.named_modules() if isinstance(m, Normalized)), "")
    return layer if layer == PENULTIMATE or not prefix else f"{prefix}.{layer}"


def latent_view(model: nn.Module, layer: str, x: Tensor, y: Tensor, *, method: str = "pca",
                x_adv: Tensor | None = None, seed: int = 0) -> dict[str, Any]:
    """2-D coordinates of ``layer``'s features: {"method", "layer", "clean", "adversarial", "labels"}.

    The report's Figure 8 (seeds/001). method "pca" (fit on the clean points, attacked ones projected on
    the same axes) or "tsne" (fit on both), random_state=seed. numpy: clean (N, 2), adversarial or None.
        >>> before, after = latent_view(plain, "5", x, y), latent_view(model, "5", x, y, x_adv=x_adv)
        >>> sparring.report.plot_latent([before, after], "latent.png")
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x, y = check_data(x, y, "view")
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
