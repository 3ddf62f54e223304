"""How each library runs each shared attack with the same settings (used by peers.py).

An adapter gets (setting, x, y, num_classes) and returns run(model) -> x_adv; it imports its
library lazily so that a missing peer only skips its rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from sparring.attacks import ATTACKS
from sparring.threat import Norm, ThreatModel

SETTINGS: dict[str, dict[str, Any]] = {
    "fgsm": {"norm": "linf", "eps": 8 / 255, "small": False},
    "pgd": {"norm": "linf", "eps": 8 / 255, "steps": 10, "step_size": 2 / 255, "small": False},
    "pgd-l2": {"norm": "l2", "eps": 0.5, "steps": 10, "step_size": 0.125, "small": False},
    "cw-l2": {"norm": "l2", "steps": 100, "search_steps": 5, "step_size": 0.01, "small": True},
    "deepfool": {"norm": "l2", "steps": 50, "overshoot": 0.02, "candidates": 10, "small": True},
}
# The keys are the shared settings, in the peers' terms: step_size is CW's Adam learning rate (sparring's
# lr), candidates DeepFool's classes including the label (sparring's target_classes = candidates - 1).

Run = Callable[[torch.nn.Module], torch.Tensor]


def _sparring(name: str) -> Callable[..., Run]:
    def adapter(s: dict[str, Any], x: torch.Tensor, y: torch.Tensor, k: int) -> Run:
        g = torch.Generator().manual_seed(0)
        if name in ("fgsm",):
            return lambda m: ATTACKS.get("fgsm")(m, x, y, threat=ThreatModel(Norm.LINF, s["eps"]))
        if name in ("pgd", "pgd-l2"):
            threat = ThreatModel(Norm(s["norm"]), s["eps"])
            return lambda m: ATTACKS.get("pgd")(m, x, y, threat=threat, steps=s["steps"], step_size=s["step_size"],
                                                generator=g)
        if name not in ATTACKS:
            raise ImportError(name=f"sparring attack {name}")
        if name == "cw-l2":
            return lambda m: ATTACKS.get("cw-l2")(m, x, y, steps=s["steps"], search_steps=s["search_steps"],
                                                  lr=s["step_size"])
        return lambda m: ATTACKS.get("deepfool")(m, x, y, threat=ThreatModel(Norm.L2, float("inf")), steps=s["steps"],
                                                 overshoot=s["overshoot"], target_classes=s["candidates"] - 1)
    return adapter


def _torchattacks(name: str) -> Callable[..., Run]:
    def adapter(s: dict[str, Any], x: torch.Tensor, y: torch.Tensor, k: int) -> Run:
        import torchattacks as ta

        def run(m: torch.nn.Module) -> torch.Tensor:
            torch.manual_seed(0)
            atk = {
                "fgsm": lambda: ta.FGSM(m, eps=s.get("eps", 0)),
                "pgd": lambda: ta.PGD(m, eps=s.get("eps", 0), alpha=s.get("step_size", 0), steps=s.get("steps", 1),
                                      random_start=True),
                "pgd-l2": lambda: ta.PGDL2(m, eps=s.get("eps", 0), alpha=s.get("step_size", 0),
                                           steps=s.get("steps", 1), random_start=True),
                "cw-l2": lambda: ta.CW(m, c=1, kappa=0, steps=s.get("steps", 1) * s.get("search_steps", 1),
                                       lr=s.get("step_size", 0)),
                "deepfool": lambda: ta.DeepFool(m, steps=s.get("steps", 1), overshoot=s.get("overshoot", 0)),
            }[name]()
            return atk(x, y)
        return run
    return adapter


def _foolbox(name: str) -> Callable[..., Run]:
    def adapter(s: dict[str, Any], x: torch.Tensor, y: torch.Tensor, k: int) -> Run:
        import foolbox as fb

        attack = {
            "fgsm": lambda: fb.attacks.FGSM(),
            "pgd": lambda: fb.attacks.LinfPGD(abs_stepsize=s["step_size"], steps=s["steps"], random_start=True),
            "pgd-l2": lambda: fb.attacks.L2PGD(abs_stepsize=s["step_size"], steps=s["steps"], random_start=True),
            "cw-l2": lambda: fb.attacks.L2CarliniWagnerAttack(binary_search_steps=s["search_steps"], steps=s["steps"],
                                                              stepsize=s["step_size"]),
            "deepfool": lambda: fb.attacks.L2DeepFoolAttack(steps=s["steps"], candidates=s["candidates"],
                                                            overshoot=s["overshoot"]),
        }[name]()
        eps = s.get("eps")

        def run(m: torch.nn.Module) -> torch.Tensor:
            torch.manual_seed(0)
            fmodel = fb.PyTorchModel(m, bounds=(0, 1))
            _, clipped, _ = attack(fmodel, x, y, epsilons=eps)
            return clipped
        return run
    return adapter


def _art(name: str) -> Callable[..., Run]:
    def adapter(s: dict[str, Any], x: torch.Tensor, y: torch.Tensor, k: int) -> Run:
        from art.attacks import evasion
        from art.estimators.classification import PyTorchClassifier

        def run(m: torch.nn.Module) -> torch.Tensor:
            np.random.seed(0)
            clf = PyTorchClassifier(m, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=k,
                                    clip_values=(0.0, 1.0), device_type="cpu")
            norm = np.inf if s["norm"] == "linf" else 2
            b = len(x)
            attack = {
                "fgsm": lambda: evasion.FastGradientMethod(clf, norm=norm, eps=s["eps"], batch_size=b),
                "pgd": lambda: evasion.ProjectedGradientDescent(clf, norm=norm, eps=s["eps"], eps_step=s["step_size"],
                                                                max_iter=s["steps"], num_random_init=1, batch_size=b,
                                                                verbose=False),
                "pgd-l2": lambda: evasion.ProjectedGradientDescent(clf, norm=norm, eps=s["eps"],
                                                                   eps_step=s["step_size"], max_iter=s["steps"],
                                                                   num_random_init=1, batch_size=b, verbose=False),
                "cw-l2": lambda: evasion.CarliniL2Method(clf, max_iter=s["steps"],
                                                         binary_search_steps=s["search_steps"],
                                                         learning_rate=s["step_size"], batch_size=b, verbose=False),
                "deepfool": lambda: evasion.DeepFool(clf, max_iter=s["steps"], epsilon=s["overshoot"],
                                                     nb_grads=s["candidates"], batch_size=b, verbose=False),
            }[name]()
            return torch.from_numpy(attack.generate(x.numpy(), y=y.numpy()))
        return run
    return adapter


ADAPTERS: dict[str, dict[str, Callable[..., Run]]] = {
    lib: {name: make(name) for name in SETTINGS}
    for lib, make in [("sparring", _sparring), ("torchattacks", _torchattacks), ("foolbox", _foolbox), ("art", _art)]
}

# sparring's CW-L2 with each new constant starting from the last point (warm_start=True) and half the
# steps: a different setting, so it gets its own row; compare it on time *and* median L2.
ADAPTERS["sparring-warm50"] = {"cw-l2": lambda s, x, y, k: (lambda m: ATTACKS.get("cw-l2")(
    m, x, y, steps=s["steps"] // 2, search_steps=s["search_steps"], lr=s["step_size"], warm_start=True))}
