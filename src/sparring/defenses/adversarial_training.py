"""Adversarial training recipes (FGSM, FGSM-RS, PGD, TRADES, ensemble) on the one training loop.

Each recipe is `sparring.training.train` with an Objective (``Recipe``): its loss crafts adversarial examples
for the non-clean part of each batch (sources in eval mode, parameters frozen) and returns the loss of the
update (train mode); its epoch end measures PGD robust accuracy on a fixed held-out batch and guards
against catastrophic overfitting. Randomness: per-sample streams keyed by (seed, epoch, index). The
recipe's state across epochs (batch count, best robust accuracy and its weights) goes into train()'s
training-state file, so a run resumed with ``checkpoint`` and ``resume=True`` ends as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks import fgsm, gradient_loop, pgd
from ..config import TrainSettings
from ..errors import ConfigError, InputError
from ..registry import Registry
from ..rng import LOCAL_SALT, SampleGenerators, epoch_key, normal
from ..threat import Norm, ThreatModel
from ..training import Objective, check_data, train
from ..training.checkpoint import mismatch
from ..util import check_device, check_number, frozen, model_dtype
from .base import Context, DefenseSpec, Param, Trained, register

__all__ = ["METHODS", "Recipe", "adversarial_training", "ensemble_adversarial_training", "fgsm_adversarial_training",
           "fgsm_rs_adversarial_training", "pgd_adversarial_training", "trades_training"]

History = list[dict[str, Any]]
log = logging.getLogger(__name__.rpartition(".")[0])


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
    with frozen(model):
        x_adv = pgd(model, x, y, threat=threat, steps=steps, generator=generator)
        with torch.no_grad():
            return float((model(x_adv).argmax(dim=1) == y).float().mean())


class Recipe(Objective):
    """Adversarial training as train()'s objective, with the state its epochs share (counts, best weights)."""

    def __init__(self, method: str, model: nn.Module, surrogates: tuple[nn.Module, ...], threat: ThreatModel,
                 steps: int, step_size: float, mix: float, beta: float, seed: int,
                 check: tuple[Tensor, Tensor] | None, check_steps: int, drop: float, warmup: int = 0) -> None:
        self.method, self.craft, self.model, self.sources = method, METHODS.get(method), model, (model, *surrogates)
        self.threat, self.steps, self.size, self.mix, self.beta, self.seed = threat, steps, step_size, mix, beta, seed
        self.check_set, self.check_steps, self.drop, self.warmup = check, check_steps, drop, warmup
        self.batches, self.clean, self.adversarial = 0, 0, 0
        self.best: tuple[float, int, dict[str, Tensor]] | None = None

    @property
    def name(self) -> str:
        return f"adversarial training ({self.method})"

    def _settings(self) -> dict[str, Any]:
        return {"method": self.method, "norm": self.threat.norm.value, "eps": self.threat.eps, "steps": self.steps,
                "step_size": self.size, "mix": self.mix, "trades_beta": self.beta, "eps_warmup": self.warmup,
                "overfit_drop": self.drop, "check_steps": self.check_steps, "surrogates": len(self.sources) - 1,
                "check_size": None if self.check_set is None else len(self.check_set[1])}

    def state_dict(self) -> dict[str, Any]:
        """The state kept across epochs, for train()'s training-state file (tensors and plain values)."""
        best = None if self.best is None else {"accuracy": self.best[0], "epoch": self.best[1], "weights": self.best[2]}
        return {"settings": self._settings(), "batches": self.batches, "clean": self.clean,
                "adversarial": self.adversarial, "best": best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state_dict()'s output; ConfigError when the recipe's settings differ from the saved ones."""
        diff = mismatch(state.get("settings") or {}, self._settings())
        if diff is not None:
            raise ConfigError(f"adversarial training's {diff}")
        self.batches, self.clean = int(state["batches"]), int(state["clean"])
        self.adversarial = int(state["adversarial"])
        best = state["best"]
        self.best = None if best is None else (float(best["accuracy"]), int(best["epoch"]), dict(best["weights"]))

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, epoch: int) -> tuple[Tensor, Tensor | None]:
        k = int(self.mix * len(y))  # the first k rows of the (shuffled) batch stay clean
        gens = SampleGenerators(epoch_key(self.seed, epoch), index[k:].tolist())
        # examples are crafted on the bare model (under torchrun `model` is its DistributedDataParallel wrapper,
        # which only the loss goes through, so the ranks' gradients are averaged)
        source = self.sources[self.batches % len(self.sources)] if self.method == "ensemble" else self.model
        scale = min(1.0, epoch / self.warmup) if self.warmup else 1.0
        threat = self.threat if scale >= 1 else ThreatModel(self.threat.norm, self.threat.eps * scale,
                                                             self.threat.bounds)
        with frozen(*self.sources):
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
        if self.check_set is None or epoch < self.warmup:
            return False
        x, y = self.check_set
        acc = _robust_accuracy(self.model, x, y, threat=self.threat, steps=self.check_steps,
                               generator=SampleGenerators(self.seed ^ LOCAL_SALT, range(len(y))))
        record["robust_accuracy"] = acc
        if self.best is None or acc >= self.best[0]:
            self.best = (acc, epoch, {k: v.detach().clone() for k, v in self.model.state_dict().items()})
            return False
        best, best_epoch, state = self.best
        if best - acc <= self.drop:
            return False
        self.model.load_state_dict(state)
        record.update(overfit=True, restored_epoch=best_epoch)
        log.info(f"epoch {epoch}: PGD robust accuracy fell from {100 * best:.2f}% (epoch {best_epoch}) to "
                 f"{100 * acc:.2f}%: catastrophic overfitting; restored epoch {best_epoch} weights and stopped")
        return True


def adversarial_training(
    model: nn.Module, x_train: Tensor, y_train: Tensor, *, method: str = "pgd", threat: ThreatModel,
    settings: TrainSettings | None = None, steps: int | None = None, step_size: float | None = None,
    mix: float | None = None, surrogates: Sequence[nn.Module] = (), trades_beta: float = 6.0,
    overfit_check: bool = True, check_steps: int = 10, check_size: int = 256, overfit_drop: float = 0.2,
    eps_warmup: int | None = None, seed: int = 0, device: str | torch.device = "cpu",
    checkpoint: str | Path | None = None, resume: bool = False, x_val: Tensor | None = None,
    y_val: Tensor | None = None, progress: bool = False,
) -> tuple[nn.Module, History]:
    """Train `model` on adversarial (and, with mix > 0, clean) examples with `sparring.training.train`.

    "fgsm": FGSM at eps (Goodfellow et al. 2015, arXiv:1412.6572). "fgsm-rs": one step of 1.25 eps from
    a uniform random start, onecycle (Wong et al. 2020, arXiv:2001.03994). "pgd": random start, `steps`
    steps (Madry et al. 2018, arXiv:1706.06083). "trades": CE(f(x), y) + trades_beta * KL(f(x) || f(x')),
    x' by PGD on the KL from x + 0.001 N(0, 1) (Zhang et al. 2019, arXiv:1901.08573). "ensemble": FGSM
    whose source rotates per batch over (model, *surrogates) (Tramer et al. 2018, arXiv:1705.07204; the
    reference code draws it at random). Crafting in eval mode, parameters frozen; update in train mode.

    Args: threat, finite eps > 0 in l1/l2/linf; settings: the TrainSettings (default TrainSettings() with the
        method's schedule, onecycle for fgsm-rs); steps, step_size for pgd/trades (10, 2.5 eps / steps) and
        step_size for fgsm-rs (1.25 eps); mix, the clean fraction of each batch in [0, 1) (0.5 for fgsm and
        ensemble, else 0); surrogates, frozen pre-trained models for "ensemble" (moved to device);
        overfit_check: after each epoch, PGD with check_steps steps on x_val[:check_size] (else the last
        check_size training images); a fall of more than overfit_drop below the best epoch restores the best
        weights and stops. eps_warmup: the crafting eps (and step size) grows linearly over the first
        eps_warmup epochs (eps * epoch / eps_warmup), which keeps PGD training at MNIST's eps 0.3 from
        collapsing to a constant prediction early on; the guard only runs once the full eps is reached.
        checkpoint / resume: as in `sparring.training.train`, the recipe's state (batch count, best robust
        accuracy and weights) included; seed, device, x_val, y_val, progress as there.
    Returns: (model, history): train's records plus adversarial_fraction, robust_accuracy (with the
        check) and, on a collapse, overfit=True and restored_epoch.
        >>> model, history = adversarial_training(model, x, y, method="pgd", threat=ThreatModel(Norm.LINF, 0.1),
        ...                                       settings=TrainSettings(epochs=5, lr=1e-3))
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
    steps = check_number(params.get("steps", 1) if steps is None else steps, "steps", integer=True, low=1)
    if step_size is not None and method in ("fgsm", "ensemble"):
        raise ConfigError(f"method {method!r} steps the full eps: expected step_size=None, got {step_size!r}")
    default_size = 1.25 * threat.eps if method == "fgsm-rs" else 2.5 * threat.eps / steps
    size = default_size if step_size is None else float(check_number(step_size, "step_size", low=0, low_open=True))
    mix = float(check_number(params["mix"] if mix is None else mix, "mix", low=0, high=1, high_open=True))
    if method == "trades" and mix > 0:
        raise ConfigError(f"method 'trades' already has a clean term: expected mix=0, got {mix}")
    beta = float(check_number(trades_beta, "trades_beta", low=0))
    surrogates = tuple(surrogates)
    if method == "ensemble" and not surrogates:
        raise ConfigError("method 'ensemble' needs surrogates: expected at least one pre-trained model, got none")
    if method != "ensemble" and surrogates:
        raise ConfigError(f"surrogates are used by method 'ensemble' only, got {len(surrogates)} with {method!r}")
    if not all(isinstance(s, nn.Module) for s in surrogates):
        raise InputError(f"expected surrogates to be nn.Modules, got {[type(s).__name__ for s in surrogates]}")
    check_steps = check_number(check_steps, "check_steps", integer=True, low=1)
    check_size = check_number(check_size, "check_size", integer=True, low=1)
    drop = float(check_number(overfit_drop, "overfit_drop", low=0, high=1))
    warmup = check_number(0 if eps_warmup is None else eps_warmup, "eps_warmup", integer=True, low=0)
    x_train, y_train = check_data(x_train, y_train, "training")
    dev = check_device(device)
    for s in surrogates:
        with frozen(s.to(dev)), torch.no_grad():
            out = s(x_train[:2].to(dev, model_dtype(s)))
        if out.dim() != 2 or out.shape[1] <= int(y_train.max()):
            raise InputError(f"expected surrogate logits (B, K > {int(y_train.max())}), got {tuple(out.shape)}")
    check = None
    if overfit_check and x_val is not None and y_val is not None:
        x_chk, y_chk = (t[:check_size] for t in check_data(x_val, y_val, "validation"))
        check = (x_chk.to(dev, model_dtype(model)), y_chk.to(dev))
    elif overfit_check:
        check = (x_train[-check_size:].to(dev, model_dtype(model)), y_train[-check_size:].to(dev))
    recipe = Recipe(method, model, surrogates, threat, steps, size, mix, beta, seed, check, check_steps, drop, warmup)
    settings = TrainSettings(schedule=params["schedule"]) if settings is None else settings
    history = train(model, x_train, y_train, settings, objective=recipe, seed=seed, device=device, x_val=x_val,
                    y_val=y_val, checkpoint=checkpoint, resume=resume, progress=progress)
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
                   f"        ...     threat=ThreatModel(Norm.LINF, 0.1), settings=TrainSettings(epochs=5){extra})\n")

    def trained(model: nn.Module, context: Context, params: dict[str, Any]) -> Trained:
        ds = context.dataset
        x_train, y_train = context.training_data(meta["defense"])
        if context.threat is None:
            raise ConfigError(f"defense {meta['defense']!r} needs eps, the training budget")
        out, history = run(model, x_train, y_train, threat=context.threat, settings=context.settings,
                           seed=context.seed, device=context.device, x_val=ds.x_test, y_val=ds.y_test,
                           checkpoint=context.checkpoint, resume=context.resume, progress=context.progress,
                           **params)
        return Trained(out, history)

    spec_params = [Param("mix", "float", meta["params"]["mix"], "clean fraction of each batch"),
                   Param("eps_warmup", "int", None, "epochs over which the crafting eps grows to its value")]
    if "steps" in meta["params"]:
        spec_params.append(Param("steps", "int", meta["params"]["steps"], "attack steps per batch"))
    if method != "fgsm" and method != "ensemble":
        spec_params.append(Param("step_size", "float", None, "absolute attack step (default: the method's)"))
    if "trades_beta" in meta["params"]:
        spec_params.append(Param("trades_beta", "float", meta["params"]["trades_beta"], "weight of the KL term"))
    if method == "ensemble":
        spec_params.append(Param("surrogates", "models", None, "pretrained aliases or saved models joined by '+' "
                                 "(e.g. ensemble-at:surrogates=lenet5-advertorch-clean+models/mnist-b; a bare "
                                 "architecture is trained plainly first)", required=True))
    register(DefenseSpec(meta["defense"], kind="training", differentiable=True, random=False, paper=meta["paper"],
                         description=doc, target=run, params=tuple(spec_params), needs_eps=True, data_parallel=True,
                         train=trained, meta={"method": method, "schedule": meta["params"]["schedule"]}))
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
