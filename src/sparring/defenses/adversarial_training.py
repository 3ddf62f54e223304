"""Adversarial training recipes (FGSM, FGSM-RS, PGD, TRADES, ensemble) on the one training loop.

Each recipe is `sparring.train.train` with two hooks: `batch_loss` crafts adversarial examples for
the non-clean part of each batch (sources in eval mode, parameters frozen) and returns the loss of
the update (train mode); `epoch_end` measures PGD robust accuracy on a fixed held-out batch and
guards against catastrophic overfitting. Randomness: per-sample streams keyed by (seed, epoch, index).
The recipe's state across epochs (batch count, best robust accuracy and its weights) goes into train()'s
training-state file, so a run resumed with ``checkpoint`` and ``resume=True`` ends as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks import fgsm, pgd
from ..attacks._loop import gradient_loop
from ..errors import ConfigError, InputError
from ..registry import Registry
from ..rng import SampleGenerators, normal
from ..threat import Norm, ThreatModel
from ..train import _check_data, _device, _dtype, train
from .registry import DEFENSES

__all__ = ["METHODS", "adversarial_training", "ensemble_adversarial_training", "fgsm_adversarial_training",
           "fgsm_rs_adversarial_training", "pgd_adversarial_training", "trades_training"]

History = list[dict[str, Any]]
_GOLDEN, _M1 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9


@contextmanager
def _frozen(*models: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients while crafting; both restored afterwards."""
    modes, params = [m.training for m in models], [p for m in models for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    try:
        for m in models:
            m.eval()
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


class _KLView(nn.Module):
    """Logits [0, KL(p || f(x'))]: CE on label 0 is softplus(KL), increasing in KL with a positive
    per-sample gradient scale, so the loop's sign / normalized steps ascend TRADES' inner KL."""

    def __init__(self, model: nn.Module, p_clean: Tensor) -> None:
        super().__init__()
        self.model, self.p_clean = model, p_clean

    def forward(self, x: Tensor) -> Tensor:
        kl = F.kl_div(F.log_softmax(self.model(x), dim=1), self.p_clean, reduction="none").sum(dim=1)
        return torch.stack([torch.zeros_like(kl), kl], dim=1)


def _fgsm(m: nn.Module, x: Tensor, y: Tensor, g: SampleGenerators, t: ThreatModel, steps: int, size: float) -> Tensor:
    return fgsm(m, x, y, threat=t)


def _pgd(m: nn.Module, x: Tensor, y: Tensor, g: SampleGenerators, t: ThreatModel, steps: int, size: float) -> Tensor:
    return pgd(m, x, y, threat=t, steps=steps, step_size=size, random_start=True, early_stop=False, generator=g)


def _trades(m: nn.Module, x: Tensor, y: Tensor, g: SampleGenerators, t: ThreatModel, steps: int, size: float) -> Tensor:
    with torch.no_grad():
        p_clean = F.softmax(m(x), dim=1)
    start = t.clamp(x + 0.001 * normal(g, x))
    return gradient_loop(_KLView(m, p_clean), x, torch.zeros_like(y), threat=t, steps=steps, step_size=size,
                         x_init=start)


#: method -> craft(source, x, y, generators, threat, steps, step_size); meta: defense, paper, params (defaults)
METHODS: Registry[Callable[..., Tensor]] = Registry("adversarial training method")
METHODS.register("fgsm", defense="fgsm-at", paper="Goodfellow et al. 2015, arXiv:1412.6572",
                 params={"mix": 0.5, "schedule": "cosine"})(_fgsm)
METHODS.register("fgsm-rs", defense="fgsm-rs-at", paper="Wong et al. 2020, arXiv:2001.03994",
                 params={"mix": 0.0, "schedule": "onecycle"})(_pgd)  # one step from a uniform random start
METHODS.register("pgd", defense="pgd-at", paper="Madry et al. 2018, arXiv:1706.06083",
                 params={"mix": 0.0, "schedule": "cosine", "steps": 10})(_pgd)
METHODS.register("trades", defense="trades", paper="Zhang et al. 2019, arXiv:1901.08573",
                 params={"mix": 0.0, "schedule": "cosine", "steps": 10, "trades_beta": 6.0})(_trades)
METHODS.register("ensemble", defense="ensemble-at", paper="Tramer et al. 2018, arXiv:1705.07204",
                 params={"mix": 0.5, "schedule": "cosine"})(_fgsm)


def _robust_accuracy(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel, steps: int,
                     generator: SampleGenerators) -> float:
    """PGD robust accuracy (random start, `steps` steps) of the model in eval mode on a fixed batch."""
    with _frozen(model):
        x_adv = pgd(model, x, y, threat=threat, steps=steps, generator=generator)
        with torch.no_grad():
            return float((model(x_adv).argmax(dim=1) == y).float().mean())


class _Recipe:
    """The two hooks handed to `train`, with the state they share (counts, best checkpoint)."""

    def __init__(self, method: str, model: nn.Module, surrogates: tuple[nn.Module, ...], threat: ThreatModel,
                 steps: int, step_size: float, mix: float, beta: float, seed: int,
                 check: tuple[Tensor, Tensor] | None, check_steps: int, drop: float,
                 log: Callable[[str], Any] | None, warmup: int = 0) -> None:
        self.method, self.craft, self.model, self.sources = method, METHODS.get(method), model, (model, *surrogates)
        self.threat, self.steps, self.size, self.mix, self.beta, self.seed = threat, steps, step_size, mix, beta, seed
        self.check, self.check_steps, self.drop, self.log, self.warmup = check, check_steps, drop, log, warmup
        self.batches, self.clean, self.adversarial = 0, 0, 0
        self.best: tuple[float, int, dict[str, Tensor]] | None = None

    def _settings(self) -> dict[str, Any]:
        return {"method": self.method, "norm": self.threat.norm.value, "eps": self.threat.eps, "steps": self.steps,
                "step_size": self.size, "mix": self.mix, "trades_beta": self.beta, "eps_warmup": self.warmup,
                "overfit_drop": self.drop, "check_steps": self.check_steps, "surrogates": len(self.sources) - 1,
                "check_size": None if self.check is None else len(self.check[1])}  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """The state kept across epochs, for train()'s training-state file (tensors and plain values)."""
        best = None if self.best is None else {"accuracy": self.best[0], "epoch": self.best[1], "weights": self.best[2]}
        return {"settings": self._settings(), "batches": self.batches, "clean": self.clean,
                "adversarial": self.adversarial, "best": best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state_dict()'s output; ConfigError when the recipe's settings differ from the saved ones."""
        from ..checkpoint import mismatch

        diff = mismatch(state.get("settings") or {}, self._settings())
        if diff is not None:
            raise ConfigError(f"adversarial training's {diff}")
        self.batches, self.clean, self.adversarial = int(state["batches"]), int(state["clean"]), int(state["adversarial"])
        best = state["best"]
        self.best = None if best is None else (float(best["accuracy"]), int(best["epoch"]), dict(best["weights"]))

    def batch_loss(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        k = int(self.mix * len(y))  # the first k rows of the (shuffled) batch stay clean
        gens = SampleGenerators((self.seed * _GOLDEN + epoch * _M1) % (2**63 - 1), index[k:].tolist())
        # examples are crafted on the bare model (under torchrun `model` is its DistributedDataParallel wrapper,
        # which only the loss goes through, so the ranks' gradients are averaged)
        source = self.sources[self.batches % len(self.sources)] if self.method == "ensemble" else self.model
        scale = min(1.0, epoch / self.warmup) if self.warmup else 1.0
        threat = ThreatModel(self.threat.norm, self.threat.eps * scale, self.threat.bounds) if scale < 1 else self.threat
        with _frozen(*self.sources):
            x_adv = self.craft(source, x[k:], y[k:], gens, threat, self.steps, self.size * scale).detach()
        self.batches, self.clean, self.adversarial = self.batches + 1, self.clean + k, self.adversarial + len(y) - k
        if self.method == "trades":
            logits = model(x)
            robust = F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean")
            return F.cross_entropy(logits, y) + self.beta * robust, logits
        logits = model(torch.cat([x[:k], x_adv]))
        return F.cross_entropy(logits, y), logits

    def epoch_end(self, epoch: int, record: dict[str, Any]) -> bool:
        record["adversarial_fraction"] = self.adversarial / max(self.clean + self.adversarial, 1)
        self.clean = self.adversarial = 0
        if self.check is None or epoch < self.warmup:
            return False
        x, y = self.check
        acc = _robust_accuracy(self.model, x, y, threat=self.threat, steps=self.check_steps,
                               generator=SampleGenerators(self.seed ^ 0x5DEECE66D, range(len(y))))
        record["robust_accuracy"] = acc
        if self.best is None or acc >= self.best[0]:
            self.best = (acc, epoch, {k: v.detach().clone() for k, v in self.model.state_dict().items()})
            return False
        best, best_epoch, state = self.best
        if best - acc <= self.drop:
            return False
        self.model.load_state_dict(state)
        record.update(overfit=True, restored_epoch=best_epoch)
        if self.log is not None:
            self.log(f"epoch {epoch}: PGD robust accuracy fell from {100 * best:.2f}% (epoch {best_epoch}) to "
                     f"{100 * acc:.2f}%: catastrophic overfitting; restored epoch {best_epoch} weights and stopped")
        return True


def _number(value: Any, what: str, low: float, high: float = math.inf, *, open_low: bool = False,
            open_high: bool = False, integer: bool = False) -> Any:
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (low < value if open_low else low <= value) or not (value < high if open_high else value <= high):
        kind, left, right = "an integer" if integer else "a number", "(["[not open_low], ")]"[not open_high]
        raise InputError(f"expected {what} to be {kind} in {left}{low:g}, {high:g}{right}, got {value!r}")
    return value


def adversarial_training(
    model: nn.Module, x_train: Tensor, y_train: Tensor, *, method: str = "pgd", threat: ThreatModel,
    epochs: int = 10, batch_size: int = 128, optimizer: str = "sgd", lr: float = 0.1, momentum: float = 0.9,
    weight_decay: float = 5e-4, schedule: str | None = None, augment: str = "none", pad: int = 4,
    steps: int | None = None, step_size: float | None = None, mix: float | None = None,
    surrogates: Sequence[nn.Module] = (), trades_beta: float = 6.0, overfit_check: bool = True,
    check_steps: int = 10, check_size: int = 256, overfit_drop: float = 0.2, eps_warmup: int = 0, seed: int = 0,
    device: str | torch.device = "cpu", progress: bool = True, checkpoint: str | Path | None = None,
    log: Callable[[str], Any] | None = None, x_val: Tensor | None = None, y_val: Tensor | None = None,
    resume: bool = False,
) -> tuple[nn.Module, History]:
    """Train `model` on adversarial (and, with mix > 0, clean) examples with `sparring.train.train`.

    "fgsm": FGSM at eps (Goodfellow et al. 2015, arXiv:1412.6572). "fgsm-rs": one step of 1.25 eps from
    a uniform random start, onecycle (Wong et al. 2020, arXiv:2001.03994). "pgd": random start, `steps`
    steps (Madry et al. 2018, arXiv:1706.06083). "trades": CE(f(x), y) + trades_beta * KL(f(x) || f(x')),
    x' by PGD on the KL from x + 0.001 N(0, 1) (Zhang et al. 2019, arXiv:1901.08573). "ensemble": FGSM
    whose source rotates per batch over (model, *surrogates) (Tramer et al. 2018, arXiv:1705.07204; the
    reference code draws it at random). Crafting in eval mode, parameters frozen; update in train mode.

    Args: threat, finite eps > 0 in l1/l2/linf; steps, step_size for pgd/trades (10, 2.5 eps / steps) and
        step_size for fgsm-rs (1.25 eps); mix, the clean fraction of each batch in [0, 1) (0.5 for fgsm and
        ensemble, else 0); surrogates, frozen pre-trained models for "ensemble" (moved to device);
        overfit_check: after each epoch, PGD with check_steps steps on x_val[:check_size] (else the last
        check_size training images); a fall of more than overfit_drop below the best epoch restores the best
        weights and stops. eps_warmup: the crafting eps (and step size) grows linearly over the first
        eps_warmup epochs (eps * epoch / eps_warmup), which keeps PGD training at MNIST's eps 0.3 from
        collapsing to a constant prediction early on; the guard only runs once the full eps is reached.
        schedule defaults per method; checkpoint / resume: as in `sparring.train.train`, the recipe's state
        (batch count, best robust accuracy and weights) included; the rest as in `sparring.train.train`.
    Returns: (model, history): train's records plus adversarial_fraction, robust_accuracy (with the
        check) and, on a collapse, overfit=True and restored_epoch.
        >>> model, history = adversarial_training(model, x, y, method="pgd",
        ...                                       threat=ThreatModel(Norm.LINF, 0.1), epochs=5, lr=1e-3)
    """
    meta = METHODS.meta(method)
    params = meta["params"]
    if not isinstance(threat, ThreatModel):
        raise InputError(f"expected threat to be a ThreatModel, got {type(threat).__name__}")
    if threat.norm is Norm.L0 or not 0 < threat.eps < math.inf:
        raise InputError(f"expected a threat with finite eps > 0 in l1, l2 or linf, got eps={threat.eps} "
                         f"in {threat.norm.value}")
    if "steps" not in params and steps not in (None, 1):
        raise ConfigError(f"method {method!r} takes one step: expected steps=None or 1, got {steps!r}")
    steps = _number(params.get("steps", 1) if steps is None else steps, "steps", 1, integer=True)
    if step_size is not None and method in ("fgsm", "ensemble"):
        raise ConfigError(f"method {method!r} steps the full eps: expected step_size=None, got {step_size!r}")
    default_size = 1.25 * threat.eps if method == "fgsm-rs" else 2.5 * threat.eps / steps
    step_size = default_size if step_size is None else float(_number(step_size, "step_size", 0, open_low=True))
    mix = float(_number(params["mix"] if mix is None else mix, "mix", 0, 1, open_high=True))
    if method == "trades" and mix > 0:
        raise ConfigError(f"method 'trades' already has a clean term: expected mix=0, got {mix}")
    beta = float(_number(trades_beta, "trades_beta", 0))
    surrogates = tuple(surrogates)
    if method == "ensemble" and not surrogates:
        raise ConfigError("method 'ensemble' needs surrogates: expected at least one pre-trained model, got none")
    if method != "ensemble" and surrogates:
        raise ConfigError(f"surrogates are used by method 'ensemble' only, got {len(surrogates)} with {method!r}")
    if not all(isinstance(s, nn.Module) for s in surrogates):
        raise InputError(f"expected surrogates to be nn.Modules, got {[type(s).__name__ for s in surrogates]}")
    check_steps = _number(check_steps, "check_steps", 1, integer=True)
    check_size = _number(check_size, "check_size", 1, integer=True)
    drop = float(_number(overfit_drop, "overfit_drop", 0, 1))
    warmup = _number(eps_warmup, "eps_warmup", 0, integer=True)
    x_train, y_train = _check_data(x_train, y_train, "training")
    dev = _device(device)
    for s in surrogates:
        with _frozen(s.to(dev)), torch.no_grad():
            out = s(x_train[:2].to(dev, _dtype(s)))
        if out.dim() != 2 or out.shape[1] <= int(y_train.max()):
            raise InputError(f"expected surrogate logits (B, K > {int(y_train.max())}), got {tuple(out.shape)}")
    check = None
    if overfit_check and x_val is not None and y_val is not None:
        x_chk, y_chk = (t[:check_size] for t in _check_data(x_val, y_val, "validation"))
        check = (x_chk.to(dev, _dtype(model)), y_chk.to(dev))
    elif overfit_check:
        check = (x_train[-check_size:].to(dev, _dtype(model)), y_train[-check_size:].to(dev))
    recipe = _Recipe(method, model, surrogates, threat, steps, step_size, mix, beta, seed, check, check_steps, drop,
                     log, warmup)
    history = train(model, x_train, y_train, x_val=x_val, y_val=y_val, epochs=epochs, batch_size=batch_size,
                    optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
                    schedule=params["schedule"] if schedule is None else schedule, augment=augment, pad=pad,
                    seed=seed, device=device, progress=progress, checkpoint=checkpoint, log=log,
                    batch_loss=recipe.batch_loss, epoch_end=recipe.epoch_end, resume=resume, hook_state=recipe)
    return model, history


def _recipe(method: str, name: str, doc: str) -> Callable[..., tuple[nn.Module, History]]:
    """`adversarial_training` with method fixed, documented and registered in DEFENSES."""

    def run(model: nn.Module, x_train: Tensor, y_train: Tensor, **kwargs: Any) -> tuple[nn.Module, History]:
        return adversarial_training(model, x_train, y_train, method=method, **kwargs)

    meta = METHODS.meta(method)
    extra = ", surrogates=[net_a, net_b]" if method == "ensemble" else ""
    run.__name__ = run.__qualname__ = name
    run.__doc__ = (f"{doc} ({meta['paper']}).\n\n    Args: as `adversarial_training`, with method={method!r}.\n"
                   f"        >>> model, history = {name}(model, x, y,\n"
                   f"        ...     threat=ThreatModel(Norm.LINF, 0.1), epochs=5{extra})\n")
    DEFENSES.register(meta["defense"], kind="training", differentiable=True, random=False, paper=meta["paper"],
                      params=dict(meta["params"]), method=method, description=doc)(run)
    return run


fgsm_adversarial_training = _recipe("fgsm", "fgsm_adversarial_training",
                                    "FGSM adversarial training: FGSM at eps, half of each batch clean by default")
fgsm_rs_adversarial_training = _recipe("fgsm-rs", "fgsm_rs_adversarial_training",
                                       "Fast adversarial training: FGSM from a uniform random start, step 1.25 eps, "
                                       "onecycle schedule, catastrophic-overfitting guard")
pgd_adversarial_training = _recipe("pgd", "pgd_adversarial_training",
                                   "PGD adversarial training: random start, `steps` steps, all-adversarial batches")
trades_training = _recipe("trades", "trades_training",
                          "TRADES: CE(f(x), y) + trades_beta * KL(f(x) || f(x')), x' maximizing the KL by PGD")
ensemble_adversarial_training = _recipe("ensemble", "ensemble_adversarial_training",
                                        "Ensemble adversarial training: FGSM examples crafted on the model and on "
                                        "frozen pre-trained surrogates in turn, half of each batch clean")
