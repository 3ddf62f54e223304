"""Papernot et al.'s practical black-box attack: a substitute trained on oracle labels only.

Jacobian-based dataset augmentation grows a synthetic training set around a small seed set;
the target (the oracle) answers labels only and every answer counts against a query budget.
Any registered white-box attack then crafts on the substitute (transfer to the oracle).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..config import TrainSettings
from ..errors import InputError
from ..models import build_model
from ..oracle import LabelOracle
from ..rng import Generators, uniform
from ..threat import ThreatModel
from ..training import evaluate_accuracy, train
from .checks import check_batch, check_labels, check_positive_int
from .registry import ATTACKS
from .transfer import craft_on


class _ToUnit(nn.Module):
    """Maps inputs from bounds (lo, hi) to [0, 1], so the training loop sees unit images."""

    def __init__(self, lo: float, hi: float) -> None:
        super().__init__()
        self.lo, self.span = lo, hi - lo

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.lo) / self.span


def build_substitute(arch: str, shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """"mlp" (Papernot's 2 x 200 dense substitute), "cnn" (2 conv + 2 dense) or a MODELS name."""
    c, h, w = shape
    if arch == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(),
                             nn.Linear(200, num_classes))
    if arch == "cnn":
        return nn.Sequential(nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
                             nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
                             nn.Flatten(), nn.Linear(64 * ((h + 3) // 4) * ((w + 3) // 4), 200), nn.ReLU(),
                             nn.Linear(200, num_classes))
    return build_model(arch, num_classes=num_classes, in_channels=c)


def jacobian_augment(substitute: nn.Module, x: Tensor, labels: Tensor, step: float,
                     bounds: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """x + step * sign(d substitute_logit[label] / dx), clipped into bounds (one new point per x)."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        picked = substitute(xr).gather(1, labels[:, None].to(x.device)).sum()
        (grad,) = torch.autograd.grad(picked, xr)
    return (x.detach() + step * grad.sign()).clamp(*bounds)


def seed_from(generator: Generators, like: Tensor) -> int:
    """An integer seed drawn from the attack's generator (one draw per sample stream)."""
    return int(float(uniform(generator, like.new_empty(like.shape[0], 1)).flatten()[0]) * (2**31 - 1))


#: How each round trains the substitute (Papernot et al.: Adam, warm start from the last round).
SUBSTITUTE_TRAINING = TrainSettings(epochs=10, batch_size=32, optimizer="adam", lr=1e-3, weight_decay=0.0,
                                    schedule="none")


def train_substitute(oracle: LabelOracle, seed_x: Tensor, *, arch: str = "cnn", rounds: int = 7,
                     augment_step: float = 0.2, sign_flip_every: int = 3, reservoir: int | None = None,
                     settings: TrainSettings = SUBSTITUTE_TRAINING, query_budget: int | None = None,
                     bounds: tuple[float, float] = (0.0, 1.0), x_eval: Tensor | None = None,
                     y_eval: Tensor | None = None, seed: int = 0) -> tuple[nn.Module, dict[str, Any]]:
    """Train a substitute on oracle labels with Jacobian-based dataset augmentation.

    Papernot et al., "Practical black-box attacks against machine learning", arXiv:1602.02697.
    Round r trains (``settings``, by default SUBSTITUTE_TRAINING; warm start) on the set so far, then adds
    one point per chosen
    point x: x + augment_step * (-1)^floor(r / sign_flip_every) * sign(grad of the substitute's
    logit of x's oracle label), labelled by the oracle (a negative augment_step starts by
    stepping toward the decision boundaries, as the reference code does). All points are chosen (the set doubles)
    or, with reservoir=k, k random ones; the last augmentation is cut to the query budget
    (min of query_budget and the oracle's remaining budget). Returns (substitute, info) with
    info: queries, sizes (set size per round), accuracy (per round, when x_eval/y_eval given).
        >>> sub, info = train_substitute(LabelOracle(target), x_test[:150], query_budget=6400)
        >>> x_adv = fgsm(sub, x, y, threat=ThreatModel(Norm.LINF, 0.3))
    """
    rounds = check_positive_int("rounds", rounds)
    sign_flip_every = check_positive_int("sign_flip_every", sign_flip_every)
    if isinstance(augment_step, bool) or not isinstance(augment_step, int | float) \
            or not 0 < abs(augment_step) < math.inf:
        raise InputError(f"augment_step must be a finite nonzero number, got {augment_step!r}")
    if reservoir is not None:
        check_positive_int("reservoir", reservoir)
    if not isinstance(seed_x, Tensor) or seed_x.dim() != 4 or len(seed_x) < 2:
        got = getattr(seed_x, "shape", seed_x)
        raise InputError(f"expected a seed set of at least 2 images (N, C, H, W), got {got}")
    budgets = [b for b in (query_budget, oracle.remaining) if b is not None]
    budget = min(budgets) if budgets else None
    if budget is not None and budget < len(seed_x):
        raise InputError(f"query budget must cover the {len(seed_x)} seed images, got {budget}")
    start, lo, hi = oracle.queries, float(bounds[0]), float(bounds[1])
    data_x, data_y = seed_x.detach(), oracle(seed_x)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_substitute(arch, tuple(seed_x.shape[1:]), int(oracle.num_classes or 2))
    net = net.to(device=seed_x.device, dtype=seed_x.dtype)
    sub = net if (lo, hi) == (0.0, 1.0) else nn.Sequential(_ToUnit(lo, hi), net)
    picker = torch.Generator().manual_seed(seed)
    sizes: list[int] = []
    accuracy: list[float] = []
    for r in range(rounds):
        train(net, (data_x - lo) / (hi - lo), data_y, settings, seed=seed + r, device=seed_x.device)
        sizes.append(len(data_x))
        if x_eval is not None and y_eval is not None:
            accuracy.append(evaluate_accuracy(sub, x_eval, y_eval, device=seed_x.device))
        left = None if budget is None else budget - (oracle.queries - start)
        if r == rounds - 1 or left == 0:
            continue
        order = torch.randperm(len(data_x), generator=picker).to(data_x.device)
        count = min(len(data_x), reservoir or len(data_x), len(data_x) if left is None else left)
        pick = order[:count] if count < len(data_x) else torch.arange(len(data_x), device=data_x.device)
        step = augment_step * (-1) ** (r // sign_flip_every)
        new = jacobian_augment(sub, data_x[pick], data_y[pick], step, (lo, hi))
        data_x, data_y = torch.cat([data_x, new]), torch.cat([data_y, oracle(new)])
    return sub.eval(), {"queries": oracle.queries - start, "sizes": sizes, "accuracy": accuracy}


@ATTACKS.register("substitute", kind="blackbox", norms=("linf", "l2", "l1"), needs_grad=False, targeted="optional",
                  paper="Papernot et al. 2017, arXiv:1602.02697",
                  test_params={"seed_size": 8, "queries": 40, "rounds": 2, "epochs": 2, "arch": "mlp"},
                  batch_dependent=True)
def substitute(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel, seed_size: int = 150,
               queries: int = 6400, rounds: int = 7, augment_step: float = 0.2, sign_flip_every: int = 3,
               reservoir: int | None = None, epochs: int = 10, arch: str = "cnn", craft: str = "fgsm",
               craft_params: Mapping[str, Any] | None = None, targeted: bool = False,
               generator: Generators = None) -> Tensor:
    """Black-box attack through a substitute trained on the target's labels only.

    Papernot et al., "Practical black-box attacks against machine learning", arXiv:1602.02697.
    The first seed_size images of x (all of x if fewer) seed the substitute, labelled by the
    target through a LabelOracle with a hard budget of `queries` label queries per call; see
    train_substitute for rounds, augment_step, sign_flip_every, reservoir, epochs and arch.
    The white-box attack `craft` (with craft_params) then runs on the substitute for all of x.
    Defaults: 7 rounds (150 seeds double to 4,800, then the last round spends the rest of the
    6,400 queries), augment_step 0.2 and, for the default craft "fgsm", the logit loss: the
    substitute learns hard labels, its softmax saturates and cross-entropy gradients vanish. On
    the clean MNIST LeNet this transfers 72-84% at eps 0.3 over 4 seeds (paper's lambda 0.1 and
    CE: 33-54%); benchmarks/substitute_mnist.py.
        >>> x_adv = substitute(target, x, y, threat=ThreatModel(Norm.LINF, 0.3), generator=g)
        >>> fooled = target(x_adv).argmax(1) != y
    """
    check_batch(x, y, threat)
    seed_size = check_positive_int("seed_size", seed_size, minimum=2)
    oracle = LabelOracle(model, budget=check_positive_int("queries", queries))
    net, _ = train_substitute(oracle, x[:seed_size], arch=arch, rounds=rounds, augment_step=augment_step,
                              sign_flip_every=sign_flip_every, reservoir=reservoir,
                              settings=SUBSTITUTE_TRAINING.replace(epochs=check_positive_int("epochs", epochs)),
                              bounds=threat.bounds, seed=seed_from(generator, x))
    check_labels(y, int(oracle.num_classes or 0))
    if craft_params is None and craft == "fgsm":
        craft_params = {"loss": "logit"}
    return craft_on(net, x, y, threat=threat, craft=craft, craft_params=craft_params, targeted=targeted,
                    generator=generator)


__all__ = ["build_substitute", "jacobian_augment", "seed_from", "substitute", "train_substitute"]
